"""Codec training: K and sample sizes, seeded chunked k-means, bucket quantiles by
selection, compress/decompress round trip through the ops."""

from __future__ import annotations

import pytest
import torch

from colbert_engine import ops
from colbert_engine.index import codec as C
from colbert_engine.testing import clustered_collection


def test_num_centroids_and_sample_size():
    assert C.num_centroids(1_000_000, 10**7) == 8192  # 16 * 1000 = 16000 -> 2^13
    assert C.num_centroids(100, 10**7) == 128         # 160 -> 2^7
    assert C.num_centroids(1, 10**7) == 16            # clamped up to 16 ...
    assert C.num_centroids(40, 10) == 10              # ... and down to the sample size
    assert C.num_centroids(10**15, 10**12) == 2 ** 18
    assert C.sample_doc_count(10) == 10
    assert C.sample_doc_count(100_000) == 1 + int(16 * (120 * 100_000) ** 0.5)
    with pytest.raises(ValueError):
        C.num_centroids(0, 5)


def test_kmeans_is_seeded_chunked_and_unit(monkeypatch):
    data = clustered_collection(n_docs=60, mean_doc_len=20, dim=32, seed=2).doc_emb
    a = C.kmeans(data, 32, niters=3, seed=7)
    assert torch.equal(a, C.kmeans(data, 32, niters=3, seed=7))
    assert not torch.equal(a, C.kmeans(data, 32, niters=3, seed=8))
    monkeypatch.setattr(C, "_ASSIGN_BUDGET", 32 * 5)  # 5 points per assignment chunk
    assert torch.allclose(a, C.kmeans(data, 32, niters=3, seed=7), atol=1e-5)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(32))
    codes, best = C._assign(data, a)
    assert torch.equal(codes, (data @ a.T).argmax(dim=1))
    # k = n: every point is a centroid
    few = data[:10]
    centroids = C.kmeans(few, 10, niters=2)
    assert torch.allclose(C._assign(few, centroids)[1], torch.ones(10), atol=1e-5)
    with pytest.raises(ValueError, match="k must lie"):
        C.kmeans(few, 11)


def test_bucket_tables_are_quantiles_by_selection():
    values = torch.randn(1001, generator=torch.Generator().manual_seed(0))
    for nbits in (1, 2, 4):
        cutoffs, weights = C.bucket_tables(values, nbits)
        levels = 1 << nbits
        want_c = torch.quantile(values, torch.arange(1, levels) / levels, interpolation="nearest")
        assert torch.allclose(cutoffs, want_c)
        assert weights.shape == (levels,) and bool((weights[1:] >= weights[:-1]).all())
        assert bool((cutoffs[1:] >= cutoffs[:-1]).all())
    # more values than torch.quantile accepts (2^24)
    big = torch.rand((1 << 24) + 16, generator=torch.Generator().manual_seed(1))
    cutoffs, _ = C.bucket_tables(big, 2)
    assert torch.allclose(cutoffs, torch.tensor([0.25, 0.5, 0.75]), atol=0.01)


@pytest.mark.parametrize("dim", [64, 96, 128])
def test_round_trip_error_shrinks_with_bits(dim):
    data = clustered_collection(n_docs=150, mean_doc_len=30, dim=dim, seed=5).doc_emb
    errors = []
    for nbits in (1, 2, 4):
        codec = C.train_codec(data, data.shape[0], nbits, seed=0)
        codes, residuals, inv_norms = ops.compress_residuals(data, codec.centroids, codec.bucket_cutoffs,
                                                            codec.byte_codebook, nbits)
        assert codes.dtype == torch.int32 and residuals.shape == (data.shape[0], dim * nbits // 8)
        back = ops.decompress_residuals(codes, residuals, codec.centroids, codec.byte_codebook, nbits)
        cos = (back * data).sum(dim=1)
        errors.append(float(1 - cos.mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.05 and errors[2] < 0.02


def test_train_codec_checks():
    with pytest.raises(ValueError, match="nbits"):
        C.train_codec(torch.randn(10, 16), 10, 3)
    with pytest.raises(ValueError, match="at least one token"):
        C.train_codec(torch.zeros(0, 16), 0, 2)
    with pytest.raises(ValueError, match="multiple of 8"):
        C.train_codec(torch.randn(10, 12), 10, 2)


def _segment_arrays(index):
    seg = index.segments[0]
    return seg.codes, seg.residuals, seg.inv_norms


def test_probed_build_streamed_equals_packed(tmp_path, monkeypatch):
    # the probed assignment (large K) in k-means and compression, on a small collection
    from colbert_engine import Index
    from colbert_engine.ops import codec as oc

    monkeypatch.setattr(oc, "PROBE_MIN_CENTROIDS", 64)
    data = clustered_collection(n_docs=120, mean_doc_len=40, dim=64, seed=4)
    packed = Index.build(tmp_path / "packed", data.doc_emb, data.doc_offsets, n_centroids=256)
    assert packed.codec.cells is not None and packed.codec.cells.n_cells > 1
    streamed = Index.build(tmp_path / "stream", data.batches(25), n_tokens_hint=data.doc_emb.shape[0],
                           n_centroids=256)
    assert torch.equal(packed.codec.centroids, streamed.codec.centroids)
    for a, b in zip(_segment_arrays(packed), _segment_arrays(streamed)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    # codes are the probed search's over the stored centroids, >= 99.5% the exact argmax
    codes = torch.as_tensor(packed.segments[0].codes).long()
    exact = (packed.codec.rotate(data.doc_emb) @ packed.codec.centroids.T).argmax(1)
    assert float((codes == exact).float().mean()) >= 0.995
    stats = packed.stats()
    for stage in ("sampling", "kmeans", "buckets", "compression", "writing", "total"):
        assert stats[f"build_s_{stage}"] >= 0
    assert stats["build_s_total"] >= stats["build_s_kmeans"]
    # reopened: the split is read from the manifest
    path = packed.path
    packed.close()
    with Index.open(path) as reopened:
        assert reopened.stats()["build_s_total"] == stats["build_s_total"]
    streamed.close()


def test_kmeans_probed_close_to_exact(monkeypatch):
    from colbert_engine.ops import codec as oc

    data = clustered_collection(n_docs=200, mean_doc_len=40, dim=96, seed=6).doc_emb
    exact = C.kmeans(data, 200, niters=3, seed=1, exact=True)
    monkeypatch.setattr(oc, "PROBE_MIN_CENTROIDS", 64)
    probed = C.kmeans(data, 200, niters=3, seed=1)
    err = [float(((data - c[C._assign(data, c)[0]]) ** 2).sum(1).mean()) for c in (exact, probed)]
    assert err[1] <= err[0] * 1.01


def test_build_rejects_nan_vectors_and_empty_streams(tmp_path):
    from colbert_engine import Index

    data = clustered_collection(n_docs=20, mean_doc_len=10, dim=64, seed=1)
    bad = data.doc_emb.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match="doc_emb.*NaN"):
        Index.build(tmp_path / "a", bad, data.doc_offsets)
    with pytest.raises(ValueError, match="doc_emb.*NaN"):
        Index.build(tmp_path / "b", iter([(bad, data.doc_offsets)]))
    with pytest.raises(ValueError, match="doc_emb.*no tokens"):
        Index.build(tmp_path / "c", iter([]))


def test_row_parts_gathers_like_a_concatenation():
    parts = [torch.randn(n, 8) for n in (5, 1, 0, 9)] + [torch.randn(4, 8).half()]
    whole = torch.cat([p.float() for p in parts])
    rows = C.RowParts(parts)
    assert rows.shape == whole.shape
    index = torch.tensor([18, 0, 5, 6, 14, 3, 3, 15])
    assert torch.equal(rows[index], whole[index])
    assert rows[torch.zeros(0, dtype=torch.int64)].shape == (0, 8)
