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
                                                            codec.bucket_weights, nbits)
        assert codes.dtype == torch.int32 and residuals.shape == (data.shape[0], dim * nbits // 8)
        back = ops.decompress_residuals(codes, residuals, codec.centroids, codec.bucket_weights, nbits)
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
