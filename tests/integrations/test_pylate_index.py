"""``colbert_engine.integrations.pylate.PyLateIndex``: PyLate's index contract over our
Index (same top-k and scores as ``Index.search``; subsets; removal; decompressed embeddings
that reproduce the scores), and, where pylate is installed, through PyLate's own
``retrieve.ColBERT`` and ``rank.rerank``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.integrations.pylate import PyLateIndex

DIM = 16


def _docs(n=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Clustered vectors (as real token vectors are), lengths 3..24
    centers = torch.nn.functional.normalize(torch.randn(12, DIM, generator=gen), dim=-1)
    docs = []
    for _ in range(n):
        length = int(torch.randint(3, 25, (1,), generator=gen))
        rows = centers[torch.randint(0, 12, (length,), generator=gen)] + 0.3 * torch.randn(length, DIM, generator=gen)
        docs.append(torch.nn.functional.normalize(rows, dim=-1).numpy())
    return [f"doc-{i}" for i in range(n)], docs


def _queries(nq=5, length=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(nq, length, DIM, generator=gen), dim=-1)


@pytest.fixture
def corpus(tmp_path):
    ids, docs = _docs()
    index = PyLateIndex(index_folder=str(tmp_path), index_name="pl", override=True, n_centroids=16)
    assert index.add_documents(documents_ids=ids, documents_embeddings=docs) is index
    return index, ids, docs


def _as_pylate(hits):
    return [[{"id": i, "score": s} for i, s in q] for q in hits]


def test_same_top_k_as_index_search(corpus, tmp_path):
    index, ids, docs = corpus
    assert index.is_end_to_end_index is True
    queries = _queries()
    results = index(queries, k=7)
    assert results == _as_pylate(index.index.search(queries, k=7))
    assert len(results) == 5 and all(len(r) == 7 for r in results)
    # an Index built directly from the same vectors gives the same results
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    direct = Index.build(tmp_path / "direct", np.concatenate(docs), offsets, ids=ids, n_centroids=16)
    assert results == _as_pylate(direct.search(queries, k=7))
    # numpy and list-of-arrays queries, a single 2-D query
    assert index(queries.numpy(), k=7) == results
    assert index(list(queries.numpy()), k=7) == results
    assert index(queries[2], k=7) == [results[2]]


def test_queries_of_different_lengths(corpus):
    index, _, _ = corpus
    long, short = _queries(2, 12, seed=3), _queries(1, 5, seed=4)
    results = index([long[0], short[0], long[1]], k=4)
    assert results[0] == index(long[0], k=4)[0]
    assert results[1] == index(short[0], k=4)[0]
    assert results[2] == index(long[1], k=4)[0]


def test_subset(corpus):
    index, ids, _ = corpus
    queries = _queries(3)
    allowed = ids[10:30]
    results = index(queries, k=5, subset=allowed)
    assert results == _as_pylate(index.index.search(queries, k=5, filter=allowed))
    assert all(r["id"] in allowed for q in results for r in q)
    per_query = [ids[:5], ["doc-7", "no-such-doc"], []]
    results = index(queries, k=3, subset=per_query)
    assert {r["id"] for r in results[0]} <= set(ids[:5]) and [r["id"] for r in results[1]] == ["doc-7"]
    assert results[2] == []
    with pytest.raises(ValueError, match="subset: 2 lists for 3 queries"):
        index(queries, k=3, subset=[ids[:2], ids[2:4]])


def test_embeddings_are_the_decompressed_codes_and_reproduce_scores(corpus):
    index, ids, docs = corpus
    wanted = [["doc-3", "doc-40"], ["doc-0"]]
    got = index.get_documents_embeddings(wanted)
    assert [len(g) for g in got] == [2, 1]
    for group, arrays in zip(wanted, got):
        for doc_id, emb in zip(group, arrays):
            original = docs[ids.index(doc_id)]
            assert emb.shape == original.shape and emb.dtype == np.float32
            cos = (emb * original).sum(-1)  # 2 bits per dimension, 16 centroids: close, not equal
            assert float(cos.mean()) > 0.9 and float(cos.min()) > 0.6
    queries = _queries(2)
    for q, hits in zip(queries, index(queries, k=5)):
        vectors = index.get_documents_embeddings([[h["id"] for h in hits]])[0]
        emb = torch.from_numpy(np.concatenate(vectors))
        offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(v) for v in vectors])]), dtype=torch.int64)
        scores = ops.maxsim(q[None], emb, offsets)[0]
        assert np.allclose(scores.numpy(), [h["score"] for h in hits], atol=1e-4)
    with pytest.raises(KeyError, match="no-such-doc"):
        index.get_documents_embeddings([["doc-1", "no-such-doc"]])


def test_remove_update_add_and_reopen(corpus, tmp_path):
    index, ids, docs = corpus
    queries = _queries(4)
    top = index(queries, k=3)
    gone = sorted({r["id"] for q in top for r in q})
    assert index.remove_documents(gone) is index
    after = index(queries, k=3)
    assert not {r["id"] for q in after for r in q} & set(gone)
    with pytest.raises(KeyError):
        index.get_documents_embeddings([[gone[0]]])
    # later documents use the existing codec, and are found
    _, new_docs = _docs(2, seed=9)
    index.add_documents(["new-a", "new-b"], new_docs)
    assert index(new_docs[0], k=1)[0][0]["id"] == "new-a"
    with pytest.raises(ValueError):
        index.add_documents(["new-a"], [docs[5]])  # already there: update_documents replaces
    index.update_documents(["new-a"], [docs[5]])
    assert np.allclose(index.get_documents_embeddings([["new-a"]])[0][0].shape, docs[5].shape)
    # reopened from disk: same answers
    again = PyLateIndex(index_folder=str(tmp_path), index_name="pl")
    assert again(queries, k=3) == index(queries, k=3)


def test_override_and_errors(tmp_path):
    ids, docs = _docs(20)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not removing it"):
        PyLateIndex(index_folder=str(tmp_path), index_name="foreign", override=True)
    assert (tmp_path / "foreign" / "notes.txt").exists()
    with pytest.raises(ValueError, match="index_name"):
        PyLateIndex(index_folder=str(tmp_path), index_name="../x")
    index = PyLateIndex(index_folder=str(tmp_path), index_name="pl")
    with pytest.raises(ValueError, match="empty"):
        index(_queries(1), k=3)
    with pytest.raises(ValueError, match="2 ids for 3 documents_embeddings"):
        index.add_documents(ids[:2], docs[:3])
    with pytest.raises(ValueError, match=r"documents_embeddings\[0\]: expected a \(n_tokens, dim\) array"):
        index.add_documents(ids[:1], [docs[0][0]])
    with pytest.raises(ValueError, match="has no token vectors"):
        index.add_documents(ids[:1], [np.zeros((0, DIM), np.float32)])
    index.add_documents(ids, docs)
    rebuilt = PyLateIndex(index_folder=str(tmp_path), index_name="pl", override=True)
    assert rebuilt.index is None


# ---------------------------------------------------------------- through PyLate itself

def test_through_pylate_retrieve(corpus):
    pytest.importorskip("pylate", reason="pylate is not installed (optional test dependency)")
    from pylate import indexes, rank, retrieve

    index, ids, _ = corpus
    assert isinstance(index, indexes.base.Base)
    queries = _queries(3)
    retriever = retrieve.ColBERT(index=index)
    results = retriever.retrieve(queries_embeddings=list(queries.numpy()), k=6)
    assert results == _as_pylate(index.index.search(queries, k=6))
    subset = ids[:20]
    assert retriever.retrieve(list(queries), k=6, subset=subset) == _as_pylate(
        index.index.search(queries, k=6, filter=subset))
    # PyLate's own reranker on the decompressed embeddings agrees with our scores
    candidates = [[r["id"] for r in q] for q in results]
    reranked = rank.rerank(documents_ids=candidates, queries_embeddings=list(queries.numpy()),
                           documents_embeddings=index.get_documents_embeddings(candidates))
    for ours, theirs in zip(results, reranked):
        assert [r["id"] for r in theirs] == [r["id"] for r in ours]
        assert np.allclose([r["score"] for r in theirs], [r["score"] for r in ours], atol=1e-4)


def test_works_without_pylate(tmp_path):
    """With pylate absent the adapter is a plain class with the same contract."""
    import os
    import subprocess
    import sys

    import colbert_engine

    code = f"""
import sys
sys.modules["pylate"] = None  # import pylate -> ImportError
import numpy as np
from colbert_engine.integrations.pylate import PyLateIndex
assert PyLateIndex.__mro__[1] is object
rng = np.random.default_rng(0)
docs = [rng.standard_normal((6, 8)).astype(np.float32) for _ in range(30)]
index = PyLateIndex(index_folder={str(tmp_path)!r}, index_name="x", n_centroids=4)
index.add_documents([f"d{{i}}" for i in range(30)], docs)
hits = index(docs[3], k=2)
assert hits[0][0]["id"] == "d3" and set(hits[0][0]) == {{"id", "score"}}, hits
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(colbert_engine.__file__)), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
