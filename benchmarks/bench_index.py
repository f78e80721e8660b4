"""pytest-benchmark suite for the index: build, default search at k=10/100, exact search,
on a small synthetic clustered collection (quick on 2 cores; bench_search.py runs the
large table).

    PYTHONPATH=python python -m pytest -q benchmarks/bench_index.py --benchmark-only

The ratio to read: default search vs exact search on the same index, same run.
"""

from __future__ import annotations

import pytest

from colbert_engine import Index
from colbert_engine.testing import clustered_collection


@pytest.fixture(scope="module")
def data():
    return clustered_collection(n_docs=1000, mean_doc_len=60, dim=128, n_queries=16, seed=0)


@pytest.fixture(scope="module")
def index(data, tmp_path_factory):
    index = Index.build(tmp_path_factory.mktemp("bench") / "index", data.doc_emb, data.doc_offsets, nbits=2)
    yield index
    index.close()


def test_build(benchmark, data, tmp_path):
    counter = iter(range(10**6))
    benchmark.pedantic(lambda: Index.build(tmp_path / f"i{next(counter)}", data.doc_emb, data.doc_offsets).close(),
                       rounds=2, iterations=1)


@pytest.mark.parametrize("k", [10, 100])
def test_search_one_query(benchmark, index, data, k):
    queries = iter(range(10**9))
    benchmark(lambda: index.search(data.queries[next(queries) % data.queries.shape[0]], k=k))


def test_search_batch_of_16(benchmark, index, data):
    benchmark(lambda: index.search(data.queries, k=10))


def test_exact_search_one_query(benchmark, index, data):
    benchmark.pedantic(lambda: index.search(data.queries[0], k=10, exact=True), rounds=3, iterations=1)
