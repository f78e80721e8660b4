"""Per-dimension bucket tables (cutoffs ``(dim, 2^b - 1)``, weights ``(dim, 2^b)``) through
compress_residuals, decompress_residuals and lut_maxsim, against ops.reference; and the
pooled (ColBERT) tables, which ops/ repeats to dim rows, bit-identical to a pooled lookup."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
from colbert_engine.index.codec import bucket_tables, per_dim_bucket_tables
from colbert_engine.ops import reference

NBITS = [1, 2, 4]
DIMS = [8, 24, 64, 96, 128]


def numpy_unpack(residuals: np.ndarray, dim: int, nbits: int) -> np.ndarray:
    """(T, dim*nbits/8) uint8 -> (T, dim) buckets, from the layout's description
    (bits of a dimension least significant first, bytes most-significant bit first)."""
    bits = np.unpackbits(residuals, axis=1).reshape(residuals.shape[0], dim, nbits).astype(np.int64)
    return (bits << np.arange(nbits)).sum(axis=-1)


@functools.lru_cache(maxsize=None)
def _anisotropic(dim: int, nbits: int, n_centroids: int, seed: int, lloyd_iters: int):
    """Centroids, tokens whose residual spread differs by dimension (scales 0.1 .. 3), and
    per-dimension tables trained by the library (index.codec.per_dim_bucket_tables)."""
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=-1)
    scale = torch.linspace(0.1, 3.0, dim)[torch.randperm(dim, generator=gen)]
    picks = torch.randint(0, n_centroids, (1200,), generator=gen)
    emb = centroids[picks] + 0.3 * scale * torch.randn(picks.numel(), dim, generator=gen) / dim**0.5
    emb = torch.nn.functional.normalize(emb, dim=-1)
    residuals = emb - centroids[(emb @ centroids.T).argmax(1)]
    cutoffs, weights = per_dim_bucket_tables(residuals[:600], nbits, lloyd_iters)
    return centroids, emb[600:].contiguous(), cutoffs, weights


def anisotropic(dim, nbits, n_centroids=29, seed=0, lloyd_iters=2, device="cpu"):
    return tuple(t.to(device) for t in _anisotropic(dim, nbits, n_centroids, seed, lloyd_iters))


def test_tables_have_distinct_rows():
    _, _, cutoffs, weights = anisotropic(64, 2)
    assert cutoffs.shape == (64, 3) and weights.shape == (64, 4)
    assert torch.unique(weights, dim=0).shape[0] == 64
    assert bool((cutoffs[:, 1:] >= cutoffs[:, :-1]).all())


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n_tokens", [0, 1, 257])
def test_compress_per_dim_matches_reference(device, nbits, dim, n_tokens):
    centroids, emb, cutoffs, weights = anisotropic(dim, nbits, device=device)
    emb = emb[:n_tokens]
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    want_codes, want_residuals, want_inv = reference.compress_residuals(emb.cpu(), centroids.cpu(), cutoffs.cpu(),
                                                                      weights.cpu(), nbits)
    same = codes.cpu().long() == want_codes.long()  # GEMM order may break near-ties differently
    assert int(same.sum()) >= n_tokens - 2
    assert torch.equal(residuals.cpu()[same], want_residuals[same])
    torch.testing.assert_close(inv_norms.cpu()[same].float(), want_inv[same].float(), rtol=1e-3, atol=0)
    # Independently of the reference: dimension d's bucket counts row d's cutoffs below r[d].
    r = emb.cpu() - centroids.cpu()[codes.cpu().long()]
    buckets = (r.unsqueeze(-1) > cutoffs.cpu()).sum(-1)
    np.testing.assert_array_equal(numpy_unpack(residuals.cpu().numpy(), dim, nbits), buckets.numpy())


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
def test_decompress_per_dim_matches_reference(device, nbits, dim):
    centroids, _, _, weights = anisotropic(dim, nbits, device=device)
    gen = torch.Generator().manual_seed(dim + nbits)
    n_tokens = 301
    codes = torch.randint(0, centroids.shape[0], (n_tokens,), generator=gen, dtype=torch.int32).to(device)
    residuals = torch.randint(0, 256, (n_tokens, dim * nbits // 8), generator=gen, dtype=torch.uint8).to(device)
    for normalize in (False, True):
        got = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=normalize)
        want = reference.decompress_residuals(codes.cpu(), residuals.cpu(), centroids.cpu(), weights.cpu(), nbits,
                                              normalize=normalize)
        torch.testing.assert_close(got.cpu(), want, atol=1e-6, rtol=1e-6)
    # Exactly C[code, d] + weights[d, bucket]: one fp32 addition, from the numpy layout.
    buckets = numpy_unpack(residuals.cpu().numpy(), dim, nbits)
    w = weights.cpu().numpy()
    expected = centroids.cpu().numpy()[codes.cpu().numpy()] + w[np.arange(dim), buckets]
    got = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", [64, 96, 128])
def test_pooled_expanded_is_bit_identical_to_pooled(device, nbits, dim):
    # ColBERT's pooled tables and the same tables repeated to dim rows give the same bytes,
    # norms and decoded values (what an imported colbert-ai index relies on).
    centroids, emb, _, _ = anisotropic(dim, nbits, device=device)
    r = emb.cpu() - centroids.cpu()[(emb.cpu() @ centroids.cpu().T).argmax(1)]
    cutoffs, weights = (t.to(device) for t in bucket_tables(r, nbits))
    wide_cut, wide_w = cutoffs.expand(dim, -1), weights.expand(dim, -1)
    pooled = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    wide = ops.compress_residuals(emb, centroids, wide_cut, wide_w, nbits)
    for a, b in zip(pooled, wide):
        assert torch.equal(a, b)
    codes, residuals, inv_norms = pooled
    for kwargs in ({"normalize": False}, {"inv_norms": inv_norms}, {}):
        a = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, **kwargs)
        assert torch.equal(a, ops.decompress_residuals(codes, residuals, centroids, wide_w, nbits, **kwargs))
    # The pooled lookup as ColBERT does it: weights[bucket] for every dimension.
    buckets = torch.from_numpy(numpy_unpack(residuals.cpu().numpy(), dim, nbits))
    expected = centroids.cpu()[codes.cpu().long()] + weights.cpu()[buckets]
    assert torch.equal(ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False).cpu(),
                       expected)
    offsets = torch.tensor([0, 5, 5, 120, 299, 600]).to(device)
    queries = torch.nn.functional.normalize(torch.randn(2, 9, dim), dim=-1).to(device)
    scores = (centroids @ queries.transpose(1, 2)).contiguous()
    candidates = torch.tensor([4, 0, 1, 3, 2]).to(device)
    a = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, nbits)
    b = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, wide_w, nbits)
    assert torch.equal(a, b)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize(("dim", "query_len"), [(8, 32), (24, 7), (64, 33), (96, 16), (128, 32)])
def test_lut_maxsim_per_dim_matches_reference(device, nbits, dim, query_len):
    centroids, emb, cutoffs, weights = anisotropic(dim, nbits, device=device)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    offsets = torch.tensor([0, 1, 1, 8, 91, 204, 206, 206, 237, 600]).to(device)
    gen = torch.Generator().manual_seed(query_len)
    queries = torch.nn.functional.normalize(torch.randn(3, query_len, dim, generator=gen), dim=-1).to(device)
    scores = (centroids @ queries.transpose(1, 2)).contiguous()
    candidates = torch.tensor([3, 1, 0, 4, 4, 7, 6, 2, 5, 8]).to(device)
    got = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, nbits)
    want = reference.lut_maxsim(queries.cpu(), scores.cpu(), codes.cpu(), residuals.cpu(), inv_norms.cpu(),
                                offsets.cpu(), candidates.cpu(), weights.cpu(), nbits)
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)
    # ... and equal, to float rounding, to MaxSim over the decoded tokens.
    decoded = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, inv_norms=inv_norms)
    dense = ops.maxsim(queries, decoded, offsets, doc_subset=candidates)
    finite = torch.isfinite(want)
    torch.testing.assert_close(got.cpu()[finite], dense.cpu()[finite], atol=1e-4, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(nbits=st.sampled_from(NBITS), dim=st.sampled_from([8, 16, 24, 64]), n_tokens=st.integers(0, 70),
       lloyd_iters=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_per_dim_round_trip_error_bounded_by_bucket_width(nbits, dim, n_tokens, lloyd_iters, seed):
    centroids, emb, cutoffs, weights = anisotropic(dim, nbits, n_centroids=11, seed=seed % 64,
                                                   lloyd_iters=lloyd_iters)
    emb = emb[:n_tokens]
    codes, residuals, _ = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    decoded = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False)
    residual = emb - centroids[codes.long()]
    buckets = torch.as_tensor(numpy_unpack(residuals.numpy(), dim, nbits))
    # The residual of dimension d lies in its bucket's interval of row d ...
    inf = torch.full((dim, 1), float("inf"))
    lower = torch.cat([-inf, cutoffs], dim=1).gather(1, buckets.T).T if n_tokens else buckets.float()
    upper = torch.cat([cutoffs, inf], dim=1).gather(1, buckets.T).T if n_tokens else buckets.float()
    assert bool(((residual > lower) & (residual <= upper)).all())
    # ... and where that interval is bounded, the weight lies inside it (quantiles and
    # Lloyd-Max means both do), so the decoding error is at most its width.
    error = (decoded - emb).abs()
    inner = torch.isfinite(lower) & torch.isfinite(upper)
    assert bool((error[inner] <= (upper - lower)[inner] + 1e-6).all())


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("nbits", NBITS)
def test_per_dim_quantiles_are_the_pooled_rule_per_column(nbits):
    gen = torch.Generator().manual_seed(nbits)
    residuals = torch.randn(777, 16, generator=gen) * torch.linspace(0.1, 2.0, 16)
    cutoffs, weights = per_dim_bucket_tables(residuals, nbits, lloyd_iters=0)
    for d in (0, 7, 15):
        want_cut, want_w = bucket_tables(residuals[:, d], nbits)
        assert torch.equal(cutoffs[d], want_cut) and torch.equal(weights[d], want_w)


@pytest.mark.parametrize("nbits", NBITS)
def test_lloyd_max_does_not_increase_the_squared_error(nbits):
    gen = torch.Generator().manual_seed(10 + nbits)
    residuals = torch.cat([torch.randn(900, 8, generator=gen) * 0.05, torch.randn(100, 8, generator=gen)], 0)

    def mse(cutoffs, weights):
        buckets = (residuals.unsqueeze(-1) > cutoffs).sum(-1)
        return float(((weights[torch.arange(8), buckets] - residuals) ** 2).mean())

    errors = [mse(*per_dim_bucket_tables(residuals, nbits, lloyd_iters=i)) for i in (0, 1, 4)]
    assert errors[1] <= errors[0] * (1 + 1e-6) and errors[2] <= errors[1] * (1 + 1e-6)


def test_per_dim_tables_reject_bad_arguments():
    with pytest.raises(ValueError, match="residuals"):
        per_dim_bucket_tables(torch.zeros(0, 8), 2)
    with pytest.raises(ValueError, match="lloyd_iters"):
        per_dim_bucket_tables(torch.zeros(4, 8), 2, lloyd_iters=-1)


# ----------------------------------------------------------------------------- bad input


def test_bad_per_dim_tables_name_the_argument():
    centroids, emb, cutoffs, weights = anisotropic(64, 2)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, 2)

    def raises(match, fn, *args):
        with pytest.raises(ValueError, match=match):
            fn(*args)

    compress, decompress = ops.compress_residuals, ops.decompress_residuals
    raises("bucket_cutoffs", compress, emb, centroids, cutoffs[:63], weights, 2)   # rows != dim
    raises("bucket_cutoffs", compress, emb, centroids, cutoffs[:, :2], weights, 2)
    raises("bucket_weights", compress, emb, centroids, cutoffs, weights[:, :3], 2)
    raises("bucket_weights", compress, emb, centroids, cutoffs, weights.T, 2)
    raises("bucket_cutoffs", compress, emb, centroids, cutoffs.unsqueeze(0), weights, 2)  # 3-D
    decreasing = cutoffs.clone()
    decreasing[17] = decreasing[17].flip(0) + torch.tensor([0.0, 0.0, 1.0])
    raises("dimension 17", compress, emb, centroids, decreasing, weights, 2)
    nan = weights.clone()
    nan[3, 1] = float("nan")
    raises("bucket_weights", compress, emb, centroids, cutoffs, nan, 2)
    raises("bucket_weights", decompress, codes, residuals, centroids, nan, 2)
    raises("bucket_weights", decompress, codes, residuals, centroids, weights[:10], 2)
    offsets = torch.tensor([0, 600])
    queries = torch.nn.functional.normalize(torch.randn(1, 4, 64), dim=-1)
    scores = (centroids @ queries.transpose(1, 2)).contiguous()
    raises("bucket_weights", ops.lut_maxsim, queries, scores, codes, residuals, inv_norms, offsets,
           torch.tensor([0]), weights[:, :2], 2)
