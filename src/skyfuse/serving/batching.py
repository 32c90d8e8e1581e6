"""Bounded, deadline-aware dynamic batching of model calls.

Why: on a CPU one forward pass over 8 images costs about half of 8 single passes, and a server under
load has requests waiting anyway; merging what is queued into one call raises throughput without
adding latency when the server is idle (a lone request runs at once, nothing waits for company).
The bounds hold: at most `max_concurrency` calls run (threads), at most `max_queue` requests wait
(more get 503), a request past its deadline gets 504, and a call that outlives its callers keeps its
slot until it really ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from skyfuse.serving.limits import GateError

#: Processes a batch of payloads; returns one result or exception per payload, in order.
BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass
class _Job:
    payload: Any
    future: asyncio.Future[Any]
    deadline: float


class BatchingGate:
    """Queue -> `max_concurrency` worker tasks -> `fn` on up to `max_batch` payloads in a thread."""

    def __init__(
        self, fn: BatchFn, *, max_concurrency: int, max_batch: int, max_queue: int
    ) -> None:
        self.fn = fn
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_batch = max(1, int(max_batch))
        self.max_queue = max(0, int(max_queue))
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.max_concurrency, thread_name_prefix="skyfuse-model"
        )
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.running = 0
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker tasks on the running loop (idempotent)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [
                asyncio.create_task(self._worker()) for _ in range(self.max_concurrency)
            ]

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        self._queue = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, payload: Any, timeout_s: float) -> Any:
        """The result for `payload`; GateError 503 when the queue is full, 504 past the deadline."""
        self.start()
        assert self._queue is not None
        if self.waiting >= self.max_queue and self.running >= self.max_concurrency:
            raise GateError(503, f"server busy ({self.waiting} requests waiting); retry later")
        loop = asyncio.get_running_loop()
        job = _Job(payload, loop.create_future(), loop.time() + timeout_s)
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=timeout_s)
        except TimeoutError:
            if not job.future.done():
                job.future.cancel()  # a worker that has not started it yet skips it
            raise GateError(
                504,
                f"no answer from the model within {timeout_s:g} s; retry later or send a smaller image",
            ) from None

    async def _worker(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            now = loop.time()
            live = [j for j in batch if not j.future.done() and j.deadline > now]
            if not live:
                continue
            self.running += 1
            try:
                results: Sequence[Any] = await loop.run_in_executor(
                    self._pool, self.fn, [j.payload for j in live]
                )
                if len(results) != len(live):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(live)}"
                    )
            except Exception as exc:  # the whole call failed: every caller gets the error
                results = [exc] * len(live)
            finally:
                self.running -= 1
            self.batches += 1
            self.items += len(live)
            for job, result in zip(live, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
