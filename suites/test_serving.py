"""Preloaded model serving.

Report: a Flask ``/predict`` endpoint built ``torchvision.models.vit_l_32()`` inside the request
handler: 10.71 s per request on average, 11.33 s at most. Loading the model once at start-up,
batching and serving requests concurrently brought it to 0.192 s on average, 0.40 s at most.

The claims, for the selected variant (``--perfcases-variant``, default ``optimized``):

- under 8 concurrent clients against a real waitress server on 127.0.0.1, p50 and p99 latency per
  request stay within budget, with no errors (``test_serves_8_concurrent_clients_...``), and p50
  and throughput beat a naive server's 10x and 15x at the same concurrency (``test_lower_p50_...``);
- the same 8 concurrent requests, handled in this process through Flask's test client, stay
  within a latency and a peak-memory budget per request (``test_8_concurrent_requests_in_process_...``).
  The load test's server runs in its own process (client and server do not share a GIL), which
  the memory meter and a Scalene profile of the test process cannot see into; this test is where
  a failing run's profile shows the culprit line (docs/serving.md explains the split);
- its answers match the float32 model's (``test_answers_match_...``);
- bad uploads get a JSON 4xx and the server keeps serving (``test_bad_uploads_...``);
- 200 connections held open without a complete request do not lock other clients out
  (``test_keeps_answering_while_200_idle_connections_...``).

``--perfcases-scale=full`` serves ``vit_l_32`` as reported; its budgets differ from CI's, so the
budgeted tests carry one budget per scale (``per_scale``) and run under the selected scale's.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests
import torch
from flask import Flask

from perfcases import serving
from perfcases.device import gpu_budget
from perfcases.serving.app import FIELD, MAX_UPLOAD_BYTES, create_app
from perfcases.serving.batching import MicroBatcher
from perfcases.serving.images import synthetic_pngs
from perfcases.serving.load import LoadResult, post_image, run_load
from perfcases.serving.models import SPECS, ModelSpec, build_model
from perfcases.serving.predictors import Predictor
from perfcases.serving.preprocess import decode_image
from perfcases.serving.server import TORCH_THREADS, serve_subprocess
from pytest_perfguard import Perf, perf_budget

F = TypeVar("F", bound=Callable[..., Any])

CLIENTS = 8  # concurrent clients, each sending its next request when the previous one is answered


@dataclass(frozen=True)
class LoadPlan:
    requests_per_client: int  # 8 x 40 = 320 samples: a p99 claim needs >= 299
    deadline_s: float  # no new requests after this: a slow variant ends early (its p50 already fails)


LOAD = {"ci": LoadPlan(40, 10.0), "full": LoadPlan(40, 240.0)}


@dataclass(frozen=True)
class SpeedupPlan:
    rounds: int  # naive and the variant, alternately: a neighbour's burst hits both sides
    naive_requests_per_client: int
    variant_requests_per_client: int
    deadline_s: float  # per run of the selected variant: a slow one stops early


SPEEDUP = {"ci": SpeedupPlan(3, 3, 20, 5.0), "full": SpeedupPlan(1, 1, 4, 120.0)}
QUICK = LoadPlan(2, 30.0)  # plain `pytest` (no --perf): a functional check, 16 requests
AGREEMENT_IMAGES = {"ci": 64, "full": 16}


def per_scale(**budgets: pytest.MarkDecorator) -> Callable[[F], F]:
    """One ``perf_budget`` per scale; ``pytest_generate_tests`` gives the test the selected one."""

    def attach(test: F) -> F:
        test.budget_per_scale = budgets  # type: ignore[attr-defined]
        return test

    return attach


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``scale`` (overriding the suites' fixture, same value) to carry the scale's budget.

    The node id gets the scale (``...[ci]``), so baselines keep the two scales apart.
    """
    budgets = getattr(metafunc.function, "budget_per_scale", None)
    if budgets is not None:
        scale = str(metafunc.config.getoption("perfcases_scale"))
        metafunc.parametrize("scale", [pytest.param(scale, marks=budgets[scale], id=scale)], scope="session")


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def spec(scale: str) -> ModelSpec:
    return SPECS[scale]


@pytest.fixture(scope="session")
def uploads() -> list[bytes]:
    """64 synthetic 224 x 224 PNGs (5-15 kB each), the same on every run."""
    return synthetic_pngs(64, size=224, seed=0)


def _require_variant(name: str) -> None:
    if name not in serving.VARIANTS:
        pytest.skip(f"perfcases.serving has no variant {name!r}; it has: {', '.join(sorted(serving.VARIANTS))}")


@pytest.fixture(scope="module")
def server_url(variant_name: str, scale: str, uploads: list[bytes], device: str,
               progress: Callable[[int, str], Any]) -> Iterator[str]:
    """The selected variant under waitress in a child process; stopped however the tests end.

    One warm-up request per client first, so that one-off costs (first forward pass, thread
    start-up) are not counted as load-test latency.
    """
    _require_variant(variant_name)
    with progress(1, f"starting the {variant_name} server ({scale})") as advance, \
            serve_subprocess(variant_name, scale, device=device) as url:
        advance(1)
        run_load(f"{url}/predict", uploads, clients=CLIENTS, requests_per_client=1)
        yield url


@pytest.fixture(scope="module")
def app(variant_name: str, spec: ModelSpec, uploads: list[bytes], device: str) -> Iterator[Flask]:
    """The selected variant's Flask app in this process, configured and warmed up as the server is.

    Like the server process, it runs torch with ``TORCH_THREADS`` intra-op threads (restored after
    the module), and it has answered one request per client before any test measures it.
    """
    _require_variant(variant_name)
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    predictor: Predictor = serving.VARIANTS[variant_name](spec, 0, device)
    try:
        flask_app = create_app(predictor, image_size=spec.image_size, variant=variant_name)
        with ThreadPoolExecutor(CLIENTS - 1) as pool:
            _serve_together(flask_app, pool, uploads[:CLIENTS])
        yield flask_app
    finally:
        predictor.close()
        torch.set_num_threads(threads)


def _post(flask_app: Flask, png: bytes) -> dict[str, Any]:
    """POST ``png`` to ``/predict`` through Flask's test client (no HTTP server); the JSON answer."""
    body = flask_app.test_client().post("/predict", data={FIELD: (io.BytesIO(png), "image.png", "image/png")}).get_json()
    assert body["success"] is True, body
    return body


def _serve_together(flask_app: Flask, pool: ThreadPoolExecutor, pngs: Sequence[bytes]) -> list[dict[str, Any]]:
    """POST ``pngs`` at once: the first from this thread, the others from ``pool``'s threads.

    This thread being one of the clients, a profile shows where a request's time goes rather
    than this thread waiting for the others.
    """
    first, *others = pngs
    answers = pool.map(lambda png: _post(flask_app, png), others)
    return [_post(flask_app, first), *answers]


# -- the load test --------------------------------------------------------------------------------

def _record_load(perf: Perf, result: LoadResult) -> None:
    perf.record_latencies(result.latencies)
    s = result.summary()
    perf.record(errors=s["errors"], requests=s["requests"], throughput_rps=s["throughput_rps"],
                p50_ms=1e3 * s["p50_s"], p95_ms=1e3 * s["p95_s"], p99_ms=1e3 * s["p99_s"],
                max_ms=1e3 * s["max_s"])
    if s["errors"] < s["requests"]:  # where the server spent a request, from its own timings
        build = result.server_timing_ms("build")
        perf.record(server_build_ms=build, server_forward_ms=result.server_timing_ms("forward"),
                    server_queued_ms=result.server_timing_ms("queued"),
                    batch_size=result.server_timing_ms("batch_size"), build_share=build / (1e3 * s["mean_s"]))


# Report: naive avg 10.71 s / max 11.33 s; preloaded + batching + concurrency avg 0.192 s / max 0.40 s.
# Measured here (busy 2-core machine; docs/serving.md has the runs): ci optimized p50 68-108 ms,
# p99 128-163 ms; naive p50 1.5-2.7 s, p99 2.1-3.4 s. full optimized p50 2.0-2.4 s, p99 2.6-6.5 s;
# naive p50 28 s, p99 36 s. Budgets: ~2-3x above optimized, several times below naive.
# Per-request latencies of 8 clients on 2 cores follow the neighbours (a CI run beside other jobs
# read 1.44x the stored baseline's p50, same code): the gate judges them against the spread
# between saved runs, at the default 5 %, and prints what it could flag.
@per_scale(
    ci=perf_budget(latency={"p50": "250ms", "p99": "600ms"}, metrics={"errors": "==0"}),
    full=perf_budget(latency={"p50": "6s", "p99": "15s"}, metrics={"errors": "==0"}),
)
def test_serves_8_concurrent_clients_within_p50_p99_budget(perf, server_url, scale, uploads, progress):
    plan = LOAD[scale] if perf.enabled else QUICK
    with progress(CLIENTS * plan.requests_per_client, f"load test, {CLIENTS} clients") as advance:
        result = run_load(f"{server_url}/predict", uploads, clients=CLIENTS,
                          requests_per_client=plan.requests_per_client, deadline_s=plan.deadline_s,
                          on_progress=advance)
    _record_load(perf, result)
    failed = [o for o in result.outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(result.outcomes)} requests failed, first: {failed[0]}"


# The targets at 8 clients: >= 10x lower p50 and >= 20x the throughput of naive, judged on
# whatever machine runs it, best run against best run (a neighbour slows a run down, never speeds
# it up). Measured here at ci on a quiet machine (5 runs, 2026-11-24): optimized 20.5-23.9x lower
# p50 and 20.5-24.3x the throughput; on a busy one (load 3-8) 12-22x. 20x is met when quiet, but
# by 2.5 % at the worst of 5 runs, too thin for a gate that must not flap, so ci asks for 15x
# throughput (the target less 25 % for a shared runner) and the 10x p50. At full, separate
# load runs on the busy machine gave 11-14x and 8.5-13x (docs/serving.md): 10x both, not run in CI.
@per_scale(
    ci=perf_budget(metrics={"p50_vs_naive": ">=10", "throughput_vs_naive": ">=15", "errors": "==0"}),
    full=perf_budget(metrics={"p50_vs_naive": ">=10", "throughput_vs_naive": ">=10", "errors": "==0"}),
)
def test_lower_p50_and_higher_throughput_than_naive_at_8_clients(perf, variant_name, server_url, scale, uploads,
                                                                 device):
    if not perf.enabled:
        pytest.skip("a timing claim: measured under --perf")
    if variant_name == "naive":
        pytest.skip("compares the selected variant with naive: naive against itself says nothing")
    plan = SPEEDUP[scale]
    naive_runs, variant_runs = [], []
    with serve_subprocess("naive", scale, device=device) as naive_url:
        run_load(f"{naive_url}/predict", uploads, clients=CLIENTS, requests_per_client=1)  # warm-up
        for _ in range(plan.rounds):
            naive_runs.append(run_load(f"{naive_url}/predict", uploads, clients=CLIENTS,
                                       requests_per_client=plan.naive_requests_per_client).summary())
            variant_runs.append(run_load(f"{server_url}/predict", uploads, clients=CLIENTS, deadline_s=plan.deadline_s,
                                         requests_per_client=plan.variant_requests_per_client).summary())
    perf.record(p50_vs_naive=min(r["p50_s"] for r in naive_runs) / min(r["p50_s"] for r in variant_runs),
                throughput_vs_naive=max(r["throughput_rps"] for r in variant_runs)
                / max(r["throughput_rps"] for r in naive_runs),
                errors=sum(r["errors"] for r in naive_runs + variant_runs))


# -- the same load, in process ------------------------------------------------------------------

# Measured here (busy machine): ci optimized 8.8-14.0 ms per request and 7-8 MiB, naive 247-292 ms
# and 564-738 MiB (several models alive at once); full optimized 227-258 ms and 98-115 MiB.
# On CUDA (not measured: no GPU here) the model's weights (float16: 42 MB at ci, 612 MB at full)
# and one batch's activations must also fit the GPU budget.
@per_scale(
    ci=perf_budget(latency="30ms", memory="128MiB", **gpu_budget("256MiB")),
    full=perf_budget(latency="750ms", memory="512MiB", **gpu_budget("2GiB")),
)
def test_8_concurrent_requests_in_process_build_no_model(perf, app, scale, uploads):
    """8 requests at once through Flask's test client, in this process: what the server does, minus
    HTTP. Latency is per request; memory is this process's peak RSS growth while serving them."""
    with ThreadPoolExecutor(CLIENTS - 1) as pool:
        bodies = perf(_serve_together, app, pool, uploads[:CLIENTS], items=CLIENTS)
    assert all(0 <= b["class_index"] < 1000 for b in bodies)


# -- answers ---------------------------------------------------------------------------------------

# Random weights have no accuracy to measure; what is checked is that a variant answers as the
# float32 model does. int8 moves probabilities by 3.0e-4 at most over 256 images (measured here;
# vit_l_32: 3.1e-4 and 4.4e-4 over 16, two runs), and this untrained model's top-1 margins are of
# that size too (median 3.2e-4), so int8 flips a few near-ties: 93 % top-1 agreement over 256
# images. Dynamic quantization picks activation scales per batch, so the answers also move a
# little with the batching. The bound, 2e-3, leaves room for both scales and for the batching.
@perf_budget(metrics={"top1_agreement": ">=0.8", "max_probability_error": "<=2e-3"})
def test_answers_match_the_float32_model(perf, app, spec, scale, uploads):
    images = uploads[:AGREEMENT_IMAGES[scale]]
    reference = build_model(spec, seed=0)
    with torch.inference_mode():
        expected = [reference(decode_image(png, spec.image_size).unsqueeze(0)).softmax(-1)[0] for png in images]

    with ThreadPoolExecutor(CLIENTS) as pool:  # concurrent requests, so that a batching variant batches
        answers = list(pool.map(lambda png: _post(app, png), images))
    agree = [a["class_index"] == int(e.argmax()) for a, e in zip(answers, expected)]
    error = max(abs(a["probability"] - float(e[a["class_index"]])) for a, e in zip(answers, expected))
    perf.record(top1_agreement=sum(agree) / len(agree), max_probability_error=error)


def test_model_build_is_deterministic_under_its_seed(spec):
    first, second = build_model(spec, seed=0).state_dict(), build_model(spec, seed=0).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(build_model(spec, seed=1).state_dict()["heads.head.weight"], first["heads.head.weight"])


# -- bad input ----------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but carries almost no data (a "bomb")."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_uploads_get_a_json_4xx_and_the_server_keeps_serving(server_url, uploads):
    url = f"{server_url}/predict"
    bad: dict[str, tuple[int, Callable[[], requests.Response]]] = {
        "no file": (400, lambda: requests.post(url, files={"other": ("a.png", uploads[0], "image/png")}, timeout=60)),
        "not an image": (400, lambda: requests.post(url, files={FIELD: ("a.png", b"hello, not a PNG", "image/png")},
                                                   timeout=60)),
        "too many pixels": (400, lambda: requests.post(url, files={FIELD: ("a.png", _png_header(20_000, 20_000),
                                                                           "image/png")}, timeout=60)),
        "too large": (413, lambda: requests.post(url, files={FIELD: ("a.png", b"\0" * (MAX_UPLOAD_BYTES + 1),
                                                                     "image/png")}, timeout=60)),
        "not multipart": (415, lambda: requests.post(url, json={"image": "aGVsbG8="}, timeout=60)),
        "wrong method": (405, lambda: requests.get(url, timeout=60)),
    }
    for case, (status, send) in bad.items():
        response = send()
        assert response.status_code == status, f"{case}: {response.status_code} {response.text[:200]}"
        body = response.json()
        assert body["success"] is False and body["status"] == status and body["error"], f"{case}: {body}"
    with requests.Session() as session:
        good = post_image(session, url, uploads[1])
    assert good.ok, f"a good request after the bad ones failed: {good}"


# -- idle connections ---------------------------------------------------------------------------

IDLE_CONNECTIONS = 200  # held open at once, more than waitress's default connection_limit (100)


def test_keeps_answering_while_200_idle_connections_are_held_open(scale):
    """Connections that send nothing, or half a request, must not lock other clients out.

    With waitress's default limit of 100 open connections, the 101st and every later client sat
    unanswered in the listen queue until idle ones were closed. Half the held connections send
    nothing, half send a request's first header lines and stop (a slow client).
    """
    # naive: a server that builds nothing at start-up, so this costs one process start
    with serve_subprocess("naive", scale) as url:
        address = urlsplit(url)
        held: list[socket.socket] = []
        try:
            for k in range(IDLE_CONNECTIONS):
                sock = socket.create_connection((address.hostname, address.port), timeout=10)
                if k % 2:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
                held.append(sock)
            for k in range(5):  # real clients, each on a new connection
                try:
                    response = requests.get(f"{url}/health", timeout=5)
                except requests.RequestException as exc:
                    pytest.fail(f"request {k} with {IDLE_CONNECTIONS} idle connections open got no answer "
                                f"within 5 s: {type(exc).__name__}: {exc}")
                assert response.status_code == 200 and response.json()["success"] is True
            # the last held connection was accepted too: finishing its request gets the answer
            held[-1].sendall(b"\r\n")
            assert held[-1].recv(4096).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in held:
                sock.close()


def test_server_process_is_stopped_even_when_the_test_body_fails(scale):
    # naive: a server that builds nothing at start-up, so this costs one process start
    with pytest.raises(RuntimeError, match="the test body failed"), serve_subprocess("naive", scale) as url:
        assert requests.get(f"{url}/health", timeout=60).json() == {"success": True, "variant": "naive"}
        raise RuntimeError("the test body failed")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)


# -- the micro-batching queue ----------------------------------------------------------------------

def _submit_together(batcher: MicroBatcher[int, int], items: Sequence[int]) -> list[Any]:
    """Submit ``items`` from one thread each, released at once; results (or exceptions) in order."""
    start = threading.Barrier(len(items))
    results: list[Any] = [None] * len(items)

    def submit(k: int) -> None:
        start.wait()
        try:
            results[k] = batcher.submit(items[k])
        except Exception as exc:  # noqa: BLE001  (the test inspects what each caller got)
            results[k] = exc

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_micro_batcher_groups_concurrent_items_and_answers_each_caller():
    sizes: list[int] = []

    def square_all(xs: Sequence[int]) -> list[int]:
        sizes.append(len(xs))
        return [x * x for x in xs]

    batcher = MicroBatcher(square_all, max_batch=4, max_wait_s=2.0)
    try:
        done = _submit_together(batcher, list(range(8)))
    finally:
        batcher.close()
    assert [d.value for d in done] == [x * x for x in range(8)]
    assert max(sizes) == 4 and sum(sizes) == 8 and len(sizes) < 8  # grouped, never above max_batch
    assert all(d.batch_size in sizes for d in done)


def test_micro_batcher_bounds_the_wait_of_a_lone_item():
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: list(xs), max_batch=8, max_wait_s=0.05)
    try:
        start = time.perf_counter()
        done = batcher.submit(7)
        elapsed = time.perf_counter() - start
    finally:
        batcher.close()
    assert done.value == 7 and done.batch_size == 1
    assert 0.04 <= done.waited_s <= elapsed < 5.0  # waited for company, then ran alone


def test_micro_batcher_hands_a_batch_error_to_its_callers_and_keeps_serving():
    def fail_on_negative(xs: Sequence[int]) -> list[int]:
        if any(x < 0 for x in xs):
            raise ValueError("negative input")
        return list(xs)

    batcher = MicroBatcher(fail_on_negative, max_batch=2, max_wait_s=0.5)
    try:
        failed = _submit_together(batcher, [1, -1])
        after = batcher.submit(3)
    finally:
        batcher.close()
    assert all(isinstance(r, ValueError) for r in failed)
    assert after.value == 3
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(4)
