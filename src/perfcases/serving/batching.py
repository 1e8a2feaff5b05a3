"""A micro-batching queue: concurrent callers' items run through one batched call.

Each request handler thread calls ``submit(item)`` and blocks. One worker thread takes the
oldest waiting item, then keeps collecting until the batch holds ``max_batch`` items or
``max_wait_s`` has passed since it took the first one (the bounded wait), runs the batch
function once and hands every caller its own result. Under load a batch fills without
waiting; a lone request waits at most ``max_wait_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Batched", "MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One caller's result, with how long it queued and how many items shared its batch."""

    value: R
    waited_s: float
    batch_size: int


@dataclass
class _Pending(Generic[T, R]):
    item: T
    submitted: float
    future: Future[Batched[R]]


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """``run_batch(items) -> results`` (one result per item, same order) on batches of concurrent submissions."""

    def __init__(self, run_batch: Callable[[Sequence[T]], Sequence[R]], *, max_batch: int = 8,
                 max_wait_s: float = 0.005, name: str = "micro-batcher") -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending[T, R] | object] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()  # no item can be queued behind the stop signal
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: T) -> Batched[R]:
        """Queue ``item``, wait for its batch to run; raises what ``run_batch`` raised."""
        pending: _Pending[T, R] = _Pending(item, time.perf_counter(), Future())
        with self._lock:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            self._queue.put(pending)
        return pending.future.result()

    def close(self) -> None:
        """Finish the batches already queued, then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)  # type: ignore[arg-type]
            self._run(batch)
            if stop:
                return

    def _collect(self, first: _Pending[T, R]) -> tuple[list[_Pending[T, R]], bool]:
        """Items for one batch: ``first``, then more until the batch is full or the wait is over."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)  # type: ignore[arg-type]
        return batch, False

    def _run(self, batch: list[_Pending[T, R]]) -> None:
        started = time.perf_counter()
        try:
            results = self._run_batch([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001  (every caller of the batch gets the error; the worker lives on)
            for p in batch:
                p.future.set_exception(exc)
            return
        for p, value in zip(batch, results):
            p.future.set_result(Batched(value, started - p.submitted, len(batch)))
