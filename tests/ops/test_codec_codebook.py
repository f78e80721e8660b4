"""The byte codebook (one decoding contract for every layout, csrc/common/codec.h): scalar
tables expanded by ops.codec.byte_codebook decode bit-identically to a per-bucket lookup;
product-quantized codebooks encode each byte as the nearest codeword; compress,
decompress and lut_maxsim against ops.reference on awkward sizes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
from colbert_engine.index.codec import per_dim_bucket_tables, train_residual_codebook
from colbert_engine.ops import reference
from colbert_engine.ops.codec import byte_codebook

NBITS = [1, 2, 4]
DIMS = [8, 24, 64, 96, 128]


def numpy_unpack(residuals: np.ndarray, dim: int, nbits: int) -> np.ndarray:
    """(T, dim*nbits/8) uint8 -> (T, dim) buckets, from the layout's description."""
    bits = np.unpackbits(residuals, axis=1).reshape(residuals.shape[0], dim, nbits).astype(np.int64)
    return (bits << np.arange(nbits)).sum(axis=-1)


@functools.lru_cache(maxsize=None)
def _collection(dim: int, nbits: int, seed: int):
    """Centroids, tokens with per-dimension residual spread, per-dimension tables and a
    product-quantized codebook trained by the library on held-out residuals."""
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(23, dim, generator=gen), dim=-1)
    scale = torch.linspace(0.1, 3.0, dim)[torch.randperm(dim, generator=gen)]
    picks = torch.randint(0, 23, (1400,), generator=gen)
    emb = centroids[picks] + 0.3 * scale * torch.randn(picks.numel(), dim, generator=gen) / dim**0.5
    emb = torch.nn.functional.normalize(emb, dim=-1)
    residuals = emb - centroids[(emb @ centroids.T).argmax(1)]
    cutoffs, weights = per_dim_bucket_tables(residuals[:800], nbits, 2)
    codebook = train_residual_codebook(residuals[:800], nbits, iters=3)
    return centroids, emb[800:].contiguous(), cutoffs, weights, codebook


def collection(dim, nbits, seed=0, device="cpu"):
    return tuple(t.to(device) for t in _collection(dim, nbits, seed))


def assert_nearest(emb, centroids, codes, packed, codebook, atol=1e-6):
    """Every byte is a nearest codeword of its residual sub-vector (to float rounding)."""
    positions, _, per_byte = codebook.shape
    r = (emb.float() - centroids.float()[codes.long()]).reshape(-1, positions, 1, per_byte)
    dist = ((r - codebook.float().unsqueeze(0)) ** 2).sum(-1)                   # (T, P, 256)
    chosen = dist.gather(2, packed.long().unsqueeze(-1)).squeeze(-1)
    assert bool((chosen <= dist.min(dim=-1).values + atol).all())


# ----------------------------------------------------------------------------- expansion


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
def test_byte_codebook_matches_reference_and_numpy_layout(nbits, dim):
    gen = torch.Generator().manual_seed(dim + nbits)
    for weights in (torch.randn(dim, 1 << nbits, generator=gen), torch.randn(1 << nbits, generator=gen)):
        got = byte_codebook(weights, nbits, dim)
        assert got.shape == (dim * nbits // 8, 256, 8 // nbits) and got.dtype == torch.float32
        assert torch.equal(got, reference.byte_codebook(weights, nbits, dim))
        # entry [p, v, j] is the weight of the bucket numpy's unpacking reads for byte v
        per_row = reference.per_dim_table(weights, dim)
        buckets = numpy_unpack(np.full((256, dim * nbits // 8), np.arange(256)[:, None], dtype=np.uint8), dim, nbits)
        want = per_row[torch.arange(dim), torch.from_numpy(buckets)]              # (256, dim)
        assert torch.equal(got.permute(1, 0, 2).reshape(256, dim), want)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", [64, 96, 128])
def test_scalar_tables_are_bit_identical_through_the_codebook(device, nbits, dim):
    """Scalar layouts keep their exact codes: compress, decompress and lut_maxsim given the
    tables equal what they give with the expanded codebook, and decoding equals a
    per-bucket lookup of the weights (imported colbert-ai indexes decode as before)."""
    centroids, emb, cutoffs, weights, _ = collection(dim, nbits, device=device)
    for w, cut in ((weights, cutoffs), (weights[3], cutoffs[3])):      # per dimension, pooled
        codebook = byte_codebook(w, nbits, dim)
        codes, packed, inv = ops.compress_residuals(emb, centroids, cut, w, nbits)
        for got, want in zip(ops.compress_residuals(emb, centroids, cut, codebook, nbits), (codes, packed, inv)):
            assert torch.equal(got, want)
        buckets = torch.from_numpy(numpy_unpack(packed.cpu().numpy(), dim, nbits)).to(device)
        lookup = centroids[codes.long()] + reference.per_dim_table(w, dim).to(device)[torch.arange(dim), buckets]
        decoded = ops.decompress_residuals(codes, packed, centroids, w, nbits, normalize=False)
        assert torch.equal(decoded, lookup)
        assert torch.equal(ops.decompress_residuals(codes, packed, centroids, codebook, nbits, normalize=False), lookup)
        norms = torch.linalg.vector_norm(lookup, dim=1)
        torch.testing.assert_close(inv.float(), (1 / norms).half().float(), rtol=1e-3, atol=0)
        queries = torch.nn.functional.normalize(torch.randn(2, 9, dim, device=device), dim=-1)
        scores = ops.centroid_scores(queries, centroids)
        offsets = torch.tensor([0, 10, 10, 250, 600], device=device)
        candidates = torch.tensor([3, 0, 1, 2], device=device)
        by_tables = ops.lut_maxsim(queries, scores, codes, packed, inv, offsets, candidates, w, nbits)
        by_codebook = ops.lut_maxsim(queries, scores, codes, packed, inv, offsets, candidates, codebook, nbits)
        assert torch.equal(by_tables, by_codebook)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n_tokens", [0, 1, 257])
def test_compress_codebook_matches_reference(device, nbits, dim, n_tokens):
    centroids, emb, _, _, codebook = collection(dim, nbits, device=device)
    emb = emb[:n_tokens]
    codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, nbits)
    want_codes, want_packed, want_inv = reference.compress_residuals(emb.cpu(), centroids.cpu(), None, codebook.cpu(),
                                                                     nbits)
    assert packed.shape == (n_tokens, dim * nbits // 8) and packed.dtype == torch.uint8
    assert torch.equal(codes.cpu(), want_codes)
    assert_nearest(emb, centroids, codes, packed, codebook)
    same = (packed.cpu() == want_packed).all(dim=1)
    assert float(same.float().mean() if n_tokens else 1.0) > 0.95  # differences only at near-ties
    torch.testing.assert_close(inv.cpu()[same].float(), want_inv[same].float(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
def test_decompress_codebook_matches_reference(device, nbits, dim):
    centroids, emb, _, _, codebook = collection(dim, nbits, device=device)
    codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, nbits)
    for normalize, inv_norms in ((False, None), (True, None), (True, inv)):
        got = ops.decompress_residuals(codes, packed, centroids, codebook, nbits, normalize, inv_norms=inv_norms)
        want = reference.decompress_residuals(codes.cpu(), packed.cpu(), centroids.cpu(), codebook.cpu(), nbits,
                                              normalize, inv_norms=None if inv_norms is None else inv_norms.cpu())
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)
    # the stored inverse norm is the decoded vector's
    decoded = ops.decompress_residuals(codes, packed, centroids, codebook, nbits, normalize=False)
    torch.testing.assert_close(inv.float(), (1 / torch.linalg.vector_norm(decoded, dim=1)).half().float(),
                               rtol=1e-3, atol=0)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize(("dim", "query_len"), [(8, 32), (24, 7), (64, 33), (96, 16), (128, 32)])
def test_lut_maxsim_codebook_matches_reference_and_decompression(device, nbits, dim, query_len):
    centroids, emb, _, _, codebook = collection(dim, nbits, device=device)
    codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, nbits)
    offsets = torch.tensor([0, 0, 17, 40, 41, 300, 600], device=device)
    candidates = torch.tensor([5, 0, 2, 1, 4, 3], device=device)
    queries = torch.nn.functional.normalize(torch.randn(3, query_len, dim, device=device), dim=-1)
    scores = ops.centroid_scores(queries, centroids)
    got = ops.lut_maxsim(queries, scores, codes, packed, inv, offsets, candidates, codebook, nbits)
    want = reference.lut_maxsim(queries.cpu(), scores.cpu(), codes.cpu(), packed.cpu(), inv.cpu(), offsets.cpu(),
                                candidates.cpu(), codebook.cpu(), nbits)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-4)
    decoded = ops.decompress_residuals(codes, packed, centroids, codebook, nbits, inv_norms=inv)
    torch.testing.assert_close(got, ops.maxsim(queries, decoded, offsets, doc_subset=candidates), rtol=1e-5, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(nbits=st.sampled_from(NBITS), dim=st.sampled_from([8, 16, 24, 64]), n_tokens=st.integers(0, 60),
       n_words=st.integers(1, 256), seed=st.integers(0, 2**16))
def test_encode_recovers_the_codewords_it_was_built_from(nbits, dim, n_tokens, n_words, seed):
    """Tokens built as centroid + one codeword per byte position encode to exactly those
    codewords (distinct codewords, zero distance), decode to the same vectors, and the
    unused codewords' slots never win; duplicated codewords resolve to the lowest index."""
    gen = torch.Generator().manual_seed(seed)
    positions, per_byte = dim * nbits // 8, 8 // nbits
    centroids = torch.zeros(1, dim)  # residual == token exactly
    # codewords on a grid of multiples of 1/8: exact in fp32, distinct per position
    codebook = torch.randint(-64, 64, (positions, 256, per_byte), generator=gen) / 8.0
    codebook[:, :, 0] = torch.arange(256) / 8.0 - 16.0
    chosen = torch.randint(0, n_words, (n_tokens, positions), generator=gen)
    emb = codebook[torch.arange(positions), chosen].reshape(n_tokens, dim)
    codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, nbits)
    assert torch.equal(packed.long(), chosen)
    assert torch.equal(packed, reference.nearest_codewords(emb, codebook))
    decoded = ops.decompress_residuals(codes, packed, centroids, codebook, nbits, normalize=False)
    assert torch.equal(decoded, emb)
    # a duplicate of the winning codeword at a higher index never wins; at a lower one, it does
    if n_tokens:
        dup = codebook.clone()
        p, v = 0, int(packed[0, 0])
        dup[p, 255 if v != 255 else 0] = dup[p, v]
        again = ops.compress_residuals(emb[:1], centroids, None, dup, nbits)[1]
        assert int(again[0, 0]) == min(v, 255 if v != 255 else 0)


def test_codebook_training_is_seeded_and_lowers_the_error():
    centroids, emb, _, weights, _ = collection(64, 2)
    residuals = emb - centroids[(emb @ centroids.T).argmax(1)]
    a = train_residual_codebook(residuals, 2, iters=4, seed=3)
    assert torch.equal(a, train_residual_codebook(residuals, 2, iters=4, seed=3))
    assert a.shape == (16, 256, 4) and bool(torch.isfinite(a).all())

    def error(codebook):
        zero = torch.zeros(1, 64)
        _, packed, _ = ops.compress_residuals(residuals, zero, None, codebook, 2)
        return float(((ops.decompress_residuals(torch.zeros(len(residuals), dtype=torch.int32), packed, zero, codebook,
                                                2, normalize=False) - residuals) ** 2).sum())

    # k-means from the per-dimension grid never does worse than the grid itself
    grid = byte_codebook(weights, 2, 64)
    assert error(train_residual_codebook(residuals, 2, iters=3, init=grid)) <= error(grid) + 1e-6
    # fewer residuals than codewords: empty codewords keep their place, nothing is NaN
    few = train_residual_codebook(residuals[:40], 2, iters=3)
    assert bool(torch.isfinite(few).all())


def test_bad_codebooks_name_the_argument():
    centroids, emb, cutoffs, weights, codebook = collection(64, 2)
    codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, 2)
    with pytest.raises(ValueError, match=r"bucket_weights.*\(16, 256, 4\)"):
        ops.decompress_residuals(codes, packed, centroids, codebook[:, :128], 2)
    bad = codebook.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="bucket_weights"):
        ops.decompress_residuals(codes, packed, centroids, bad, 2)
    with pytest.raises(ValueError, match="bucket_weights"):
        ops.lut_maxsim(torch.randn(4, 64), torch.randn(23, 4), codes, packed, inv, torch.tensor([0, len(codes)]),
                       torch.tensor([0]), codebook[:8], 2)
    with pytest.raises(ValueError, match="bucket_cutoffs"):
        ops.compress_residuals(emb, centroids, None, weights, 2)  # nearest codeword needs a codebook
    with pytest.raises(TypeError, match="bucket_weights"):
        ops.compress_residuals(emb, centroids, None, codebook.to(torch.int32), 2)
    with pytest.raises(ValueError, match="init"):
        train_residual_codebook(emb, 2, init=codebook[:3])
    with pytest.raises(ValueError, match="residuals"):
        train_residual_codebook(emb[:0], 2)
