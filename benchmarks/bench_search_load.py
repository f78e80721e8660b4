"""Search latency beside other work: quiet, beside torch on all cores, beside a busy loop.

    PYTHONPATH=python python benchmarks/bench_search_load.py [--member base-3k] [--nbits 2] \
        [--neighbours 3] [--window 1.5] [--fixed-team] [--session child|own|both] [--pace QPS]

For each scenario and 1 / 2 threads (``ops.set_num_threads`` and ``torch.set_num_threads``),
one query per call (k = 10), cycling through the member's queries for ``--window`` seconds;
p50 / p95 ms. Competitors are fresh processes, started for each measurement and killed after:

- ``torch``: ``torch.matmul`` of 1024x1024 fp32 matrices in a loop on every core (what a
  co-located encoder does);
- ``busy``: a single-threaded Python loop.

Queries run back to back (a saturated caller: the search thread never sleeps, so beside a
busy thread on its core it gets the scheduler's fair share, half of it, in 4 ms slices at
HZ=250), or with ``--pace QPS`` on a fixed schedule, as requests reach a service.
Each (scenario, threads) runs ``--neighbours`` times and reports the worst neighbour beside
the median, two ways: the **steady** p50 / p95 of the queries started 0.5 s or more after
the search began, and the p50 of the **first** 0.15 s. The search starts 1 s after the
competitor reached its loop, its threads having slept meanwhile; Linux then places the
waking thread beside a competitor thread on a shared core about half the time, and moves
threads apart within 0.15-0.5 s (benchmarks/RESULTS.md: a bare kernel loop lands there too,
in ~40% of starts against the search's ~55%).
The control line shows that: the centroid-score kernel alone (8,192 centroids), called as
many times per "query" as makes the quiet one-thread query's time, run the same way on one
thread.
Target (issue 11): 2-thread p50 beside torch <= 1.5x the 1-thread quiet p50.
Where the competitor runs matters to Linux's scheduler: ``--session child`` starts it in
the benchmark's own session (it competes thread against thread with the search, as a
subprocess of the service would, or as one container's processes do), ``--session own`` in
a new session (``setsid``, as a separately started encoder or another service is: the
kernel's autogroups, or systemd's cgroups for services, then share the cores between the two
processes, not between their threads); ``both`` (default) measures the loaded cells each way.
``--fixed-team`` disables the search's busy-machine settings (search/threads.py: both teams
lowered, the kernel pool's spin stopped) to show what they change. Also prints batch QPS
(all queries in one call) beside one-by-one QPS, the two alternating three times at the end,
and two handles on the folder searched at once from two Python threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_quality import _cached_member  # noqa: E402

COMPETITORS = {
    "torch": ("import time, torch\n"
              "torch.set_num_threads(os.cpu_count())\n"
              "a = torch.randn(1024, 1024); end = time.time() + {seconds}\n"
              "a = torch.matmul(a, a).clamp_(-1, 1); print('ready', flush=True)\n"
              "while time.time() < end: a = torch.matmul(a, a).clamp_(-1, 1)\n"),
    "busy": ("import time\nend = time.time() + {seconds}\nx = 0\nprint('ready', flush=True)\n"
             "while time.time() < end: x += 1\n"),
}


def _start(kind: str, seconds: float, own_session: bool = False):
    code = "import os\n" + COMPETITORS[kind].format(seconds=seconds)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=own_session)
    proc.stdout.readline()  # it prints "ready" on reaching its loop (importing torch takes ~1.4 s)
    time.sleep(1.0)  # let it settle into the loop
    return proc


FIRST_S = 0.15   # the first window after the search starts beside a running competitor
STEADY_S = 0.5   # queries started this long after the search began make the steady p50


def _latencies(index, queries, k=10) -> np.ndarray:
    """Milliseconds per one-query call over ``queries``, back to back."""
    return _timed(_one_query(index, queries, k), queries.shape[0])[:, 1]


def _one_query(index, queries, k=10):
    """``call(q)`` searching query q alone."""
    return lambda q: index.search_internal(queries[q:q + 1], k)


def _timed(call, n_calls: int, pace=None, seconds=None) -> np.ndarray:
    """``(start s since the first call, ms)`` of ``call(i)`` for i = 0, 1, ...: ``n_calls``
    calls, or as many as start within ``seconds`` (cycling i over ``n_calls``); back to back,
    or with ``pace`` (calls per second) started on a fixed schedule (a call that falls behind
    starts at once)."""
    rows = []
    first = next_start = time.perf_counter()
    i = 0
    while (i < n_calls) if seconds is None else (time.perf_counter() - first < seconds):
        if pace:
            wait = next_start - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            next_start += 1.0 / pace
        start = time.perf_counter()
        call(i % n_calls)
        rows.append((start - first, (time.perf_counter() - start) * 1e3))
        i += 1
    return np.asarray(rows)


def _phases(rows: np.ndarray) -> tuple[float, float, float]:
    """(steady p50, steady p95, first-window p50) of ``_timed`` rows."""
    steady = rows[rows[:, 0] >= STEADY_S, 1]
    first = rows[rows[:, 0] < FIRST_S, 1]
    return float(np.percentile(steady, 50)), float(np.percentile(steady, 95)), float(np.percentile(first, 50))


def _neighbours(kind, session, count, seconds, measure):
    """``measure()`` beside ``count`` fresh competitors (none for "quiet"): worst and median
    over them of each of ``_phases``' numbers."""
    phases = []
    for _ in range(count if kind != "quiet" else 1):
        proc = None if kind == "quiet" else _start(kind, seconds + 5.0, session == "own")
        try:
            phases.append(_phases(measure()))
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    table = np.asarray(phases)
    return table.max(axis=0), np.median(table, axis=0)


def _two_handles(path, queries, rounds=3) -> None:
    """Two handles on the folder, each searched back to back from its own Python thread (a
    threaded server or two embedding systems in one process), 2 threads each."""
    from colbert_engine import Index, ops

    handles = [Index.open(path) for _ in range(2)]
    times = [[], []]

    def run(i):
        ops.set_num_threads(2)  # the kernels' setting is the calling thread's own
        for _ in range(rounds):
            times[i].extend(_latencies(handles[i], queries))

    for handle in handles:
        handle.search_internal(queries[:4], 10)
    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    lat = np.concatenate([np.asarray(t) for t in times])
    print(f"two handles, one Python thread each: p50 {np.percentile(lat, 50):.2f} ms, p95 "
          f"{np.percentile(lat, 95):.2f} ms, {lat.size / wall:.0f} QPS together", flush=True)
    for handle in handles:
        handle.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", default="base-3k")
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--neighbours", type=int, default=3)
    parser.add_argument("--window", type=float, default=1.5, help="seconds of queries per measurement")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--fixed-team", action="store_true", help="no busy-machine settings (torch's team, pool spin)")
    parser.add_argument("--pace", type=float, default=None,
                        help="queries per second on a fixed schedule (default: back to back)")
    parser.add_argument("--session", choices=("child", "own", "both"), default="both",
                        help="competitor in the benchmark's session, in its own, or each way")
    args = parser.parse_args(argv)
    if args.window <= STEADY_S:
        parser.error(f"--window: must exceed {STEADY_S} s (the steady p50 is over the queries started after it)")

    from colbert_engine import Index, ops
    from colbert_engine.search import threads as search_threads

    if args.fixed_team:
        search_threads.search_threads = lambda allowed: allowed
    data = _cached_member(args.member)
    queries = data["queries"][:args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.build(Path(tmp) / "index", data["doc_emb"], data["doc_offsets"], nbits=args.nbits)
        print(f"{args.member}: {index.n_docs} docs, {index.n_tokens:,} tokens, nbits {args.nbits}, "
              f"team {'fixed' if args.fixed_team else 'chosen by the search'}; load average "
              f"{os.getloadavg()[0]:.1f} at start; "
              f"{'back to back' if not args.pace else f'{args.pace:g} queries/s on a schedule'}", flush=True)
        results = {}
        sessions = ("child", "own") if args.session == "both" else (args.session,)
        scenarios = ["quiet"] + [f"{kind}/{session}" for kind in ("torch", "busy") for session in sessions]
        search = lambda: _timed(_one_query(index, queries), queries.shape[0], args.pace, args.window)  # noqa: E731
        print(f"{'':11s} {'':5s}  steady p50 worst (median)   p95 worst   first {FIRST_S:g} s p50 worst (median)")
        for scenario in scenarios:
            kind, _, session = scenario.partition("/")
            for threads in (1, 2):
                ops.set_num_threads(threads)
                torch.set_num_threads(threads)
                _latencies(index, queries[:5])  # warm-up
                worst, median = _neighbours(kind, session, args.neighbours, args.window, search)
                results[scenario, threads] = worst, median
                print(f"{scenario:11s} {threads} thr: {worst[0]:8.2f} ms ({median[0]:.2f})  {worst[1]:8.2f} ms  "
                      f"{worst[2]:8.2f} ms ({median[2]:.2f}); load {os.getloadavg()[0]:.1f}", flush=True)
        # Control: the centroid-score kernel alone on one thread, called back to back as many
        # times per "query" as makes the quiet query's time (8,192 centroids: 4 MB, as a 300k-token
        # index's; a kernel grown to the query's time would stream a larger working set).
        ops.set_num_threads(1)
        torch.set_num_threads(1)
        base = results["quiet", 1][0][0]
        centroids = torch.randn(8192, 128)
        tokens = torch.randn(1, 32, 128)
        call_ms = float(np.median(_timed(lambda _: ops.plaid.centroid_scores_launch(tokens, centroids), 50)[:, 1]))
        repeats = max(1, round(base / call_ms))

        def kernel_query(_):
            for _ in range(repeats):
                ops.plaid.centroid_scores_launch(tokens, centroids)

        kernel = lambda: _timed(kernel_query, 1, args.pace, args.window)  # noqa: E731
        kernel_quiet = _neighbours("quiet", "", 1, args.window, kernel)[0]
        for session in sessions:
            worst, median = _neighbours("torch", session, args.neighbours, args.window, kernel)
            print(f"control: the kernel alone, 1 thread, beside torch ({session}): first {FIRST_S:g} s p50 / quiet "
                  f"{worst[2] / kernel_quiet[0]:.2f} worst ({median[2] / kernel_quiet[0]:.2f} median), steady "
                  f"{worst[0] / kernel_quiet[0]:.2f} worst", flush=True)
        ops.set_num_threads(2)
        torch.set_num_threads(2)
        time.sleep(1.5)  # let the team chooser forget the readings taken beside the last competitor
        # Batch and one by one alternate, three times each, so both see the same machine.
        batch_s, single_s = [], []
        index.search_internal(queries, 10)  # the first call after the thread changes grows the pools
        for _ in range(3):
            start = time.perf_counter()
            index.search_internal(queries, 10)
            batch_s.append(time.perf_counter() - start)
            single_s.append(_latencies(index, queries).sum() / 1e3)
        qps = queries.shape[0] / float(np.median(batch_s))
        single_qps = queries.shape[0] / float(np.median(single_s))
        for session in sessions:
            worst, median = results[f"torch/{session}", 2]
            print(f"competitor in {session} session: 2-thread p50 beside torch / 1-thread quiet p50 = "
                  f"{worst[0] / base:.2f} worst neighbour, {median[0] / base:.2f} median (steady, target <= 1.5); "
                  f"first {FIRST_S:g} s {worst[2] / base:.2f} worst, {median[2] / base:.2f} median")
        print(f"batch of {queries.shape[0]} in one call: {qps:.0f} QPS [{queries.shape[0] / max(batch_s):.0f}-"
              f"{queries.shape[0] / min(batch_s):.0f}] vs one by one {single_qps:.0f} QPS "
              f"[{queries.shape[0] / max(single_s):.0f}-{queries.shape[0] / min(single_s):.0f}], alternating, 2 threads")
        _two_handles(index.path, queries)
        index.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
