"""The Flask app: ``POST /predict`` takes an image upload and answers JSON.

Success: ``{"success": true, "class_index": 417, "probability": 0.0031, "timings_ms": {...}}``,
where ``timings_ms`` says where the server spent the request (model construction, queueing
for a batch, forward pass) so a load test can show which cost dominates.
Every error is JSON too, ``{"success": false, "error": "...", "status": 4xx}``: no file (400),
a file that is not an image or has too many pixels (400), an upload over the size limit (413),
a body that is not ``multipart/form-data`` (415), a wrong method (405).
"""

from __future__ import annotations

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from perfcases.serving.predictors import Predictor
from perfcases.serving.preprocess import MAX_PIXELS, InvalidImage, decode_image

__all__ = ["FIELD", "MAX_UPLOAD_BYTES", "create_app"]

MAX_UPLOAD_BYTES = 4 * 2**20  # larger bodies get 413 before they are parsed
FIELD = "image"  # the multipart form field that carries the file


def create_app(predictor: Predictor, *, image_size: int, variant: str = "",
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Flask:
    """A Flask app serving ``predictor`` on images resized to ``image_size`` pixels square."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes

    @app.post("/predict")
    def predict() -> Response:
        if request.mimetype != "multipart/form-data":
            abort(415, f"expected multipart/form-data with the image in field {FIELD!r}, "
                       f"got {request.mimetype or 'no content type'}")
        upload = request.files.get(FIELD)
        if upload is None:
            abort(400, f"no file in form field {FIELD!r}")
        try:
            image = decode_image(upload.read(), image_size, max_pixels)
        except InvalidImage as exc:
            abort(400, str(exc))
        result = predictor.predict(image)
        return jsonify(
            success=True, class_index=result.class_index, probability=result.probability,
            timings_ms={"build": 1e3 * result.build_s, "queued": 1e3 * result.queued_s,
                        "forward": 1e3 * result.forward_s, "batch_size": result.batch_size},
        )

    @app.get("/health")
    def health() -> Response:
        return jsonify(success=True, variant=variant)

    @app.errorhandler(HTTPException)
    def json_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify(success=False, error=exc.description, status=status), status

    return app
