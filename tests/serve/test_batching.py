"""The dynamic batcher alone (no model): windows, limits, per-job errors, overload."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from colbert_engine.server.batching import Batcher, Overloaded


def run_jobs(jobs, *, max_batch, max_wait_ms, max_queue=1000, process=None, stagger_s=0.0):
    seen = []

    def default_process(batch):
        seen.append(list(batch))
        time.sleep(0.005)
        return [ValueError(f"bad {j}") if isinstance(j, str) else j * 10 for j in batch]

    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(process or default_process, executor, max_batch=max_batch, max_wait_ms=max_wait_ms,
                          max_queue=max_queue)
        batcher.start()

        async def one(i, job):
            await asyncio.sleep(i * stagger_s)
            try:
                return await batcher.submit(job)
            except Exception as exc:  # noqa: BLE001 - the caller's own error, returned for checking
                return exc

        try:
            return await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
        finally:
            await batcher.stop()
            executor.shutdown()

    return asyncio.run(main()), seen


def test_concurrent_jobs_share_batches_up_to_max_batch_and_get_their_own_results():
    results, seen = run_jobs(list(range(20)), max_batch=8, max_wait_ms=50)
    assert results == [j * 10 for j in range(20)]
    assert max(len(b) for b in seen) == 8 and len(seen) < 20
    assert sorted(j for b in seen for j in b) == list(range(20))


def test_max_batch_one_answers_one_request_at_a_time():
    results, seen = run_jobs(list(range(6)), max_batch=1, max_wait_ms=50)
    assert results == [j * 10 for j in range(6)] and all(len(b) == 1 for b in seen)


def test_an_error_reaches_only_its_own_caller():
    results, seen = run_jobs([1, "x", 2], max_batch=8, max_wait_ms=50)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad x"
    assert len(seen) == 1  # all three were in one batch


def test_a_failing_process_fails_its_batch_not_the_batcher():
    calls = []

    def process(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [j for j in batch]

    results, _ = run_jobs([1, 2, 3], max_batch=1, max_wait_ms=0, process=process)
    assert isinstance(results[0], RuntimeError) and results[1:] == [2, 3]


def test_the_window_starts_at_the_first_request():
    # Requests 30 ms apart with a 10 ms window never share a batch.
    _, seen = run_jobs(list(range(4)), max_batch=8, max_wait_ms=10, stagger_s=0.03)
    assert len(seen) == 4


def test_a_full_queue_is_refused():
    release = threading.Event()

    def process(batch):
        release.wait(5)
        return list(batch)

    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(process, executor, max_batch=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))  # taken by the worker, blocks it
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit(3)
        release.set()
        out = await asyncio.gather(first, *waiting)
        await batcher.stop()
        executor.shutdown()
        return out

    assert asyncio.run(main()) == [0, 1, 2]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda b: b, None, max_batch=0, max_wait_ms=1, max_queue=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(lambda b: b, None, max_batch=1, max_wait_ms=-1, max_queue=1)


def test_a_lone_client_does_not_wait_for_the_window():
    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(lambda batch: list(batch), executor, max_batch=8, max_wait_ms=2000, max_queue=10)
        batcher.start()
        start = time.perf_counter()
        out = [await batcher.submit(i) for i in range(3)]  # one request at a time
        seconds = time.perf_counter() - start
        await batcher.stop()
        executor.shutdown()
        return out, seconds

    out, seconds = asyncio.run(main())
    assert out == [0, 1, 2] and seconds < 1.5  # three 2 s windows would take 6 s
