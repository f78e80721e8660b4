"""Small clustered collections and built indexes shared by the index tests."""

from __future__ import annotations

import shutil

import pytest

from colbert_engine import Index
from colbert_engine.testing import clustered_collection


@pytest.fixture(scope="session")
def collection():
    """600 documents, ~24k tokens, 64-d, with topic structure (see colbert_engine/testing.py)."""
    return clustered_collection(n_docs=600, mean_doc_len=40, dim=64, n_queries=24, seed=3)


@pytest.fixture(scope="session")
def built_index(collection, tmp_path_factory):
    """A read-only reference index; tests that write copy it first (see ``index_copy``)."""
    path = tmp_path_factory.mktemp("idx") / "base"
    ids = [f"doc-{i}" for i in range(collection.n_docs)]
    metadata = [{"lang": "de" if i % 3 == 0 else "en", "n": i} for i in range(collection.n_docs)]
    index = Index.build(path, collection.doc_emb, collection.doc_offsets, ids=ids, metadata=metadata, nbits=2)
    index.close()
    return path


@pytest.fixture
def index_copy(built_index, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(built_index, path)
    return path


TINY_DOCS = 40


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory):
    """40 short 16-d documents (ids doc-0..doc-39, lang metadata): writes take milliseconds.
    Read-only: the concurrency and fuzz tests work on copies."""
    data = clustered_collection(n_docs=TINY_DOCS, mean_doc_len=8, dim=16, n_queries=1, seed=5)
    path = tmp_path_factory.mktemp("tiny") / "base"
    Index.build(path, data.doc_emb, data.doc_offsets, ids=[f"doc-{i}" for i in range(TINY_DOCS)],
                metadata=[{"lang": "de" if i % 2 else "en"} for i in range(TINY_DOCS)]).close()
    return path


@pytest.fixture
def long_run(request):
    """The 50-trial concurrency and the long fuzz runs take minutes on a loaded 2-core
    machine: they run only when asked for, ``pytest -m slow tests/index``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select it with -m slow")
