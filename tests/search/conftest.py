"""A two-segment index with deletions for the Searcher tests."""

from __future__ import annotations

import pytest

from colbert_engine import Index
from colbert_engine.testing import clustered_collection


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """(index, queries): 500 + 150 documents of 1-120 tokens (dim 32) in two segments, every
    ninth document deleted; the index stays open for the module."""
    base = clustered_collection(n_docs=500, mean_doc_len=30, dim=32, n_queries=12, seed=11)
    more = clustered_collection(n_docs=150, mean_doc_len=30, dim=32, n_queries=1, seed=12)
    index = Index.build(tmp_path_factory.mktemp("searcher") / "index", base.doc_emb, base.doc_offsets,
                        metadata=[{"even": i % 2 == 0} for i in range(500)], nbits=2)
    index.add(more.doc_emb, more.doc_offsets, metadata=[{"even": i % 2 == 0} for i in range(150)])
    index.delete(list(range(0, 650, 9)))
    queries, _ = index._prepare_queries(base.queries)
    yield index, queries
    index.close()
