"""Dynamic batching: requests that arrive within ``max_wait_ms`` of the first waiting one
(or until ``max_batch`` are waiting) are handed to one ``process(jobs)`` call in a worker
thread, and each caller gets its own result back.

``process`` returns one entry per job, in order: the result, or an exception instance that
is raised to that job's caller alone. While a batch is processed the next one gathers.

A lone client pays no window: when the previous batch held one request and nothing else is
waiting, the request goes at once (with concurrent clients, batches hold several and the
window applies again).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Callable, Sequence


class Overloaded(Exception):
    """More requests waiting than the configured queue allows."""


class Batcher:
    def __init__(self, process: Callable[[Sequence], list], executor: Executor, *, max_batch: int,
                 max_wait_ms: float, max_queue: int, on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must be >= 0, got {max_wait_ms}")
        self.process, self.executor = process, executor
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1e3, max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._last_batch_size = 1

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="colbert-engine-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def waiting(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, job):
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} requests waiting (limit {self.max_queue}); retry later")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((time.monotonic(), job, future))
        return await future

    async def _gather(self) -> list:
        arrived, job, future = await self._queue.get()
        batch = [(job, future)]
        if self._last_batch_size <= 1 and self._queue.empty():
            return batch
        # The window starts when the first request arrived, not when this batch started
        # gathering: requests that queued up during the previous batch go at once.
        deadline = arrived + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                _, job, future = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    _, job, future = await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            batch.append((job, future))
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(job, future) for job, future in batch if not future.done()]  # callers gone: skip
            if not live:
                continue
            self._last_batch_size = len(batch)
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                results = await loop.run_in_executor(self.executor, self.process, [job for job, _ in live])
            except Exception as exc:  # process() failed as a whole: every caller gets the error
                results = [exc] * len(live)
            for (_, future), result in zip(live, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
