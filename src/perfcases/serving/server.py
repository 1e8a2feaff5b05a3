"""Serve a variant under waitress (a production WSGI server), in its own process.

``python -m perfcases.serving.server --variant optimized --scale ci --port 0`` builds what the
variant preloads, binds 127.0.0.1 (port 0: the OS picks a free one), prints
``serving at http://127.0.0.1:PORT`` on stdout and serves until SIGTERM or SIGINT.

``serve_subprocess(...)`` is that, as a context manager for tests: it starts the process,
waits until ``/health`` answers, yields the base URL and always stops the process.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

import requests

__all__ = ["BACKLOG", "CHANNEL_TIMEOUT_S", "CLEANUP_INTERVAL_S", "CONNECTION_LIMIT", "THREADS", "TORCH_THREADS",
           "main", "serve_subprocess"]

THREADS = 8  # waitress worker threads: one per concurrent client of the suite, so requests can batch
# Open connections. waitress stops accepting at connection_limit (default 100): with that many held
# open by clients that send nothing or half a request, every other client waits unanswered in the
# listen queue. Idle connections cost no worker thread (only a complete request reaches one), so
# the limit can be far above THREADS: 500 leaves room for 200 idle connections and 300 clients.
# A connection uses up to 3 file descriptors (socket, spooled request and response bodies), so
# main() raises the soft open-files limit to fit, and waits with poll(), as select() cannot watch a
# descriptor numbered 1024 or above.
CONNECTION_LIMIT = 500
# A connection with no traffic and no request in progress is closed after 30 s (default 120 s), so
# clients that go away or stall mid-request give their slot back. A request being handled is never
# idle, however long it runs (naive at full scale takes ~30 s); the suite's keep-alive clients send
# their next request at once.
CHANNEL_TIMEOUT_S = 30
CLEANUP_INTERVAL_S = 5  # how often idle connections are looked for: one lives 30-35 s
# Connections beyond CONNECTION_LIMIT wait in the kernel's queue (capped by net.core.somaxconn)
# instead of being refused; they are accepted as held ones close. waitress's default, made explicit.
BACKLOG = 1024
# One intra-op thread per forward pass: requests run in parallel instead. Measured here while
# neighbours kept this 2-core machine busy: with torch's default (one thread per core) a batch-1
# forward pass of the CI model took 600-1100 ms instead of 20-30 ms; at batch 8 with int8 one
# thread was faster too (CI model 2.9 against 5.3 ms per image, vit_l_32 322 against 606 ms).
TORCH_THREADS = 1
_READY_PREFIX = "serving at "


def main(argv: list[str] | None = None) -> None:
    import torch
    import waitress  # type: ignore[import-untyped]

    from perfcases.serving import SPECS, VARIANTS
    from perfcases.serving.app import create_app

    parser = argparse.ArgumentParser(prog="python -m perfcases.serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="optimized")
    parser.add_argument("--scale", choices=sorted(SPECS), default="ci")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port chosen by the OS")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device of the model: cpu or cuda")
    parser.add_argument("--torch-threads", type=int, default=TORCH_THREADS, help="intra-op threads per forward pass")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.torch_threads)

    spec = SPECS[args.scale]
    predictor = VARIANTS[args.variant](spec, args.seed, args.device)
    app = create_app(predictor, image_size=spec.image_size, variant=args.variant)
    _raise_open_files_limit(3 * CONNECTION_LIMIT + 256)
    server = waitress.create_server(
        app, host=args.host, port=args.port, threads=args.threads, connection_limit=CONNECTION_LIMIT,
        channel_timeout=CHANNEL_TIMEOUT_S, cleanup_interval=CLEANUP_INTERVAL_S, backlog=BACKLOG,
        asyncore_use_poll=True,
    )
    # waitress warns "Task queue depth is N" whenever a request waits for a free thread: under a
    # load test that is expected and the latency figures already show it.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _exit)
    print(f"{_READY_PREFIX}http://{args.host}:{server.effective_port}", flush=True)
    try:
        server.run()  # returns after SystemExit/KeyboardInterrupt, having stopped its threads
    finally:
        predictor.close()


def _raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed``, as far as the hard limit allows."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        needed = min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextmanager
def serve_subprocess(variant: str, scale: str, *, seed: int = 0, threads: int = THREADS, device: str = "cpu",
                     start_timeout_s: float = 300.0) -> Iterator[str]:
    """Run the server in a child process; yield its base URL once ``/health`` answers.

    The child imports the same ``perfcases`` as this process (its source directory goes first on
    ``PYTHONPATH``), so an A/B run of two checkouts serves each checkout's own code. The child's
    stderr goes to a temporary file, quoted in the error if it dies before it is ready.
    """
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "perfcases.serving.server", "--variant", variant, "--scale", scale,
           "--port", "0", "--seed", str(seed), "--threads", str(threads), "--device", device]
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            url = _wait_until_ready(proc, stderr, start_timeout_s)
            yield url
        finally:
            _stop(proc)


def _wait_until_ready(proc: subprocess.Popen[str], stderr: IO[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s

    def fail(why: str) -> RuntimeError:
        stderr.seek(0)
        tail = stderr.read()[-4000:]
        return RuntimeError(f"the serving process {why}; its stderr ends with:\n{tail}")

    url = ""
    while not url:
        left = deadline - time.monotonic()
        if left <= 0:
            raise fail(f"did not print its address within {timeout_s:.0f} s")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise fail(f"exited with status {proc.wait()} before it was ready")
            if line.startswith(_READY_PREFIX):
                url = line[len(_READY_PREFIX):].strip()
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).ok:
                return url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise fail(f"exited with status {proc.returncode} before it was ready")
        time.sleep(0.05)
    raise fail(f"did not answer {url}/health within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


if __name__ == "__main__":
    main()
