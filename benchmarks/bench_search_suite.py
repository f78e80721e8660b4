"""End-to-end search as a pytest-benchmark suite: ``Index.search`` against exhaustive MaxSim.

(``bench_search.py`` is the larger stand-alone table: build time, memory, k = 10/100/1000.)

    PYTHONPATH=python python -m pytest benchmarks/bench_search_suite.py --benchmark-columns=median,iqr,rounds

Each case records ``recall@10`` against exhaustive search on the uncompressed vectors in
``extra_info`` (shown with ``--benchmark-json``), so speed is never read without quality.
"""

from __future__ import annotations

import pytest
import torch

from colbert_engine import ops

K = 10


def _exhaustive_topk(workload, queries):
    scores = ops.maxsim(queries, workload.doc_emb, workload.doc_offsets)
    return scores.topk(K, dim=1).indices


def _recall(found_ids, truth) -> float:
    hits = [len(set(f) & set(t.tolist())) / K for f, t in zip(found_ids, truth)]
    return sum(hits) / len(hits)


@pytest.fixture(scope="module")
def truth(workload):
    return _exhaustive_topk(workload, workload.queries)


def test_plaid_one_query(benchmark, built_index, workload, truth):
    query = workload.queries[:1]
    benchmark(built_index.search, query, k=K)
    found = [[doc for doc, _ in hits] for hits in built_index.search(workload.queries, k=K)]
    benchmark.extra_info["recall@10"] = _recall(found, truth)


def test_plaid_query_batch(benchmark, built_index, workload, truth):
    results = benchmark(built_index.search, workload.queries, k=K)
    benchmark.extra_info["queries"] = int(workload.queries.shape[0])
    benchmark.extra_info["recall@10"] = _recall([[doc for doc, _ in hits] for hits in results], truth)


def test_exhaustive_maxsim_one_query(benchmark, workload):
    """Baseline: score every document with the fused kernel (uncompressed fp32 vectors)."""
    benchmark(ops.maxsim_topk, workload.queries[:1], workload.doc_emb, workload.doc_offsets, K)


def test_exhaustive_torch_one_query(benchmark, workload):
    """Baseline: plain torch GEMM over all packed tokens + segment max + sum + topk."""
    lengths = torch.diff(workload.doc_offsets)

    def search(q):
        per_doc = torch.segment_reduce(workload.doc_emb @ q.T, "max", lengths=lengths, axis=0, unsafe=True)
        return per_doc.sum(1).topk(K)

    benchmark(search, workload.queries[0])
