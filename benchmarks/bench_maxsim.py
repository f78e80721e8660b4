"""CPU MaxSim speed against torch in the same run (pytest-benchmark), one thread.

    PYTHONPATH=python python -m pytest benchmarks/bench_maxsim.py -p no:cacheprovider \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name --benchmark-timer=time.process_time

(``time.process_time``: CPU time of this single-threaded process, which stays meaningful on a
shared machine where wall time does not; drop the option on a quiet machine.)

One query of 32 tokens (dim 128) against 1,000 and 10,000 documents of 128 tokens each.
Baseline: torch ``(D @ q.T)`` then the per-document max over tokens and the sum over query
tokens; all documents have equal length here, so the segment max is a reshape + ``amax`` (the
fastest torch can do it). Each group's table shows each median's ratio to the group's best.
FLOP rate: 2 * n_docs * 128 * 32 * 128 per call.
"""

from __future__ import annotations

import pytest
import torch

from colbert_engine import _native, ops

QUERY_LEN, DIM, DOC_LEN = 32, 128, 128


# Single-thread comparison: benchmarks/conftest.py pins torch and our kernels to one thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[1000, 10000], ids=lambda n: f"{n}docs")
def dataset(request):
    """(n_docs, query (1, 32, 128) fp32, docs (n_docs * 128, 128) fp32, offsets, cache of
    16-bit copies). Module scope + params: pytest runs all tests of one size together, so
    only one size (655 MB of fp32 for 10,000 docs) is in memory at a time."""
    n_docs = request.param
    gen = torch.Generator().manual_seed(0)
    docs = torch.nn.functional.normalize(torch.randn(n_docs * DOC_LEN, DIM, generator=gen), dim=1)
    query = torch.nn.functional.normalize(torch.randn(1, QUERY_LEN, DIM, generator=gen), dim=2)
    offsets = torch.arange(0, n_docs * DOC_LEN + 1, DOC_LEN, dtype=torch.int64)
    return n_docs, query, docs, offsets, {}


def torch_maxsim(query, docs, n_docs):
    sims = docs @ query[0].T  # (n_docs * 128, 32)
    return sims.view(n_docs, DOC_LEN, QUERY_LEN).amax(dim=1).sum(dim=1)


def rounds(n_docs):
    return 15 if n_docs <= 1000 else 4


def run(benchmark, fn, n_docs, flops=True):
    benchmark.extra_info["isa"] = _native.cpu().isa()
    result = benchmark.pedantic(fn, rounds=rounds(n_docs), iterations=1, warmup_rounds=1)
    if flops:
        benchmark.extra_info["gflops_at_median"] = round(
            2 * n_docs * DOC_LEN * QUERY_LEN * DIM / benchmark.stats.stats.median / 1e9, 1)
    return result


def test_torch_matmul_amax_fp32(benchmark, dataset):
    n_docs, query, docs, _, _ = dataset
    benchmark.group = f"maxsim 1 query x {n_docs} docs"
    run(benchmark, lambda: torch_maxsim(query, docs, n_docs), n_docs)


def test_ops_maxsim_fp32(benchmark, dataset):
    n_docs, query, docs, offsets, _ = dataset
    benchmark.group = f"maxsim 1 query x {n_docs} docs"
    got = run(benchmark, lambda: ops.maxsim(query, docs, offsets), n_docs)
    torch.testing.assert_close(got[0], torch_maxsim(query, docs, n_docs), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_ops_maxsim_half_docs(benchmark, dataset, dtype):
    """16-bit document storage (half the memory traffic), fp32 math; compare with the
    fp32 group's torch baseline."""
    n_docs, query, docs, offsets, cache = dataset
    benchmark.group = f"maxsim 1 query x {n_docs} docs"
    if dtype not in cache:
        cache.clear()
        cache[dtype] = docs.to(dtype)
    half = cache[dtype]
    got = run(benchmark, lambda: ops.maxsim(query, half, offsets), n_docs)
    torch.testing.assert_close(got[0], torch_maxsim(query, half.float(), n_docs), atol=1e-4, rtol=1e-5)


def test_ops_maxsim_topk_fp32(benchmark, dataset):
    """Best 10 without materialising the scores; compare with ops.maxsim + torch.topk."""
    n_docs, query, docs, offsets, _ = dataset
    benchmark.group = f"maxsim_topk fp32 k=10, 1 query x {n_docs} docs"
    scores, ids = run(benchmark, lambda: ops.maxsim_topk(query, docs, offsets, 10), n_docs)
    assert torch.equal(torch.sort(ids[0]).values,
                       torch.sort(torch.topk(ops.maxsim(query, docs, offsets)[0], 10).indices).values)


def test_ops_maxsim_then_torch_topk_fp32(benchmark, dataset):
    n_docs, query, docs, offsets, _ = dataset
    benchmark.group = f"maxsim_topk fp32 k=10, 1 query x {n_docs} docs"
    run(benchmark, lambda: torch.topk(ops.maxsim(query, docs, offsets), 10, dim=1), n_docs)
