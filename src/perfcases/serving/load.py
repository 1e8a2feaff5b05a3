"""A closed-loop load test: N concurrent clients, each uploading images one request at a time.

Each client thread has its own keep-alive HTTP session, waits at a common start line, then
sends its requests back to back (a new one as soon as the previous answer arrives), as a
pool of users would. Latency is measured per request, client side, from just before the
upload to the parsed answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from perfcases.serving.app import FIELD

__all__ = ["LoadResult", "Outcome", "post_image", "run_load"]


@dataclass(frozen=True)
class Outcome:
    """One request: its latency, HTTP status (None if no answer) and JSON body (or the error)."""

    latency_s: float
    status: int | None
    body: dict[str, Any] | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.body and self.body.get("success") is True)


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [o.latency_s for o in self.outcomes]

    @property
    def errors(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    def server_timing_ms(self, name: str) -> float:
        """Mean of one entry of the server's ``timings_ms`` over the successful requests."""
        values = [float(o.body["timings_ms"][name]) for o in self.outcomes if o.ok and o.body]
        return float(np.mean(values)) if values else float("nan")

    def summary(self) -> dict[str, float]:
        """Latency statistics (seconds), throughput (successful requests per second), error count."""
        lat = np.asarray(self.latencies)
        ok = len(self.outcomes) - self.errors
        return {
            "requests": float(len(self.outcomes)), "errors": float(self.errors),
            "p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95)),
            "p99_s": float(np.percentile(lat, 99)), "max_s": float(lat.max()), "mean_s": float(lat.mean()),
            "throughput_rps": ok / self.wall_s if self.wall_s > 0 else 0.0,
        }


def post_image(session: requests.Session, url: str, png: bytes, timeout_s: float = 600.0) -> Outcome:
    """Upload ``png`` as a multipart file to ``url`` and time the answer."""
    start = time.perf_counter()
    try:
        response = session.post(url, files={FIELD: ("image.png", png, "image/png")}, timeout=timeout_s)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        return Outcome(time.perf_counter() - start, None, None, f"{type(exc).__name__}: {exc}")
    return Outcome(time.perf_counter() - start, response.status_code, body)


def run_load(url: str, images: Sequence[bytes], *, clients: int = 8, requests_per_client: int = 40,
             deadline_s: float | None = None, on_progress: Callable[[int], None] | None = None) -> LoadResult:
    """``clients`` threads each post ``requests_per_client`` of ``images`` (round robin) to ``url``.

    ``deadline_s`` stops clients from starting new requests after that many seconds (requests in
    flight finish and count), so a slow variant cannot hold a run for long.
    """
    start_line = threading.Barrier(clients + 1)
    per_client: list[list[Outcome]] = [[] for _ in range(clients)]
    started = 0.0

    def client(k: int) -> None:
        with requests.Session() as session:
            start_line.wait()
            for i in range(requests_per_client):
                if deadline_s is not None and time.perf_counter() - started > deadline_s:
                    return
                per_client[k].append(post_image(session, url, images[(k * requests_per_client + i) % len(images)]))
                if on_progress is not None:
                    on_progress(1)

    threads = [threading.Thread(target=client, args=(k,), name=f"load-client-{k}") for k in range(clients)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    start_line.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return LoadResult([o for outcomes in per_client for o in outcomes], wall)
