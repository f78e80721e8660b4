"""CUDA kernels against the CPU kernels and the references, on shapes that pick each CUDA
path (csrc/cuda/*.cu say which shapes go where).

Everything marked ``gpu`` skips without a CUDA device; the introspection test at the top
runs everywhere the CUDA module was built (it needs no device).
"""

from __future__ import annotations

import importlib

import pytest
import torch

from colbert_engine import ops
from colbert_engine.index.segment import build_ivf
from colbert_engine.ops import reference

# Functions of colbert_engine._C that are not kernels (CPU thread / ISA control).
CPU_ONLY_UTILITIES = {"isa", "max_threads", "set_num_threads", "kernel_threads_setting", "set_kernel_threads_setting",
                      "parallel_spin_us", "set_parallel_spin_us", "parallel_wake"}
# CPU kernels whose CUDA path is composed on the caller side from other CUDA kernels and
# torch ops that queue on the stream without syncing (see the op's module for how):
# maxsim_topk = chunked _cuda.maxsim + stable torch sorts (ops/maxsim.py); argmax_rows =
# torch.argmax on the GEMM output (common/codec.h says so); centroid_scores = cuBLAS through
# torch (ops/plaid.py; the CPU kernel exists to run the search's GEMM on the kernels' pool).
COMPOSED_ON_CUDA = {"maxsim_topk", "argmax_rows", "centroid_scores"}
# CPU-only build kernels: the probed (two-level) nearest-centroid search and the k-means row
# accumulation replace a dense GEMM that the CPU cannot afford at large K; on CUDA the codec
# keeps the exact dense GEMM + argmax and torch's index_add_ (ops/codec.py says so).
CPU_ONLY_KERNELS = {"probed_argmax", "probed_bf16_available", "accumulate_rows"}
# Functions of colbert_engine._cuda that are not kernels.
# maxsim_check: the checked op's argument checks on the device (on CPU they run on the host
# at no synchronisation cost).
CUDA_ONLY_UTILITIES = {"device_count", "error_string", "maxsim_check"}


def _functions(module) -> set[str]:
    return {name for name in dir(module) if not name.startswith("_") and callable(getattr(module, name))}


def test_every_cpu_kernel_has_a_cuda_twin():
    """Introspection only (no GPU needed): the two modules expose the same kernel names."""
    try:
        cuda = importlib.import_module("colbert_engine._cuda")
    except ImportError:
        pytest.skip("colbert_engine._cuda was not built (test_build checks when it must be)")
    cpu = importlib.import_module("colbert_engine._C")
    cpu_kernels = _functions(cpu) - CPU_ONLY_UTILITIES - COMPOSED_ON_CUDA - CPU_ONLY_KERNELS
    cuda_kernels = _functions(cuda) - CUDA_ONLY_UTILITIES
    assert cpu_kernels == cuda_kernels, (
        f"only in _C: {sorted(cpu_kernels - cuda_kernels)}; only in _cuda: {sorted(cuda_kernels - cpu_kernels)}")
    for name in cpu_kernels:
        assert getattr(cuda, name).__doc__, name


# --------------------------------------------------------------------------- maxsim


def _packed(lengths, dim, dtype, seed, device="cuda"):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    emb = torch.nn.functional.normalize(torch.randn(int(offsets[-1]), dim, generator=gen), dim=-1)
    return emb.to(device=device, dtype=dtype), offsets.to(device)


def _queries(nq, lq, dim, seed, device="cuda"):
    gen = torch.Generator().manual_seed(seed + 1000)
    return torch.nn.functional.normalize(torch.randn(nq, lq, dim, generator=gen), dim=-1).to(device)


def _want(queries, emb, offsets, doc_subset=None):
    """Reference with the CUDA kernel's rounding: 16-bit documents get 16-bit queries."""
    if emb.dtype != torch.float32:
        queries = queries.to(emb.dtype).float()
    return reference.maxsim(queries.cpu(), emb.float().cpu(), offsets.cpu(),
                            doc_subset=None if doc_subset is None else doc_subset.cpu())


# Lengths straddling the 32-token document tile, plus empty documents.
LENGTHS = [31, 0, 32, 33, 1, 64, 65, 0, 300, 7]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim, query_len, n_queries", [
    (128, 32, 1),    # fast path, 2 queries per block, one half-empty group
    (128, 32, 37),   # fast path, many groups
    (96, 20, 7),     # fast path, 3 queries per block
    (64, 64, 3),     # fast path, exactly one query per block
    (16, 1, 130),    # fast path, 64 queries per block
    (256, 33, 2),    # fast path, largest dim (fp32 needs > 48 KB shared memory)
    (272, 32, 2),    # fallback: dim too large
    (100, 32, 2),    # fallback: dim % 16 != 0
    (7, 5, 3),       # fallback
    (128, 65, 2),    # fallback: query_len > 64
    (64, 512, 1),    # fallback: largest query_len
])
def test_maxsim_cuda_matches_reference(dtype, dim, query_len, n_queries):
    emb, offsets = _packed(LENGTHS, dim, dtype, seed=dim + query_len)
    queries = _queries(n_queries, query_len, dim, seed=dim)
    got = ops.maxsim(queries, emb, offsets)
    assert got.device.type == "cuda" and got.shape == (n_queries, len(LENGTHS)) and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), _want(queries, emb, offsets), atol=1e-4 * query_len, rtol=1e-5)
    assert torch.isneginf(got[:, 1]).all() and torch.isneginf(got[:, 7]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_maxsim_cuda_subset_with_repeats(dtype):
    emb, offsets = _packed(LENGTHS, 128, dtype, seed=3)
    queries = _queries(5, 32, 128, seed=3)
    subset = torch.tensor([8, 1, 8, 0, 9, 2], device="cuda")
    got = ops.maxsim(queries, emb, offsets, doc_subset=subset)
    torch.testing.assert_close(got.cpu(), _want(queries, emb, offsets, subset), atol=3e-3, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_maxsim_cuda_unaligned_documents_take_the_fallback(dtype):
    # A contiguous view starting one element into its storage: not 16-byte aligned.
    emb, offsets = _packed([5, 40, 3], 64, dtype, seed=5)
    flat = torch.empty(emb.numel() + 1, dtype=dtype, device="cuda")
    flat[1:] = emb.reshape(-1)
    shifted = flat[1:].view(emb.shape)
    assert shifted.data_ptr() % 16 != 0
    queries = _queries(3, 32, 64, seed=5)
    got = ops.maxsim(queries, shifted, offsets)
    torch.testing.assert_close(got, ops.maxsim(queries, emb, offsets), atol=1e-4 * 32, rtol=1e-5)


@pytest.mark.gpu
def test_maxsim_cpu_cuda_parity_fp32():
    emb, offsets = _packed([3, 0, 50, 17, 129], 128, torch.float32, seed=7, device="cpu")
    queries = _queries(4, 32, 128, seed=7, device="cpu")
    cpu = ops.maxsim(queries, emb, offsets)
    gpu = ops.maxsim(queries.cuda(), emb.cuda(), offsets.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4 * 32, rtol=1e-5)


@pytest.mark.gpu
def test_maxsim_cuda_uses_the_current_stream():
    emb, offsets = _packed([10, 20], 64, torch.float16, seed=9)
    queries = _queries(2, 32, 64, seed=9)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = ops.maxsim(queries, emb, offsets)
    stream.synchronize()
    torch.testing.assert_close(got.cpu(), _want(queries, emb, offsets), atol=3e-3, rtol=1e-5)



@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 5, 100])
def test_maxsim_topk_cuda_matches_reference(k):
    # Integer-valued vectors: every path sums exactly, so ties are real ties and the
    # (score desc, id asc) order must match the reference exactly.
    gen = torch.Generator().manual_seed(k)
    lengths = [3, 0, 5, 5, 1, 0, 9, 2] * 4
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
    emb = torch.randint(-2, 3, (int(offsets[-1]), 32), generator=gen).float()
    queries = torch.randint(-2, 3, (3, 8, 32), generator=gen).float()
    for dtype in (torch.float32, torch.float16):
        got_scores, got_ids = ops.maxsim_topk(queries.cuda(), emb.to(dtype).cuda(), offsets.cuda(), k)
        want_scores, want_ids = reference.maxsim_topk(queries, emb, offsets, k)
        assert torch.equal(got_ids.cpu(), want_ids)
        assert torch.equal(got_scores.cpu(), want_scores)

# --------------------------------------------------------------------------- plaid
# CPU and CUDA must agree exactly: same picks (ties by lower centroid id), same candidate
# sets, same approximate scores (max is exact, sums run in token order) and the same order.


def _index(n_docs, n_centroids, max_len, seed):
    """Packed doc codes (every 5th document empty) and their inverted lists (sorted unique
    docs per centroid), like tests/ops/test_plaid.py's make_index."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (n_docs,), generator=gen)
    lengths[::5] = 0
    doc_offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    doc_offsets[1:] = torch.cumsum(lengths, 0)
    doc_codes = torch.randint(0, n_centroids, (int(doc_offsets[-1]),), generator=gen, dtype=torch.int32)
    ivf, ivf_offsets = build_ivf(doc_codes.numpy(), doc_offsets.numpy(), n_centroids)
    return doc_codes, doc_offsets, torch.from_numpy(ivf), torch.from_numpy(ivf_offsets)


def _scores(shape, seed, dyadic):
    gen = torch.Generator().manual_seed(seed)
    if dyadic:  # many exact ties
        return torch.randint(-16, 17, shape, generator=gen).float() / 8
    return torch.randn(shape, generator=gen)


def _cuda(x):
    return None if x is None else x.cuda()


@pytest.mark.gpu
@pytest.mark.parametrize("n_centroids, query_len, nprobe, n_docs", [
    (64, 32, 1, 500), (64, 32, 4, 500), (1000, 7, 3, 2000), (33, 40, 2, 100),
    (16, 5, 16, 70), (16, 5, 40, 70), (300, 32, 100, 1000), (8, 1, 1, 1),
])
@pytest.mark.parametrize("dyadic", [False, True])
@pytest.mark.parametrize("use_subset", [False, True])
def test_candidates_cpu_cuda_parity(n_centroids, query_len, nprobe, n_docs, dyadic, use_subset):
    _, _, ivf, ivf_offsets = _index(n_docs, n_centroids, 12, seed=n_centroids)
    scores = _scores((3, n_centroids, query_len), seed=nprobe, dyadic=dyadic)
    subset = (torch.rand(n_docs, generator=torch.Generator().manual_seed(2)) < 0.5) if use_subset else None
    cpu = ops.candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=subset)
    gpu = ops.candidates(scores.cuda(), ivf.cuda(), ivf_offsets.cuda(), nprobe, n_docs, subset=_cuda(subset))
    assert len(gpu) == len(cpu)
    for got, want in zip(gpu, cpu):
        assert got.device.type == "cuda" and got.dtype == torch.int32
        assert torch.equal(got.cpu(), want)


@pytest.mark.gpu
@pytest.mark.parametrize("n_docs, ndocs, threshold", [
    (300, 64, None), (300, 64, 0.0), (300, 1000, None), (20000, 256, None), (20000, 8192, 0.5),
    (20000, 3, None), (1, 1, None),
])
@pytest.mark.parametrize("query_len", [32, 7, 45])
@pytest.mark.parametrize("dyadic", [False, True])
def test_centroid_interaction_cpu_cuda_parity(n_docs, ndocs, threshold, query_len, dyadic):
    n_centroids = 128
    doc_codes, doc_offsets, ivf, ivf_offsets = _index(n_docs, n_centroids, 12, seed=n_docs)
    scores = _scores((2, n_centroids, query_len), seed=ndocs, dyadic=dyadic)
    cands = ops.candidates(scores, ivf, ivf_offsets, 8, n_docs)
    # A repeated candidate and a reordered list: the kernels must not assume sorted unique ids.
    cands[0] = torch.cat([cands[0].flip(0), cands[0][:3]])
    cpu = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, ndocs, threshold)
    gpu = ops.centroid_interaction(scores.cuda(), doc_codes.cuda(), doc_offsets.cuda(),
                                   [c.cuda() for c in cands], ndocs, threshold)
    for (g_scores, g_ids), (c_scores, c_ids) in zip(gpu, cpu):
        assert torch.equal(g_ids.cpu(), c_ids)
        assert torch.equal(g_scores.cpu(), c_scores)


@pytest.mark.gpu
def test_centroid_interaction_cuda_rejects_huge_ndocs():
    doc_codes, doc_offsets, ivf, ivf_offsets = _index(9000, 16, 4, seed=1)
    scores = _scores((16, 32), seed=1, dyadic=False).cuda()
    cands = torch.arange(9000, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="ndocs"):
        ops.centroid_interaction(scores, doc_codes.cuda(), doc_offsets.cuda(), cands, 8500)


# --------------------------------------------------------------------------- codec
# Residual codes and stored inverse norms must match the CPU byte for byte; so must the
# decompressed vectors (same float operations in the same order, no FMA contraction).


def _codec_data(n_tokens, dim, nbits, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(64, dim, generator=gen), dim=-1)
    assign = torch.randint(0, 64, (n_tokens,), generator=gen)
    # Tokens near their centroid: the nearest centroid (a GEMM + argmax in torch, which may
    # round differently on GPU) is unambiguous, so CPU and CUDA see the same codes.
    emb = torch.nn.functional.normalize(centroids[assign] + 0.05 * torch.randn(n_tokens, dim, generator=gen), dim=-1)
    levels = 1 << nbits
    cutoffs = torch.linspace(-0.04, 0.04, levels + 1)[1:-1]
    weights = torch.linspace(-0.05, 0.05, levels)
    # Put some residuals exactly on a cutoff (ties go to the lower bucket).
    emb[:3, :4] = centroids[assign[:3], :4] + cutoffs[0]
    return emb.to(dtype), centroids, cutoffs, weights


@pytest.mark.gpu
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("dim", [64, 96, 128, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_codec_cpu_cuda_byte_identical(nbits, dim, dtype):
    emb, centroids, cutoffs, weights = _codec_data(1025, dim, nbits, dtype, seed=nbits * dim)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    g_codes, g_residuals, g_inv_norms = ops.compress_residuals(emb.cuda(), centroids.cuda(), cutoffs.cuda(),
                                                               weights.cuda(), nbits)
    assert g_residuals.device.type == "cuda"
    assert torch.equal(g_codes.cpu(), codes)
    assert torch.equal(g_residuals.cpu(), residuals)
    assert torch.equal(g_inv_norms.cpu().view(torch.int16), inv_norms.view(torch.int16))
    for out_dtype in (torch.float32, torch.float16, torch.bfloat16):
        for normalize, norms in ((False, None), (True, None), (True, inv_norms)):
            want = ops.decompress_residuals(codes, residuals, centroids, weights, nbits, normalize, out_dtype,
                                            inv_norms=norms)
            got = ops.decompress_residuals(codes.cuda(), residuals.cuda(), centroids.cuda(), weights.cuda(), nbits,
                                           normalize, out_dtype, inv_norms=_cuda(norms))
            assert got.dtype == out_dtype and got.device.type == "cuda"
            assert torch.equal(got.cpu(), want), (out_dtype, normalize, norms is not None)


@pytest.mark.gpu
def test_codec_cuda_empty_input():
    _, centroids, cutoffs, weights = _codec_data(1, 64, 2, torch.float32, seed=0)
    codes, residuals, inv_norms = ops.compress_residuals(torch.empty(0, 64, device="cuda"), centroids.cuda(),
                                                         cutoffs.cuda(), weights.cuda(), 2)
    assert codes.shape == (0,) and residuals.shape == (0, 16) and inv_norms.shape == (0,)
    out = ops.decompress_residuals(codes, residuals, centroids.cuda(), weights.cuda(), 2)
    assert out.shape == (0, 64) and out.device.type == "cuda"


@pytest.mark.gpu
@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("query_len", [32, 5, 40])
def test_lut_maxsim_cpu_cuda_parity(nbits, query_len):
    dim = 64
    lengths = [3, 0, 17, 1, 40, 2]
    emb, centroids, cutoffs, weights = _codec_data(sum(lengths), dim, nbits, torch.float32, seed=query_len)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
    queries = _queries(3, query_len, dim, seed=nbits, device="cpu")
    scores = ops.centroid_scores(queries, centroids)
    candidates = torch.tensor([4, 1, 0, 2, 2, 5, 3])
    args = (queries, scores, codes, residuals, inv_norms, offsets, candidates, weights)
    want = ops.lut_maxsim(*args, nbits)
    got = ops.lut_maxsim(*[a.cuda() for a in args], nbits)
    assert got.device.type == "cuda" and got.shape == want.shape
    torch.testing.assert_close(got.cpu(), want, atol=1e-4 * query_len, rtol=1e-5)
    assert torch.isneginf(got[:, 1]).all()


@pytest.mark.gpu
def test_checked_maxsim_syncs_once_and_names_bad_arguments():
    """The public op checks its arguments on the device and reads one status word after the
    launch: one host synchronisation, and each bad argument still named in a ValueError."""
    import warnings

    emb, offsets = _packed([5, 0, 9], 64, torch.float16, 3)
    queries = _queries(2, 32, 64, 3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ops.maxsim(queries, emb, offsets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in caught]

    bad_offsets = offsets.clone()
    bad_offsets[1] = 100
    with pytest.raises(ValueError, match="doc_offsets"):
        ops.maxsim(queries, emb, bad_offsets)
    with pytest.raises(ValueError, match="doc_subset"):
        ops.maxsim(queries, emb, offsets, doc_subset=torch.tensor([0, 3], device="cuda"))
    nan_docs = emb.clone()
    nan_docs[2, 0] = float("nan")
    with pytest.raises(ValueError, match="doc_emb"):
        ops.maxsim(queries, nan_docs, offsets)
    with pytest.raises(ValueError, match="doc_emb"):
        ops.maxsim_topk(queries, nan_docs, offsets, 2)
    nan_queries = queries.clone()
    nan_queries[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="queries"):
        ops.maxsim(nan_queries, emb, offsets)
    # After the errors the same inputs score normally (no sticky state).
    torch.testing.assert_close(ops.maxsim(queries, emb, offsets).cpu(), _want(queries, emb, offsets),
                               rtol=1e-5, atol=1e-4)
