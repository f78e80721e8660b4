"""Index behaviour: build, search vs exact vs brute force, add, delete, compact, filters,
reopen, streaming, stats, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.testing import clustered_collection
from colbert_engine.ops import reference


def _brute_force(index: Index, queries, k, allowed=None):
    """Reference MaxSim over the reference decompression of every live document, as
    (id, score) lists best first."""
    results = [[] for _ in range(queries.shape[0])]
    for seg in index.segments:
        emb = reference.decompress_residuals(seg.codes, seg.residuals, index.codec.centroids,
                                             index.codec.byte_codebook, index.codec.nbits, inv_norms=seg.inv_norms)
        # the codes live in the codec's space (a "codebook" codec may rotate it)
        scores = reference.maxsim(index.codec.rotate(queries), emb, seg.doc_offsets)  # (nq, n_docs)
        for d in range(seg.n_docs):
            doc_id = seg.doc_base + d
            if (allowed is not None and doc_id not in allowed) or \
                    (index._live is not None and not bool(index._live[doc_id])):
                scores[:, d] = float("-inf")
        for q in range(queries.shape[0]):
            results[q] += [(float(s), seg.doc_base + d) for d, s in enumerate(scores[q].tolist()) if s > -1e30]
    out = []
    for q in range(queries.shape[0]):
        best = sorted(results[q], key=lambda x: -x[0])[:k]
        ext = index._ids.external_ids([d for _, d in best])
        out.append([(ext[d], s) for s, d in best])
    return out


def _ids(results):
    return [[i for i, _ in r] for r in results]


def test_recall_at_default_params(built_index, collection):
    with Index.open(built_index) as index:
        assert index.recall(collection.queries, k=10) >= 0.95
        assert index.recall(collection.queries, k=100) >= 0.9


def test_exact_equals_brute_force(built_index, collection):
    with Index.open(built_index) as index:
        exact = index.search(collection.queries, k=10, exact=True)
        truth = _brute_force(index, collection.queries, 10)
    for got, want in zip(exact, truth):
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4, atol=1e-4)


def test_default_search_scores_are_exact_scores(built_index, collection):
    with Index.open(built_index) as index:
        approx = index.search(collection.queries, k=10)
        truth = _brute_force(index, collection.queries, 600)
    for got, want in zip(approx, truth):
        assert len(got) == 10
        scores = dict(want)
        for doc, score in got:  # stage 4 scores are the exact scores of the returned docs
            assert score == pytest.approx(scores[doc], rel=1e-4, abs=1e-4)
        assert [s for _, s in got] == sorted([s for _, s in got], reverse=True)


def test_single_query_and_numpy_and_fp16(built_index, collection):
    with Index.open(built_index) as index:
        batch = index.search(collection.queries[:3], k=5)
        single = index.search(collection.queries[1], k=5)
        as_numpy = index.search(collection.queries[:3].numpy(), k=5)
        half = index.search(collection.queries[:3].half(), k=5)
    assert single == batch[1]
    assert as_numpy == batch
    assert _ids(half) == _ids(batch) or np.mean([len(set(a) & set(b)) / 5 for a, b in
                                                  zip(_ids(half), _ids(batch))]) > 0.8


def test_reopen_gives_identical_results(built_index, collection):
    with Index.open(built_index) as index:
        first = index.search(collection.queries, k=20)
        first_exact = index.search(collection.queries, k=20, exact=True)
    with Index.open(built_index, verify=False) as index:
        assert index.search(collection.queries, k=20) == first
        assert index.search(collection.queries, k=20, exact=True) == first_exact


def test_stats(built_index, collection):
    with Index.open(built_index) as index:
        stats = index.stats()
    assert stats["docs"] == stats["live_docs"] == collection.n_docs
    assert stats["tokens"] == int(collection.doc_offsets[-1])
    assert stats["nbits"] == 2 and stats["dim"] == 64 and stats["format_version"] == 3
    assert stats["segments"] == 1 and 16 <= stats["centroids"] <= 2 ** 18
    # 4 B code + 16 B residual (64 dims x 2 bits) + 2 B inv_norm + offsets/ivf
    assert 22 <= stats["bytes_per_token"] < 40


def test_add_then_search_finds_new_docs(index_copy, collection):
    new = clustered_collection(n_docs=30, mean_doc_len=40, dim=64, n_queries=6, seed=11)
    with Index.open(index_copy) as index:
        before = index.search(collection.queries, k=10)
        added = index.add(new.doc_emb, new.doc_offsets, ids=[f"new-{i}" for i in range(30)])
        assert added == [f"new-{i}" for i in range(30)]
        assert index.stats()["segments"] == 2 and index.n_docs == collection.n_docs + 30
        # a query made of a new document's own tokens finds that document first
        t0, t1 = int(new.doc_offsets[4]), int(new.doc_offsets[5])
        own = new.doc_emb[t0:t1][:32]
        assert index.search(own, k=3)[0][0] == "new-4"
        assert index.search(own, k=3, exact=True)[0][0] == "new-4"
        assert index.recall(new.queries, k=10) >= 0.9
        after = index.search(collection.queries, k=10)
    with Index.open(index_copy) as index:  # the add is durable
        assert index.search(collection.queries, k=10) == after
        assert index.search(own, k=1)[0][0] == "new-4"
    # old documents keep their scores; new ones may enter the top 10
    for b, a in zip(before, after):
        old = dict(b)
        for doc, score in a:
            if doc in old:
                assert score == pytest.approx(old[doc], abs=1e-5)


def test_add_default_ids_continue_numbering(tmp_path, collection):
    index = Index.build(tmp_path / "i", collection.doc_emb[:4000], torch.tensor([0, 1000, 2500, 4000]))
    added = index.add(collection.doc_emb[:100], torch.tensor([0, 60, 100]))
    assert added == [3, 4]
    assert index.search(collection.doc_emb[2500:2532], k=1)[0][0] == 2
    with pytest.raises(ValueError, match="already in the index"):
        index.add(collection.doc_emb[:10], torch.tensor([0, 10]), ids=[2])
    with pytest.raises(ValueError, match="dim"):
        index.add(torch.randn(10, 32), torch.tensor([0, 10]))
    assert index.n_docs == 5  # failed adds changed nothing
    index.close()


def test_delete_never_returns_deleted_and_keeps_others(index_copy, collection):
    with Index.open(index_copy) as index:
        before = index.search(collection.queries, k=10, exact=True)
        victims = {before[q][0][0] for q in range(0, 24, 2)} | {"doc-5", "doc-7"}
        assert index.delete(list(victims) + ["no-such-id"]) == len(victims)
        assert index.delete(["doc-5"]) == 0  # already deleted
        for exact in (False, True):
            for results in index.search(collection.queries, k=50, exact=exact):
                assert not victims & {i for i, _ in results}
        after = index.search(collection.queries, k=10, exact=True)
        assert index.stats()["live_docs"] == collection.n_docs - len(victims)
    for b, a in zip(before, after):
        kept = [x for x in b if x[0] not in victims]
        assert a[:len(kept)] == kept  # survivors keep their ids, scores and order
    with Index.open(index_copy) as index:  # durable
        assert index.search(collection.queries, k=10, exact=True) == after
        # re-adding a deleted id is allowed: it is a new document
        t0, t1 = int(collection.doc_offsets[5]), int(collection.doc_offsets[6])
        index.add(collection.doc_emb[t0:t1], torch.tensor([0, t1 - t0]), ids=["doc-5"])
        assert index.search(collection.doc_emb[t0:t1], k=1, exact=True)[0][0] == "doc-5"


def test_compact_keeps_results(index_copy, collection):
    new = clustered_collection(n_docs=20, mean_doc_len=40, dim=64, n_queries=2, seed=5)
    with Index.open(index_copy) as index:
        index.add(new.doc_emb, new.doc_offsets, ids=[f"n{i}" for i in range(20)])
        index.delete(["doc-1", "doc-2", "n3"] + [f"doc-{i}" for i in range(100, 200)])
        exact = index.search(collection.queries, k=10, exact=True)
        approx = index.search(collection.queries, k=10)
        live = index.n_live
        index.compact()
        stats = index.stats()
        assert stats["segments"] == 1 and stats["docs"] == stats["live_docs"] == live
        assert stats["deleted_docs"] == 0
        assert index.search(collection.queries, k=10, exact=True) == exact
        compacted = index.search(collection.queries, k=10)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(_ids(compacted), _ids(approx))])
        assert overlap >= 0.9  # one segment instead of two: the funnel may differ slightly
    with Index.open(index_copy) as index:
        assert index.search(collection.queries, k=10, exact=True) == exact
        assert index.metadata(["doc-3", "doc-1"]) == [{"lang": "de", "n": 3}, None]
    files = sorted(p.name for p in index_copy.iterdir())
    assert not [f for f in files if f.startswith("seg000001") or f.endswith(".tmp")]


def test_filter_sql_returns_matching_docs_and_the_best_of_them(built_index, collection):
    with Index.open(built_index) as index:
        where = ("json_extract(metadata, '$.lang') = ?", ["de"])
        got = index.search(collection.queries, k=10, filter=where)
        got_exact = index.search(collection.queries, k=10, exact=True, filter=where)
        allowed = {i for i in range(collection.n_docs) if i % 3 == 0}
        truth = _brute_force(index, collection.queries, 10, allowed=allowed)
        unfiltered = index.search(collection.queries, k=10)
        assert index.recall(collection.queries, k=10, filter=where) >= 0.9
        odd = index.search(collection.queries, k=5, filter=("json_extract(metadata, '$.n') % 2 = ? AND id != ?",
                                                            [1, "doc-1"]))
    for results in got + got_exact:
        assert len(results) == 10
        assert all(int(i.split("-")[1]) % 3 == 0 for i, _ in results)
    assert _ids(got_exact) == _ids(truth)
    # the best matching doc is found, not leftovers of an unfiltered top 10
    assert np.mean([g[0][0] == t[0][0] for g, t in zip(got, truth)]) >= 0.9
    assert _ids(got) != _ids(unfiltered)
    for results in odd:
        assert all(int(i.split("-")[1]) % 2 == 1 and i != "doc-1" for i, _ in results)
    with Index.open(built_index) as index:  # named parameters
        named = index.search(collection.queries, k=10, filter=("json_extract(metadata, '$.lang') = :lang",
                                                               {"lang": "de"}))
    assert named == got


def test_filter_id_list(built_index, collection):
    chosen = [f"doc-{i}" for i in range(0, 600, 7)] + ["unknown"]
    with Index.open(built_index) as index:
        for exact in (False, True):
            for results in index.search(collection.queries, k=5, exact=exact, filter=chosen):
                assert {i for i, _ in results} <= set(chosen)
        assert index.search(collection.queries[0], k=5, filter=[]) == []
        with pytest.raises(ValueError, match="SQL error"):
            index.search(collection.queries, filter=("no_such_column = ?", [1]))
        with pytest.raises(ValueError, match="SQL error"):  # filters cannot write
            index.search(collection.queries, filter="1); DELETE FROM docs; SELECT (1")


def test_streaming_build_equals_packed_build(tmp_path):
    collection = clustered_collection(n_docs=200, mean_doc_len=30, dim=64, n_queries=8, seed=4)
    packed = Index.build(tmp_path / "packed", collection.doc_emb, collection.doc_offsets)
    batches = ((e, o, list(range(i * 50, i * 50 + o.numel() - 1))) for i, (e, o) in
               enumerate(collection.batches(50)))
    streamed = Index.build(tmp_path / "stream", batches)
    assert torch.equal(packed.codec.centroids, streamed.codec.centroids)
    assert packed.search(collection.queries, k=10) == streamed.search(collection.queries, k=10)
    # a stream longer than the training buffer: codec from the first batches only
    small = Index.build(tmp_path / "small", collection.batches(50), train_buffer_tokens=2000,
                        n_tokens_hint=int(collection.doc_offsets[-1]))
    assert small.n_docs == collection.n_docs
    assert small.recall(collection.queries, k=10) >= 0.9
    for index in (packed, streamed, small):
        index.close()


@pytest.mark.parametrize("nbits", [1, 4])
def test_other_nbits_and_tiny_corpus(tmp_path, nbits):
    data = clustered_collection(n_docs=12, mean_doc_len=6, dim=32, n_queries=3, seed=1)
    index = Index.build(tmp_path / "tiny", data.doc_emb, data.doc_offsets, nbits=nbits)
    assert index.stats()["centroids"] <= int(data.doc_offsets[-1])
    assert _ids(index.search(data.queries, k=3)) == _ids(index.search(data.queries, k=3, exact=True))
    assert len(index.search(data.queries[0], k=100, exact=True)) == 12
    index.close()


def test_empty_documents_are_never_returned(tmp_path):
    emb = torch.nn.functional.normalize(torch.randn(50, 32), dim=1)
    offsets = torch.tensor([0, 0, 20, 20, 50, 50])
    index = Index.build(tmp_path / "e", emb, offsets)
    assert sorted(i for i, _ in index.search(emb[:8], k=10, exact=True)) == [1, 3]
    assert {i for i, _ in index.search(emb[:8], k=10, nprobe=100)} <= {1, 3}
    index.close()


def test_bad_inputs(tmp_path, built_index, collection):
    with pytest.raises(ValueError, match="nbits"):
        Index.build(tmp_path / "a", collection.doc_emb, collection.doc_offsets, nbits=3)
    with pytest.raises(ValueError, match="doc_offsets"):
        Index.build(tmp_path / "b", collection.doc_emb, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="no tokens"):
        Index.build(tmp_path / "c", torch.zeros(0, 64), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="ids: 2 entries"):
        Index.build(tmp_path / "d", collection.doc_emb[:10], torch.tensor([0, 4, 10, 10]), ids=["a", "b"])
    with pytest.raises(ValueError, match="already in the index"):
        Index.build(tmp_path / "e", collection.doc_emb[:10], torch.tensor([0, 4, 10]), ids=["a", "a"])
    with pytest.raises(TypeError, match="ids"):
        Index.build(tmp_path / "f", collection.doc_emb[:10], torch.tensor([0, 4, 10]), ids=[1.5, 2])
    with pytest.raises(ValueError, match="already holds an index"):
        Index.build(built_index, collection.doc_emb, collection.doc_offsets)
    with Index.open(built_index) as index:
        with pytest.raises(ValueError, match="queries"):
            index.search(torch.randn(2, 4, 32))
        with pytest.raises(ValueError, match="k"):
            index.search(collection.queries, k=0)
        with pytest.raises(ValueError, match="NaN"):
            index.search(torch.full((4, 64), float("nan")))
    with pytest.raises(ValueError, match="device"):
        Index.open(built_index, device="meta")


def test_ops_are_the_kernels():
    # the hot path calls the C++ ops, never the references
    import colbert_engine.search.searcher as searcher

    assert searcher.plaid_ops is ops.plaid
    assert searcher.lut_maxsim_launch.__module__ == "colbert_engine.ops.lut_maxsim"


@pytest.mark.gpu
def test_cuda_index_matches_cpu(built_index, collection, tmp_path):
    with Index.open(built_index) as cpu, Index.open(built_index, device="cuda") as gpu:
        assert gpu.segments[0].codes.device.type == "cuda"
        want, got = cpu.search(collection.queries, k=10), gpu.search(collection.queries, k=10)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(_ids(want), _ids(got))]) >= 0.95
        assert _ids(cpu.search(collection.queries, k=10, exact=True)) == \
            _ids(gpu.search(collection.queries, k=10, exact=True))
        where = ("json_extract(metadata, '$.lang') = ?", ["de"])
        for results in gpu.search(collection.queries, k=5, filter=where):
            assert all(int(i.split("-")[1]) % 3 == 0 for i, _ in results)
    built = Index.build(tmp_path / "g", collection.doc_emb, collection.doc_offsets, device="cuda")
    assert built.recall(collection.queries, k=10) >= 0.95
    built.close()


def test_selective_filter_returns_min_k_matches(built_index, collection):
    # Two matching documents anywhere in the collection: both come back, whatever cells
    # the queries probe, with the exact scores.
    with Index.open(built_index) as index:
        far = index.search(collection.queries[:1], k=50, exact=True)[0][-2:]  # query 0's 49th and 50th
        wanted = {doc_id for doc_id, _ in far}
        got = index.search(collection.queries, k=10, filter=list(wanted))
        exact = index.search(collection.queries, k=10, exact=True, filter=list(wanted))
    for row, row_exact in zip(got, exact):
        assert {doc_id for doc_id, _ in row} == wanted
        assert [d for d, _ in row] == [d for d, _ in row_exact]
        for (_, score), (_, score_exact) in zip(row, row_exact):
            assert score == pytest.approx(score_exact, rel=1e-4, abs=1e-4)


def test_search_sizes_must_be_ints(built_index, collection):
    """nprobe=1.7 used to be truncated to 1, k=1.5 / k="3" failed inside torch, and a NaN
    centroid_score_threshold silently disabled pruning."""
    with Index.open(built_index) as index:
        for name, value in (("k", 1.5), ("k", "3"), ("nprobe", 1.7), ("nprobe", "x"), ("ndocs", 2.0),
                            ("k", True)):
            with pytest.raises(TypeError, match=name):
                index.search(collection.queries, **{name: value})
        with pytest.raises(TypeError, match="k"):
            index.search(collection.queries, k=1.5, exact=True)
        with pytest.raises(ValueError, match="ndocs"):
            index.search(collection.queries, ndocs=0)
        for value in (float("nan"), float("inf"), "a"):
            with pytest.raises(ValueError, match="centroid_score_threshold"):
                index.search(collection.queries, centroid_score_threshold=value)
        assert index.search(collection.queries, k=np.int64(3), nprobe=np.int32(2)) == \
            index.search(collection.queries, k=3, nprobe=2)


def test_id_collections_are_checked(index_copy, collection):
    """A bare str/bytes or a non-iterable where a collection of ids is expected is a TypeError
    naming the argument (metadata("x") used to look up "x" letter by letter, delete(b"..")
    deleted the ids of its byte values, filter=5 failed with "'int' object is not iterable")."""
    with Index.open(index_copy) as index:
        n_live = index.n_live
        with pytest.raises(TypeError, match="ids"):
            index.metadata("0")
        with pytest.raises(TypeError, match="ids"):
            index.delete(b"\x00\x01")
        with pytest.raises(TypeError, match="ids"):
            index.delete(object())
        with pytest.raises(TypeError, match="filter"):
            index.search(collection.queries, filter=5)
        assert index.n_live == n_live
    with pytest.raises(ValueError, match="device"):
        Index.open(index_copy, device="tpu")


def test_build_rejects_bad_kmeans_settings(collection, tmp_path):
    """n_centroids=0 used to fail inside k-means as "kmeans: k must lie in ..." and
    kmeans_niters=-1 was accepted silently."""
    emb, offsets = collection.doc_emb[:40], torch.tensor([0, 20, 40])
    with pytest.raises(ValueError, match="n_centroids"):
        Index.build(tmp_path / "a", emb, offsets, n_centroids=0)
    with pytest.raises(TypeError, match="n_centroids"):
        Index.build(tmp_path / "b", emb, offsets, n_centroids=4.5)
    with pytest.raises(ValueError, match="kmeans_niters"):
        Index.build(tmp_path / "c", emb, offsets, kmeans_niters=-1)


def test_metadata_must_be_strict_json(index_copy, collection):
    """Metadata holding NaN used to be stored as non-JSON, after which every json_extract
    filter on the index failed with "malformed JSON"; nothing is added now."""
    emb, offsets = collection.doc_emb[:10], torch.tensor([0, 4, 10])
    with Index.open(index_copy) as index:
        n_docs = index.n_docs
        with pytest.raises(ValueError, match="metadata"):
            index.add(emb, offsets, ids=["nan-a", "nan-b"], metadata=[{"lang": float("nan")}, None])
        with pytest.raises(TypeError, match="metadata"):
            index.add(emb, offsets, ids=["obj-a", "obj-b"], metadata=[{"lang": object()}, None])
        assert index.n_docs == n_docs
        index.search(collection.queries, filter=("json_extract(metadata, '$.lang') = ?", ["de"]))
        assert index.add(emb, offsets, ids=["nan-a", "nan-b"]) == ["nan-a", "nan-b"]


def test_closed_index_says_so(index_copy, collection):
    """Every call on a closed Index used to fail with "'NoneType' object has no attribute ..."
    (or search_internal returned nothing)."""
    index = Index.open(index_copy)
    index.close()
    emb, offsets = collection.doc_emb[:10], torch.tensor([0, 4, 10])
    for call in (lambda: index.search(collection.queries), lambda: index.search_internal(collection.queries),
                 lambda: index.metadata(["doc-1"]), lambda: index.add(emb, offsets), lambda: index.delete("doc-1"),
                 index.compact):
        with pytest.raises(ValueError, match="closed"):
            call()
    index.close()  # closing twice is fine


def test_runaway_filter_is_interrupted(built_index, collection, monkeypatch):
    """A WHERE clause that never ends (a recursive CTE) used to hang search; one that builds
    a gigabyte blob allocated it."""
    from colbert_engine.index import ids as ids_module

    monkeypatch.setattr(ids_module, "FILTER_TIMEOUT_S", 0.5)
    endless = "id IN (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)"
    with Index.open(built_index) as index:
        with pytest.raises(ValueError, match="interrupted"):
            index.search(collection.queries, filter=endless)
        with pytest.raises(ValueError, match="filter"):
            index.search(collection.queries, filter="length(randomblob(1000000000)) > 0")
        assert index.search(collection.queries, k=3, filter=("json_extract(metadata, '$.lang') = ?", ["de"]))


def test_filter_parameters_must_be_a_sequence_or_dict(built_index, collection):
    """("... = ?", "de") bound "d" and "e" ("2 supplied"); ("...", None) failed in tuple()."""
    clause = "json_extract(metadata, '$.lang') = ?"
    with Index.open(built_index) as index:
        for params in ("de", 5):
            with pytest.raises(TypeError, match="filter: parameters"):
                index.search(collection.queries, filter=(clause, params))
        assert index.search(collection.queries, filter=("id = 'doc-1'", None)) == \
            index.search(collection.queries, filter="id = 'doc-1'")


def test_ndocs_below_k_still_returns_k(built_index, collection):
    with Index.open(built_index) as index:
        got = index.search(collection.queries[:3], k=5, ndocs=1)
    assert all(len(row) == 5 for row in got)
