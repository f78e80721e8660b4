"""ops.compress_residuals / ops.decompress_residuals against ops.reference and against a
numpy implementation of ColBERT's bit layout written from its description (DESIGN.md 4):
per dimension the bucket's nbits bits least significant first, dimensions in order, the
bit stream packed most-significant bit first into bytes (numpy packbits)."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
from colbert_engine.ops import reference

NBITS = [1, 2, 4]
DIMS = [8, 24, 64, 96, 128]


# ----------------------------------------------------------------------------- helpers


def numpy_pack(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """(T, dim) bucket indices -> (T, dim*nbits/8) uint8, from the layout's description."""
    bits = (buckets[..., None] >> np.arange(nbits)) & 1            # LSB first per dimension
    return np.packbits(bits.reshape(buckets.shape[0], -1).astype(np.uint8), axis=1)  # MSB-first bytes


def numpy_unpack(residuals: np.ndarray, dim: int, nbits: int) -> np.ndarray:
    bits = np.unpackbits(residuals, axis=1).reshape(residuals.shape[0], dim, nbits).astype(np.int64)
    return (bits << np.arange(nbits)).sum(axis=-1)


def colbert_table_decode(nbits: int) -> np.ndarray:
    """(256, 8/nbits) buckets per byte the way ColBERT's decompression works: reverse the
    bits inside each nbits-wide group of the byte, then index the table of all key tuples
    in itertools.product order (first key most significant)."""
    per_byte, mask = 8 // nbits, (1 << nbits) - 1
    product_table = list(itertools.product(range(1 << nbits), repeat=per_byte))
    out = np.zeros((256, per_byte), dtype=np.int64)
    for byte in range(256):
        reversed_byte = 0
        for g in range(per_byte):
            group = (byte >> (8 - nbits * (g + 1))) & mask
            flipped = int(format(group, f"0{nbits}b")[::-1], 2)
            reversed_byte |= flipped << (8 - nbits * (g + 1))
        out[byte] = product_table[reversed_byte]
    return out


def make_codec(dim, nbits, n_centroids=37, seed=0, device="cpu"):
    """Unit-norm centroids, and buckets at residual quantiles as in DESIGN.md 4."""
    return tuple(t.to(device) for t in _make_codec(dim, nbits, n_centroids, seed))


@functools.lru_cache(maxsize=None)
def _make_codec(dim, nbits, n_centroids, seed):
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=-1)
    sample = sample_tokens(centroids, 500, gen)
    residual = (sample - centroids[(sample @ centroids.T).argmax(1)]).flatten()
    n = 1 << nbits
    cutoffs = torch.quantile(residual, torch.arange(1, n) / n)
    weights = torch.quantile(residual, (torch.arange(n) + 0.5) / n)
    return centroids, cutoffs, weights


def sample_tokens(centroids, n_tokens, gen):
    """Unit vectors near the centroids, like real token embeddings."""
    picks = torch.randint(0, centroids.shape[0], (n_tokens,), generator=gen)
    noise = 0.3 * torch.randn(n_tokens, centroids.shape[1], generator=gen) / centroids.shape[1] ** 0.5
    return torch.nn.functional.normalize(centroids[picks] + noise, dim=-1)


def tokens(centroids, n_tokens, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return sample_tokens(centroids.cpu(), n_tokens, gen).to(device=centroids.device, dtype=dtype)


def assert_codes_match(got, want, emb, centroids):
    """Codes equal, except where two centroids tie to float rounding (GEMM summation order)."""
    differ = (got.long() != want.long()).nonzero().flatten()
    if differ.numel():
        sims = emb.float()[differ] @ centroids.float().T
        gap = (sims.gather(1, want.long()[differ, None]) - sims.gather(1, got.long()[differ, None])).abs()
        assert bool((gap < 1e-5).all()), f"codes differ beyond ties at rows {differ.tolist()[:10]}"
    return differ


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("nbits", NBITS)
def test_colbert_table_decoding_equals_numpy_layout(nbits):
    # Every byte value decodes to the same buckets through ColBERT's tables and through
    # numpy.unpackbits of our layout.
    every_byte = np.arange(256, dtype=np.uint8)[:, None]
    per_byte = 8 // nbits
    np.testing.assert_array_equal(numpy_unpack(every_byte, per_byte, nbits), colbert_table_decode(nbits))


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
def test_residual_bytes_match_numpy_layout(device, nbits, dim):
    centroids, cutoffs, weights = make_codec(dim, nbits, device=device)
    emb = tokens(centroids, 1025)
    codes, residuals, _ = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    buckets = torch.bucketize(emb.cpu() - centroids.cpu()[codes.cpu().long()], cutoffs.cpu())
    expected = numpy_pack(buckets.numpy(), nbits)
    np.testing.assert_array_equal(residuals.cpu().numpy(), expected)
    np.testing.assert_array_equal(numpy_unpack(residuals.cpu().numpy(), dim, nbits), buckets.numpy())


def test_bucket_rule_is_bucketize_left(device):
    # A residual equal to a cutoff falls in the lower bucket (torch.bucketize, right=False):
    # one zero centroid makes the residual exactly the input.
    nbits, dim = 2, 8
    cutoffs = torch.tensor([-0.5, 0.0, 0.5])
    weights = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    centroids = torch.zeros(1, dim)
    emb = torch.tensor([[-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 2.0]])
    _, residuals, _ = ops.compress_residuals(emb.to(device), centroids.to(device), cutoffs.to(device),
                                              weights.to(device), nbits)
    buckets = numpy_unpack(residuals.cpu().numpy(), dim, nbits)[0]
    assert buckets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert buckets.tolist() == torch.bucketize(emb[0], cutoffs).tolist()


# ----------------------------------------------------------------------------- compress


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n_tokens", [0, 1, 1025])
def test_compress_matches_reference(device, nbits, dim, n_tokens):
    centroids, cutoffs, weights = make_codec(dim, nbits, device=device)
    emb = tokens(centroids, n_tokens, seed=n_tokens)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    assert codes.shape == (n_tokens,) and codes.dtype == torch.int32 and codes.device == emb.device
    assert residuals.shape == (n_tokens, dim * nbits // 8) and residuals.dtype == torch.uint8
    assert inv_norms.shape == (n_tokens,) and inv_norms.dtype == torch.float16
    want_codes, want_residuals, want_inv = reference.compress_residuals(emb.cpu(), centroids.cpu(), cutoffs.cpu(),
                                                                      weights.cpu(), nbits)
    differ = assert_codes_match(codes.cpu(), want_codes, emb.cpu(), centroids.cpu())
    same = torch.ones(n_tokens, dtype=torch.bool)
    same[differ] = False
    assert torch.equal(residuals.cpu()[same], want_residuals[same])
    # Same fp32 math up to summation order: at most one fp16 rounding step apart.
    torch.testing.assert_close(inv_norms.cpu()[same].float(), want_inv[same].float(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nbits", NBITS)
def test_compress_half_inputs(device, dtype, nbits):
    centroids, cutoffs, weights = make_codec(96, nbits, device=device)
    emb = tokens(centroids, 333, dtype=dtype)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    # The kernel widens the stored half values exactly: same result as their fp32 copy.
    want = reference.compress_residuals(emb.cpu().float(), centroids.cpu(), cutoffs.cpu(), weights.cpu(), nbits)
    differ = assert_codes_match(codes.cpu(), want[0], emb.cpu(), centroids.cpu())
    assert differ.numel() == 0 or differ.numel() < 3
    if differ.numel() == 0:
        assert torch.equal(residuals.cpu(), want[1])
        torch.testing.assert_close(inv_norms.cpu().float(), want[2].float(), rtol=1e-3, atol=0)


def test_compress_accepts_half_centroids_and_numpy():
    centroids, cutoffs, weights = make_codec(64, 2)
    emb = tokens(centroids, 50)
    codes, residuals, inv_norms = ops.compress_residuals(emb.numpy(), centroids.numpy(), cutoffs.numpy(),
                                                         weights.numpy(), 2)
    assert isinstance(codes, np.ndarray) and isinstance(residuals, np.ndarray) and inv_norms.dtype == np.float16
    want = ops.compress_residuals(emb, centroids, cutoffs, weights, 2)
    np.testing.assert_array_equal(residuals, want[1].numpy())
    half = ops.compress_residuals(emb, centroids.half(), cutoffs, weights, 2)
    want_half = reference.compress_residuals(emb, centroids.half().float(), cutoffs, weights, 2)
    assert torch.equal(half[0], want_half[0]) and torch.equal(half[1], want_half[1])


def test_ties_go_to_the_lowest_centroid(device):
    centroids = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device)
    centroids = torch.cat([centroids, torch.zeros(4, 6, device=device)], dim=1)
    emb = torch.zeros(2, 8, device=device)
    emb[0, 0] = 1.0
    emb[1, 1] = 1.0
    codes, _, _ = ops.compress_residuals(emb, centroids, torch.tensor([0.0], device=device),
                                         torch.tensor([-0.1, 0.1], device=device), 1)
    assert codes.tolist() == [1, 0]


@pytest.mark.parametrize("n_centroids", [1, 5, 16, 17, 33, 100])
def test_nearest_centroids_first_maximum(device, n_centroids):
    # Exact ties planted in different SIMD lanes, in the vector body and in the tail.
    from colbert_engine.ops.codec import nearest_centroids

    gen = torch.Generator().manual_seed(n_centroids)
    centroids = torch.randint(-3, 4, (n_centroids, 8), generator=gen).float()
    emb = torch.randint(-3, 4, (300, 8), generator=gen).float()
    centroids[n_centroids // 2] = centroids[n_centroids - 1] = centroids[min(3, n_centroids - 1)]
    got = nearest_centroids(emb.to(device), centroids.to(device))
    assert got.dtype == torch.int32
    assert torch.equal(got.cpu().long(), (emb @ centroids.T).argmax(dim=1))


def test_nearest_centroids_scalar_build_agrees(tmp_path):
    # The baseline build of the argmax kernel (subprocess: the ISA is chosen once per process).
    centroids, _, _ = make_codec(64, 2, n_centroids=100)
    emb = tokens(centroids, 500)
    torch.save((emb, centroids), tmp_path / "args.pt")
    code = ("import sys, torch; from colbert_engine.ops.codec import nearest_centroids; "
            "a = torch.load(sys.argv[1]); torch.save(nearest_centroids(*a), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "args.pt"), str(tmp_path / "out.pt")],
                   env=dict(os.environ, CE_ISA="scalar"), check=True)
    from colbert_engine.ops.codec import nearest_centroids

    assert torch.equal(torch.load(tmp_path / "out.pt"), nearest_centroids(emb, centroids))


def test_zero_decoded_vector_has_zero_inverse_norm():
    centroids = torch.zeros(1, 8)
    _, _, inv_norms = ops.compress_residuals(torch.zeros(3, 8), centroids, torch.tensor([0.5]),
                                             torch.tensor([0.0, 1.0]), 1)
    assert inv_norms.tolist() == [0.0, 0.0, 0.0]


@settings(max_examples=25, deadline=None)
@given(nbits=st.sampled_from(NBITS), dim=st.sampled_from([8, 16, 24, 64]), n_tokens=st.integers(0, 70),
       seed=st.integers(0, 2**16))
def test_round_trip_error_bounded_by_bucket_width(nbits, dim, n_tokens, seed):
    centroids, cutoffs, weights = make_codec(dim, nbits, n_centroids=11, seed=seed)
    emb = tokens(centroids, n_tokens, seed=seed + 1)
    codes, residuals, _ = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    decoded = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False)
    residual = emb - centroids[codes.long()]
    buckets = torch.as_tensor(numpy_unpack(residuals.numpy(), dim, nbits))
    # The residual lies in its bucket's interval (c[b-1], c[b]] ...
    lower = torch.cat([torch.tensor([-float("inf")]), cutoffs])[buckets]
    upper = torch.cat([cutoffs, torch.tensor([float("inf")])])[buckets]
    assert bool(((residual > lower) & (residual <= upper)).all())
    # ... and, where that interval is bounded, the decoding error is at most its width
    # (the quantile weights lie inside their buckets).
    error = (decoded - emb).abs()
    inner = torch.isfinite(lower) & torch.isfinite(upper)
    assert bool((error[inner] <= (upper - lower)[inner] + 1e-6).all())


# ----------------------------------------------------------------------------- decompress


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n_tokens", [0, 1, 1025])
def test_decompress_matches_reference(device, nbits, dim, n_tokens):
    centroids, _, weights = make_codec(dim, nbits, device=device)
    gen = torch.Generator().manual_seed(n_tokens + dim)
    codes = torch.randint(0, centroids.shape[0], (n_tokens,), generator=gen, dtype=torch.int32).to(device)
    residuals = torch.randint(0, 256, (n_tokens, dim * nbits // 8), generator=gen, dtype=torch.uint8).to(device)
    for normalize in (False, True):
        got = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=normalize)
        want = reference.decompress_residuals(codes.cpu(), residuals.cpu(), centroids.cpu(), weights.cpu(), nbits,
                                              normalize=normalize)
        assert got.shape == (n_tokens, dim) and got.dtype == torch.float32 and got.device == residuals.device
        torch.testing.assert_close(got.cpu(), want, atol=1e-6, rtol=1e-6)
    # Against the numpy layout, independent of the torch reference.
    buckets = numpy_unpack(residuals.cpu().numpy(), dim, nbits)
    expected = centroids.cpu().numpy()[codes.cpu().numpy()] + weights.cpu().numpy()[buckets]
    got = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_decompress_half_output(device, out_dtype):
    centroids, _, weights = make_codec(128, 2, device=device)
    codes = torch.randint(0, centroids.shape[0], (77,), dtype=torch.int32).to(device)
    residuals = torch.randint(0, 256, (77, 32), dtype=torch.uint8).to(device)
    got = ops.decompress_residuals(codes, residuals, centroids, weights, 2, out_dtype=out_dtype)
    assert got.dtype == out_dtype
    want = reference.decompress_residuals(codes.cpu(), residuals.cpu(), centroids.cpu(), weights.cpu(), 2)
    # Rounding of an fp32 value the kernel computes like the reference (within 1e-6).
    torch.testing.assert_close(got.cpu().float(), want.to(out_dtype).float(), atol=0, rtol=1e-2)
    assert (got.cpu().float() - want).abs().max() <= (want.to(out_dtype).float() - want).abs().max() * 2 + 1e-6


def test_decompress_with_stored_inverse_norms(device):
    centroids, cutoffs, weights = make_codec(64, 2, device=device)
    emb = tokens(centroids, 300)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, 2)
    scaled = ops.decompress_residuals(codes, residuals, centroids, weights, 2, inv_norms=inv_norms)
    raw = ops.decompress_residuals(codes, residuals, centroids, weights, 2, normalize=False)
    torch.testing.assert_close(scaled, raw * inv_norms.float()[:, None], atol=0, rtol=1e-6)
    # The stored fp16 inverse norm is the recomputed one up to fp16 rounding.
    renormalized = ops.decompress_residuals(codes, residuals, centroids, weights, 2)
    torch.testing.assert_close(scaled, renormalized, atol=1e-3, rtol=0)
    unit = torch.linalg.vector_norm(renormalized.float(), dim=1)
    torch.testing.assert_close(unit, torch.ones_like(unit), atol=1e-6, rtol=0)


def test_decompress_numpy_in_numpy_out():
    centroids, _, weights = make_codec(24, 1)
    codes = np.array([0, 3, 5], dtype=np.int32)
    residuals = np.array([[1, 2, 255], [0, 0, 0], [7, 128, 64]], dtype=np.uint8)
    got = ops.decompress_residuals(codes, residuals, centroids.numpy(), weights.numpy(), 1, normalize=False)
    assert isinstance(got, np.ndarray) and got.shape == (3, 24)
    expected = centroids.numpy()[codes] + weights.numpy()[numpy_unpack(residuals, 24, 1)]
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- threads


def test_thread_count_invariance():
    centroids, cutoffs, weights = make_codec(96, 4, n_centroids=64)
    emb = tokens(centroids, 2049)
    previous = ops.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            ops.set_num_threads(threads)
            codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, 4)
            decoded = ops.decompress_residuals(codes, residuals, centroids, weights, 4)
            results.append((codes, residuals, inv_norms, decoded))
    finally:
        ops.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    centroids, cutoffs, weights = make_codec(64, 2)
    emb = tokens(centroids, 10)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, 2)

    def raises(exc, match, fn, *args, **kwargs):
        with pytest.raises(exc, match=match):
            fn(*args, **kwargs)

    compress, decompress = ops.compress_residuals, ops.decompress_residuals
    raises(ValueError, "nbits", compress, emb, centroids, cutoffs, weights, 3)
    raises(ValueError, "nbits", decompress, codes, residuals, centroids, weights, 8)
    raises(ValueError, "nbits", compress, emb[:, :12], centroids[:, :12], cutoffs[:1], weights[:2], 1)  # 12 bits
    bad = emb.clone()
    bad[3, 5] = float("nan")
    raises(ValueError, "emb", compress, bad, centroids, cutoffs, weights, 2)
    raises(ValueError, "emb", compress, emb[0], centroids, cutoffs, weights, 2)
    raises(TypeError, "emb", compress, emb.double(), centroids, cutoffs, weights, 2)
    raises(ValueError, "centroids", compress, emb, centroids[:, :32], cutoffs, weights, 2)
    raises(ValueError, "centroids", compress, emb, centroids[:0], cutoffs, weights, 2)
    raises(ValueError, "bucket_cutoffs", compress, emb, centroids, cutoffs[:2], weights, 2)
    raises(ValueError, "bucket_cutoffs", compress, emb, centroids, cutoffs.flip(0), weights, 2)
    raises(ValueError, "bucket_weights", compress, emb, centroids, cutoffs, weights[:3], 2)
    raises(ValueError, "codes", decompress, codes + 100, residuals, centroids, weights, 2)
    raises(ValueError, "codes", decompress, codes - 100, residuals, centroids, weights, 2)
    raises(ValueError, "codes", decompress, codes[:5], residuals, centroids, weights, 2)
    raises(TypeError, "codes", decompress, codes.float(), residuals, centroids, weights, 2)
    raises(ValueError, "residuals", decompress, codes, residuals[:, :8], centroids, weights, 2)
    raises(TypeError, "residuals", decompress, codes, residuals.to(torch.int16), centroids, weights, 2)
    raises(ValueError, "bucket_weights", decompress, codes, residuals, centroids, weights[:2], 2)
    raises(TypeError, "inv_norms", decompress, codes, residuals, centroids, weights, 2, inv_norms=inv_norms.float())
    raises(ValueError, "inv_norms", decompress, codes, residuals, centroids, weights, 2, inv_norms=inv_norms[:3])
    raises(TypeError, "out_dtype", decompress, codes, residuals, centroids, weights, 2, out_dtype=torch.int32)
    raises(ValueError, "out", decompress, codes, residuals, centroids, weights, 2, out=torch.empty(3, 64))


def _norm_sq_16_partials(x: np.ndarray) -> np.ndarray:
    """Row sums of squares in the kernels' fixed order (csrc/cpu/codec.cpp sum_of_squares,
    mirrored by csrc/cuda/codec.cu): partial[d % 16] += x[d]^2 in dimension order, then the
    16 partials added in order. float32 throughout, no FMA."""
    partial = np.zeros((x.shape[0], 16), dtype=np.float32)
    for d in range(x.shape[1]):
        partial[:, d % 16] = partial[:, d % 16] + x[:, d] * x[:, d]
    total = np.zeros(x.shape[0], dtype=np.float32)
    for lane in range(16):
        total = total + partial[:, lane]
    return total


@pytest.mark.parametrize("dim", [24, 128])
def test_norms_use_the_pinned_summation_order(device, dim):
    """Stored inverse norms and recomputed norms are bit-exact functions of the decoded vector,
    in the order both backends share (CPU and CUDA must agree byte for byte)."""
    nbits = 2
    centroids, cutoffs, weights = make_codec(dim, nbits, device=device)
    emb = tokens(centroids.cpu(), 257, seed=3).to(device)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    decoded = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=False).cpu().numpy()
    norm_sq = _norm_sq_16_partials(decoded)
    want_inv = np.minimum(np.float32(1) / np.sqrt(norm_sq), np.float32(65504)).astype(np.float16)
    assert np.array_equal(inv_norms.cpu().numpy().view(np.int16), want_inv.view(np.int16))
    got = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize=True).cpu().numpy()
    scale = np.float32(1) / np.maximum(np.sqrt(norm_sq), np.float32(1e-12))
    assert np.array_equal(got.view(np.int32), (decoded * scale[:, None]).view(np.int32))


def test_zero_dim_is_rejected_on_every_device(device):
    """csrc/cuda/codec.cu and lut_maxsim.cu reject dim 0, so the ops do on the CPU too."""
    centroids = torch.zeros(2, 0, device=device)
    weights = torch.zeros(4, device=device)
    with pytest.raises(ValueError, match="dim"):
        ops.compress_residuals(torch.zeros(3, 0, device=device), centroids, torch.zeros(3, device=device),
                               weights, 2)
    codes = torch.zeros(3, dtype=torch.int32, device=device)
    residuals = torch.zeros(3, 0, dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match="dim"):
        ops.decompress_residuals(codes, residuals, centroids, weights, 2)
    with pytest.raises(ValueError, match="dim"):
        ops.lut_maxsim(torch.zeros(1, 2, 0, device=device), torch.zeros(1, 2, 2, device=device), codes, residuals,
                       torch.ones(3, dtype=torch.float16, device=device), torch.tensor([0, 3], device=device),
                       torch.tensor([0], device=device), weights, 2)
def test_numpy_integer_nbits_is_an_int():
    """nbits = np.int64(2) (as read from an index's metadata) was rejected."""
    gen = torch.Generator().manual_seed(0)
    emb, centroids = torch.randn(20, 8, generator=gen), torch.randn(4, 8, generator=gen)
    cutoffs, weights = torch.tensor([-0.1, 0.0, 0.1]), torch.tensor([-0.2, -0.05, 0.05, 0.2])
    want = ops.compress_residuals(emb, centroids, cutoffs, weights, 2)
    got = ops.compress_residuals(emb, centroids, cutoffs, weights, np.int64(2))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    back = ops.decompress_residuals(got[0], got[1], centroids, weights, np.int32(2))
    assert torch.equal(back, ops.decompress_residuals(want[0], want[1], centroids, weights, 2))


# ----------------------------------------------------------------------------- probed argmax


def _probed_case(n_centroids, dim, n_tokens, seed=0, integer=False):
    gen = torch.Generator().manual_seed(seed)
    if integer:  # exact in fp32 whatever the summation order: ties are real ties
        centroids = torch.randint(-2, 3, (n_centroids, dim), generator=gen).float()
        emb = torch.randint(-2, 3, (n_tokens, dim), generator=gen).float()
    else:
        centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=-1)
        emb = sample_tokens(centroids, n_tokens, gen)
    return emb, centroids


@pytest.mark.parametrize("n_centroids,dim,n_cells,n_tokens", [
    (1, 64, 1, 5), (17, 96, 4, 333), (100, 128, 100, 700), (301, 64, None, 2049), (999, 96, 37, 4100),
    (1500, 128, None, 3001)])
def test_probed_argmax_matches_reference(n_centroids, dim, n_cells, n_tokens):
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(n_centroids, dim, n_tokens, seed=n_centroids)
    cells = oc.centroid_cells(centroids, n_cells)
    assert cells.n_cells <= (n_cells or oc.default_cells(n_centroids))
    assert sorted(cells.cell_ids[cells.cell_ids >= 0].tolist()) == list(range(n_centroids))
    for nprobe in (1, 3, cells.n_cells):
        got = oc.nearest_centroids_probed(emb, cells, nprobe)
        want = reference.nearest_centroids_probed(emb, centroids, cells.coarse, cells.cell_of, nprobe)
        assert got.dtype == torch.int32
        assert_codes_match(got, want, emb, centroids)
    # probing every cell is the exact argmax
    assert_codes_match(oc.nearest_centroids_probed(emb, cells, 10**6), (emb @ centroids.T).argmax(1), emb, centroids)


@pytest.mark.parametrize("dim", [64, 96, 128])
def test_probed_ties_and_duplicate_centroids(dim):
    # integer vectors: every score is exact, so ties must go to the lowest original index
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(300, dim, 1000, seed=dim, integer=True)
    centroids[150] = centroids[7]
    centroids[299] = centroids[7]
    centroids[40:60] = centroids[200]
    cells = oc.centroid_cells(centroids, 24)
    for nprobe in (2, 24):
        got = oc.nearest_centroids_probed(emb, cells, nprobe)
        want = reference.nearest_centroids_probed(emb, centroids, cells.coarse, cells.cell_of, nprobe)
        assert torch.equal(got, want)
    assert torch.equal(oc.nearest_centroids_probed(emb, cells, 24), (emb @ centroids.T).argmax(1).int())


@pytest.mark.parametrize("dim", [64, 96, 128])
def test_probed_agreement_and_residual_error_on_unit_vectors(dim):
    # the contract at the default nprobe: >= 99.5% exact argmax, residual error within 0.5%
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(3000, dim, 6000, seed=dim)
    cells = oc.centroid_cells(centroids)
    got = oc.nearest_centroids_probed(emb, cells).long()
    exact = (emb @ centroids.T).argmax(1)
    assert float((got == exact).float().mean()) >= 0.995
    err = ((emb - centroids[got]) ** 2).sum(1).mean()
    err_exact = ((emb - centroids[exact]) ** 2).sum(1).mean()
    assert float(err / err_exact) <= 1.005


def test_compress_with_cells_matches_reference_residuals_for_its_codes():
    from colbert_engine.ops import codec as oc

    centroids, cutoffs, weights = make_codec(128, 2, n_centroids=500)
    emb = tokens(centroids, 1500)
    cells = oc.centroid_cells(centroids, 40)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, 2, cells=cells, nprobe=4)
    assert torch.equal(codes, oc.nearest_centroids_probed(emb, cells, 4))
    # the residual bytes are those of the probed codes (reference on the chosen centroids)
    _, want_res, want_norms = reference.compress_residuals(emb, centroids[codes.long()], cutoffs, weights, 2)
    assert torch.equal(residuals, want_res) and torch.equal(inv_norms, want_norms)


def test_probed_thread_count_and_scalar_build_agree(tmp_path):
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(700, 96, 5000, seed=3)
    cells = oc.centroid_cells(centroids)
    previous = ops.get_num_threads()
    try:
        ops.set_num_threads(1)
        one = oc.nearest_centroids_probed(emb, cells)
        ops.set_num_threads(2)
        two = oc.nearest_centroids_probed(emb, cells)
    finally:
        ops.set_num_threads(previous)
    assert torch.equal(one, two)
    torch.save((emb, centroids), tmp_path / "args.pt")
    code = ("import sys, torch; from colbert_engine.ops import codec as oc; e, c = torch.load(sys.argv[1]); "
            "torch.save(oc.nearest_centroids_probed(e, oc.centroid_cells(c)), sys.argv[2])")
    for isa in ("scalar",):  # the avx2 build is the same source; one subprocess keeps this short
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "args.pt"), str(tmp_path / "out.pt")],
                       env=dict(os.environ, CE_ISA=isa), check=True)
        assert_codes_match(torch.load(tmp_path / "out.pt"), one, emb, centroids)


def test_probed_bad_input_names_the_argument():
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(50, 64, 10)
    cells = oc.centroid_cells(centroids, 5)
    with pytest.raises(ValueError, match="n_cells"):
        oc.centroid_cells(centroids, 51)
    with pytest.raises(ValueError, match="n_cells"):
        oc.centroid_cells(centroids, 0)
    with pytest.raises(ValueError, match="centroids"):
        oc.centroid_cells(torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="nprobe"):
        oc.nearest_centroids_probed(emb, cells, 0)
    with pytest.raises(TypeError, match="cells"):
        oc.nearest_centroids_probed(emb, centroids)
    with pytest.raises(ValueError, match="emb"):
        oc.nearest_centroids_probed(emb[:, :32], cells)
    bad = emb.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="emb"):
        oc.nearest_centroids_probed(bad, cells)
    _, cutoffs, weights = make_codec(64, 2)
    with pytest.raises(ValueError, match="cells"):
        ops.compress_residuals(emb, centroids[:40], cutoffs, weights, 2, cells=cells)
    assert oc.nearest_centroids_probed(emb[:0], cells).shape == (0,)


def test_probed_bf16_screen_rescored_in_fp32():
    # integer vectors are exact in bf16 too: the bf16 screen must then give the reference
    from colbert_engine.ops import codec as oc

    emb, centroids = _probed_case(400, 64, 800, seed=11, integer=True)
    cells = oc.centroid_cells(centroids, 20)
    want = reference.nearest_centroids_probed(emb, centroids, cells.coarse, cells.cell_of, 3)
    assert torch.equal(oc.nearest_centroids_probed(emb, cells, 3, bf16=True), want)
    emb, centroids = _probed_case(3000, 128, 4000, seed=12)
    cells = oc.centroid_cells(centroids)
    got = oc.nearest_centroids_probed(emb, cells, bf16=True).long()
    assert float((got == (emb @ centroids.T).argmax(1)).float().mean()) >= 0.995


@pytest.mark.parametrize("rows,k,dim", [(0, 3, 8), (1, 1, 64), (1000, 37, 96), (5000, 300, 128)])
def test_accumulate_rows_matches_index_add(rows, k, dim):
    from colbert_engine.ops import codec as oc

    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, dim, generator=gen)
    codes = torch.randint(0, k, (rows,), generator=gen)
    got = oc.accumulate_rows(x, codes.int(), torch.ones(k, dim))
    want = reference.accumulate_rows(x, codes, torch.ones(k, dim))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    previous = ops.get_num_threads()
    try:
        ops.set_num_threads(1)
        one = oc.accumulate_rows(x, codes, torch.zeros(k, dim))
    finally:
        ops.set_num_threads(previous)
    assert torch.equal(one, oc.accumulate_rows(x, codes, torch.zeros(k, dim)))  # thread-count invariant
    with pytest.raises(ValueError, match="codes"):
        oc.accumulate_rows(x[:1], torch.tensor([k]), torch.zeros(k, dim))
    with pytest.raises(ValueError, match="sums"):
        oc.accumulate_rows(x, codes, torch.zeros(k, dim + 1))
