"""How many threads a search uses: what the caller allows, fewer while other work already
occupies the cores.

OpenMP threads that wait at a barrier spin, and a barrier waits for its slowest thread: when
another process (a co-located encoder running torch, other tenants) keeps the cores busy, a
2-thread OpenMP team waits for a descheduled thread at every barrier. On the shared 2-core
machine of benchmarks/RESULTS.md ("Search under load") that made one query of a 300-document
index take 330 ms at p50 instead of 1.3 ms on one thread. The search's kernels no longer use
an OpenMP team (they run on their own pool, csrc/cpu/parallel.h, where the calling thread
takes every task a descheduled worker has not started, so that wait is gone even when the
machine turns busy between two readings below); torch's ops in the search still run on
torch's team, whose wait policy cannot be changed once torch has started it, and the library
must not depend on the user's environment. And a second thread of ours on a busy core costs
the calling thread part of its share (search_thread_team). So the search picks its team
size: ``free = cores - runnable threads of other processes`` (``/proc/loadavg``'s
instantaneous count minus this process's running threads), the lower median of the samples
of the last ``WINDOW_S`` seconds (at most one per ``SAMPLE_S``), at least 1. On a quiet
machine that is every allowed thread.

What no team size changes: a competitor inside the search's own scheduling group (a child of
the same session, one container or service cgroup) competes thread against thread, and a
search thread that wakes while every core runs one of its threads shares a core, in 4 ms
turns at HZ=250, until the kernel moves the threads apart (0.15-0.5 s; a bare kernel loop
started that way lands there in about 40% of starts, the search in about 55%;
benchmarks/RESULTS.md, "Steady state and the first 0.15 s").
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque

SAMPLE_S = 0.25    # seconds between two readings of the machine's runnable threads
BUSY_SPIN_US = 0   # pool threads' spin while the machine is busy (csrc/cpu/parallel.h): none, a spinning
                   # thread spends its share of a busy core on nothing (a 2-thread search beside torch:
                   # p50 1.49x the quiet 1-thread p50 spinning 300 us, 1.18x at 50 us, 1.08x at 0)
WINDOW_S = 1.0     # samples older than this are forgotten: a team shrinks at once and grows back after a second

_samples: deque = deque()  # (time, free cores), oldest first
_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_last_ticks: list = []  # (all CPUs' busy ticks, all ticks, this process's ticks) at the last reading


def _cpu_ticks() -> tuple[int, int, int]:
    """Busy and total ticks of all CPUs since boot (/proc/stat; idle and iowait are not
    busy, steal is), and this process's user + system ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
        stat = f.read()
    own = stat[stat.rindex(")") + 2:].split()
    return sum(fields) - fields[3] - fields[4], sum(fields), int(own[11]) + int(own[12])


def _free_cores() -> int | None:
    """Cores not running another process's threads now, or None where Linux's /proc is absent.

    Other processes' runnable threads now (/proc/loadavg), but no more than the cores they
    kept busy since the last reading (/proc/stat less this process's time): a task that is
    runnable without using a core (a kernel thread the VM of benchmarks/RESULTS.md showed
    runnable in every reading for minutes) does not count."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:  # the thread ended meanwhile
                continue
            own += stat[stat.rindex(")") + 2] == "R"
        ticks = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    delta = tuple(now - before for now, before in zip(ticks, _last_ticks[0])) if _last_ticks else None
    _last_ticks[:] = [ticks]
    return max(1, _cores() - _other_cores(max(0, running - own), delta, os.cpu_count() or _cores()))


def _other_cores(runnable: int, delta, n_cpus: int) -> int:
    """Cores other processes occupy: their runnable threads, capped by the cores they used
    over ``delta`` = (busy ticks of all CPUs, all ticks, this process's ticks), rounded."""
    if delta is None or delta[1] <= 0:
        return runnable
    busy, total, mine = delta
    used = (busy - mine) * n_cpus / total
    return min(runnable, max(0, int(used + 0.5)))


def search_threads(allowed: int, now: float | None = None) -> int:
    """Threads for the next search, at most ``allowed``. Samples are timestamped, not just
    counted: a search that follows a quiet pause must not inherit the busy readings taken
    before it (a batch right after a neighbour had exited ran on one thread)."""
    now = time.monotonic() if now is None else now
    with _lock:
        while _samples and now - _samples[0][0] > WINDOW_S:
            _samples.popleft()
        if not _samples or now - _samples[-1][0] >= SAMPLE_S:
            free = _free_cores()
            if free is not None:
                _samples.append((now, free))
        if not _samples:
            return allowed
        # The lower median, not the smallest: a kernel thread caught runnable once (rcu,
        # kworkers) kept a quiet machine's searches on one thread for a second.
        readings = sorted(free for _, free in _samples)
        return max(1, min(allowed, readings[(len(readings) - 1) // 2]))


# torch's thread count and the pool's spin are process-wide: searches running at once in
# several Python threads share one saved pair, restored when the last of them ends.
_torch_lock = threading.Lock()
_torch_users = [0, None, None]  # searches inside the busy settings, torch's count and the spin to restore
_searching = [0]  # searches running now in this process
_nesting = threading.local()  # depth 1 inside this thread's search: a nested team keeps its settings


@contextlib.contextmanager
def search_thread_team():
    """While the machine is busy, run the search's kernels and torch's work inside it on
    :func:`search_threads` threads and let the kernels' idle pool threads sleep at once
    (``BUSY_SPIN_US``); the settings are restored after. Fewer threads, not just a pool that
    never waits at a barrier: a second thread of ours on the busy core splits our scheduling
    group's share between two cores, and beside a single-threaded process in another
    session the calling thread then got a third of its core (6.6 ms p50 instead of 2.7;
    benchmarks/RESULTS.md). torch's count and the spin are process-wide, so they are changed
    once for overlapping searches and restored by the last one; the kernels' count is the
    calling thread's own."""
    import torch

    from colbert_engine import ops

    if getattr(_nesting, "depth", 0):  # inside this thread's search (Index.search, then the searcher's run)
        yield
        return
    allowed = max(torch.get_num_threads(), ops.get_num_threads())
    _nesting.depth = 1
    with _torch_lock:
        _searching[0] += 1
        alone = _searching[0] == 1
    try:
        # Searches running at once in several threads of this process (two handles, a
        # threaded server) already keep the cores busy: each runs on its own thread.
        threads = search_threads(allowed) if alone else 1
        if threads >= allowed:  # a quiet machine
            yield
            return
        with _busy_settings(threads, torch, ops):
            yield
    finally:
        _nesting.depth = 0
        with _torch_lock:
            _searching[0] -= 1


@contextlib.contextmanager
def _busy_settings(threads: int, torch, ops):
    """Both teams at ``threads`` and the pool's short spin, for the calling search."""
    with ops.hold_num_threads(min(threads, ops.get_num_threads())):
        with _torch_lock:
            if _torch_users[0] == 0:
                _torch_users[1], _torch_users[2] = torch.get_num_threads(), ops.get_pool_spin_us()
                torch.set_num_threads(min(threads, _torch_users[1]))
                ops.set_pool_spin_us(min(BUSY_SPIN_US, _torch_users[2]))
            _torch_users[0] += 1
        try:
            yield
        finally:
            with _torch_lock:
                _torch_users[0] -= 1
                if _torch_users[0] == 0:
                    torch.set_num_threads(_torch_users[1])
                    ops.set_pool_spin_us(_torch_users[2])
