"""The search kernels' thread pool (csrc/cpu/parallel.h): results do not depend on the thread
count, concurrent callers and fork()ed children get correct results, and the kernels' thread
setting is the caller's own, apart from torch's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
from colbert_engine.ops import reference
from colbert_engine.ops.plaid import centroid_scores_launch


@pytest.fixture
def restore_threads():
    ours, theirs = ops.get_num_threads(), torch.get_num_threads()
    yield
    ops.set_num_threads(ours)
    torch.set_num_threads(theirs)


def _packed(n_docs, dim, seed, max_len=30):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len, (n_docs,), generator=gen)
    offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    return torch.randn(int(offsets[-1]), dim, generator=gen), offsets


@settings(max_examples=30, deadline=None)
@given(nq=st.integers(1, 3), query_len=st.integers(1, 40), n_centroids=st.integers(1, 70),
       dim=st.integers(1, 70), seed=st.integers(0, 2**31 - 1))
def test_centroid_scores_kernel_matches_reference(nq, query_len, n_centroids, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(nq, query_len, dim, generator=gen)
    centroids = torch.randn(n_centroids, dim, generator=gen)
    got = centroid_scores_launch(queries, centroids)
    want = reference.centroid_scores(queries, centroids)
    assert got.shape == (nq, n_centroids, query_len)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_results_do_not_depend_on_the_thread_count(threads, restore_threads):
    gen = torch.Generator().manual_seed(3)
    queries = torch.randn(2, 33, 64, generator=gen)
    centroids = torch.randn(1027, 64, generator=gen)
    docs, offsets = _packed(301, 64, seed=4)
    ops.set_num_threads(1)
    want = (centroid_scores_launch(queries, centroids), ops.maxsim(queries, docs, offsets),
            ops.maxsim_topk(queries, docs, offsets, 7))
    ops.set_num_threads(threads)
    got = (centroid_scores_launch(queries, centroids), ops.maxsim(queries, docs, offsets),
           ops.maxsim_topk(queries, docs, offsets, 7))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[2][0], want[2][0]) and torch.equal(got[2][1], want[2][1])


def test_concurrent_callers_get_their_own_results(restore_threads):
    """Python threads calling kernels at once: one holds the pool, the others run on their
    own thread; every result equals the sequential one."""
    docs, offsets = _packed(400, 32, seed=5)
    queries = [torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(10 + i)) for i in range(6)]
    ops.set_num_threads(2)
    want = [ops.maxsim(q, docs, offsets) for q in queries]
    got = [None] * len(queries)

    def run(i):
        ops.set_num_threads(2)  # the setting is per calling thread
        for _ in range(20):
            got[i] = ops.maxsim(queries[i], docs, offsets)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(queries))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_a_forked_child_gets_a_working_pool():
    """The parent's pool workers do not exist after fork(): the child must start its own
    rather than wait for them (a hang is caught by the timeout)."""
    script = textwrap.dedent("""
        import os, torch
        from colbert_engine import ops
        from colbert_engine.ops.plaid import centroid_scores_launch
        ops.set_num_threads(2)
        q, c = torch.randn(1, 32, 64), torch.randn(4096, 64)
        want = centroid_scores_launch(q, c)  # the parent's pool is running now
        pid = os.fork()
        if pid == 0:
            ok = torch.equal(centroid_scores_launch(q, c), want)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_hold_keeps_the_kernels_count_while_torch_changes(restore_threads):
    ops.set_num_threads(3)
    with ops.hold_num_threads():
        torch.set_num_threads(1)  # moves OpenMP's setting, not the kernels'
        assert ops.get_num_threads() == 3
        with ops.hold_num_threads(2):
            assert ops.get_num_threads() == 2
        assert ops.get_num_threads() == 3
    assert ops.get_num_threads() == 3


def test_set_num_threads_rejects_non_positive():
    with pytest.raises(ValueError, match="n:"):
        ops.set_num_threads(0)


def test_pool_spin_setting(restore_threads):
    spin = ops.get_pool_spin_us()
    with pytest.raises(ValueError, match="microseconds"):
        ops.set_pool_spin_us(-1)
    docs, offsets = _packed(200, 16, seed=6)
    queries = torch.randn(1, 8, 16)
    ops.set_num_threads(2)
    want = ops.maxsim(queries, docs, offsets)
    try:
        ops.set_pool_spin_us(0)  # workers sleep at once: still every task runs
        assert all(torch.equal(ops.maxsim(queries, docs, offsets), want) for _ in range(50))
    finally:
        ops.set_pool_spin_us(spin)


def test_waking_the_pool_changes_no_result(restore_threads):
    docs, offsets = _packed(120, 16, seed=7)
    queries = torch.randn(1, 8, 16)
    want = ops.maxsim(queries, docs, offsets)
    for threads in (1, 2, 4):
        ops.set_num_threads(threads)
        ops.wake_pool()  # returns at once; workers spin for the next loop
        assert torch.equal(ops.maxsim(queries, docs, offsets), want)
