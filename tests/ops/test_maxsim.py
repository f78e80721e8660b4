"""ops.maxsim and ops.maxsim_topk against their references on awkward packed inputs, every
device, and every CPU SIMD path (the ISA tests rerun this file in a subprocess with CE_ISA set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import colbert_engine
from colbert_engine import _native, ops
from colbert_engine.ops import reference

TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def packed_docs(lengths, dim, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    emb = torch.randn(int(offsets[-1]), dim, generator=gen)
    return emb.to(device=device, dtype=dtype), offsets.to(device)


@pytest.mark.parametrize("dim", [64, 96, 128, 7])
@pytest.mark.parametrize("lengths", [[], [0], [1], [0, 5, 0], [1, 7, 83, 113, 0, 33]])
@pytest.mark.parametrize("query_len", [1, 32, 33])
def test_maxsim_matches_reference(device, dim, lengths, query_len):
    emb, offsets = packed_docs(lengths, dim, device=device)
    queries = torch.randn(3, query_len, dim, device=device)
    got = ops.maxsim(queries, emb, offsets)
    want = reference.maxsim(queries, emb, offsets)
    assert got.shape == (3, len(lengths)) and got.dtype == torch.float32 and got.device == emb.device
    torch.testing.assert_close(got, want, atol=1e-4 * query_len, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_maxsim_half_documents(device, dtype):
    emb, offsets = packed_docs([5, 0, 17, 1], 128, dtype=dtype, device=device)
    queries = torch.randn(2, 32, 128, device=device)
    got = ops.maxsim(queries, emb, offsets)
    # Same stored values in fp32: the kernel converts exactly, only summation order differs.
    # On CUDA the tensor cores take the queries rounded to the documents' dtype.
    ref_queries = queries.to(dtype).float() if device == "cuda" else queries
    want = reference.maxsim(ref_queries, emb.float(), offsets)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-5)


def test_maxsim_empty_document_is_minus_inf(device):
    emb, offsets = packed_docs([3, 0], 16, device=device)
    got = ops.maxsim(torch.randn(32, 16, device=device), emb, offsets)
    assert torch.isfinite(got[0]) and got[1] == float("-inf")


def test_maxsim_negative_similarities_not_clamped(device):
    # All similarities negative: a running max that starts at 0 would return 0.
    emb = -torch.ones(4, 8, device=device)
    offsets = torch.tensor([0, 4], device=device)
    got = ops.maxsim(torch.ones(2, 8, device=device), emb, offsets)
    assert got.item() == pytest.approx(-16.0)


def test_maxsim_subset_matches_columns(device):
    emb, offsets = packed_docs([4, 9, 0, 2, 6], 32, device=device)
    queries = torch.randn(2, 5, 32, device=device)
    subset = torch.tensor([4, 0, 0, 2], device=device)
    full = ops.maxsim(queries, emb, offsets)
    got = ops.maxsim(queries, emb, offsets, doc_subset=subset)
    torch.testing.assert_close(got, full[:, subset.cpu()].to(got.device))


def test_maxsim_non_contiguous_inputs(device):
    emb, offsets = packed_docs([3, 8, 1], 64, device=device)
    wide = torch.randn(12, 128, device=device)[:, ::2]
    queries = torch.randn(2, 4, 128, device=device)[..., ::2]
    emb = wide
    got = ops.maxsim(queries, emb, offsets)
    torch.testing.assert_close(got, reference.maxsim(queries, emb, offsets), atol=1e-4, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_maxsim_invariant_to_document_order(lengths, seed):
    emb, offsets = packed_docs(lengths, 24, seed=seed)
    queries = torch.randn(2, 6, 24, generator=torch.Generator().manual_seed(seed))
    scores = ops.maxsim(queries, emb, offsets)
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed + 1))
    pieces = [emb[offsets[d]:offsets[d + 1]] for d in perm.tolist()]
    new_offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    new_offsets[1:] = torch.cumsum(torch.tensor([len(p) for p in pieces], dtype=torch.int64), 0)
    permuted = ops.maxsim(queries, torch.cat(pieces) if pieces else emb, new_offsets)
    torch.testing.assert_close(permuted, scores[:, perm], atol=1e-5, rtol=1e-6)


# ------------------------------------------------------------------ awkward sizes, exactness

AWKWARD_LENGTHS = [0, 1, 7, 83, 0, 113, 769, 1025]


def integer_docs(lengths, dim, dtype=torch.float32, seed=0, device="cpu"):
    """Small integer values: every product and sum is exact in fp32 (and the values exact in
    fp16/bf16), so any summation order gives the reference's result bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    emb = torch.randint(-3, 4, (int(offsets[-1]), dim), generator=gen).float()
    return emb.to(device=device, dtype=dtype), offsets.to(device)


def integer_queries(nq, query_len, dim, seed=1, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (nq, query_len, dim), generator=gen).float().to(device)


@pytest.mark.parametrize("dim", [1, 7, 64, 96, 128, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_maxsim_awkward_sizes_exact(device, dim, dtype):
    emb, offsets = integer_docs(AWKWARD_LENGTHS, dim, dtype=dtype, device=device)
    # 3 x 33 = 99 query rows: full chunks of every path plus a narrow tail chunk.
    queries = integer_queries(3, 33, dim, device=device)
    got = ops.maxsim(queries, emb, offsets)
    want = reference.maxsim(queries, emb.float(), offsets)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dim", [7, 96, 130])
@pytest.mark.parametrize("nq, query_len", [(1, 1), (1, 32), (2, 17), (1, 40), (5, 32)])
def test_maxsim_random_values_within_tolerance(device, dim, nq, query_len):
    emb, offsets = packed_docs([1, 7, 0, 83, 113, 769], dim, device=device, seed=dim)
    queries = torch.randn(nq, query_len, dim, generator=torch.Generator().manual_seed(3)).to(device)
    got = ops.maxsim(queries, emb, offsets)
    torch.testing.assert_close(got, reference.maxsim(queries, emb, offsets),
                               atol=1e-4 * query_len, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_maxsim_subset_through_simd_paths(device, dtype):
    emb, offsets = integer_docs([5, 0, 83, 1, 113, 17, 0, 40], 96, dtype=dtype, device=device)
    queries = integer_queries(2, 32, 96, device=device)
    subset = torch.tensor([7, 2, 2, 0, 1, 6, 4], device=device)
    got = ops.maxsim(queries, emb, offsets, doc_subset=subset)
    assert torch.equal(got, reference.maxsim(queries, emb.float(), offsets, doc_subset=subset))
    assert torch.equal(got[:, 2], got[:, 1]) and got[0, 4] == float("-inf")
    empty = ops.maxsim(queries, emb, offsets, doc_subset=torch.tensor([], dtype=torch.int64, device=device))
    assert empty.shape == (2, 0)


def test_maxsim_zero_queries_and_zero_docs(device):
    emb, offsets = packed_docs([3, 4], 8, device=device)
    assert ops.maxsim(torch.randn(0, 4, 8, device=device), emb, offsets).shape == (0, 2)
    no_docs = ops.maxsim(torch.randn(2, 4, 8, device=device), emb[:0], offsets[:1])
    assert no_docs.shape == (2, 0)


def test_maxsim_nan_in_documents_is_rejected_on_cpu():
    emb, offsets = packed_docs([3, 4, 5], 16)
    emb[5, 9] = float("nan")  # document 1
    with pytest.raises(ValueError, match="doc_emb"):
        ops.maxsim(torch.randn(2, 3, 16), emb, offsets)
    with pytest.raises(ValueError, match="doc_emb"):
        ops.maxsim_topk(torch.randn(2, 3, 16), emb, offsets, 2)
    emb[5, 9] = float("-inf")
    with pytest.raises(ValueError, match="doc_emb"):
        ops.maxsim(torch.randn(2, 3, 16).half(), emb.half(), offsets)
    # Documents that are not scored are not inspected (the check is fused into scoring).
    got = ops.maxsim(torch.randn(2, 3, 16), emb, offsets, doc_subset=torch.tensor([0, 2]))
    assert torch.isfinite(got).all()


def test_maxsim_thread_count_invariance():
    emb, offsets = packed_docs([1, 7, 0, 83, 113, 30, 2, 64] * 8, 96, seed=5)
    queries = torch.randn(3, 32, 96, generator=torch.Generator().manual_seed(6))
    subset = torch.randperm(64, generator=torch.Generator().manual_seed(7))[:40]
    before = ops.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            ops.set_num_threads(threads)
            results.append((ops.maxsim(queries, emb, offsets),
                            ops.maxsim(queries, emb.bfloat16(), offsets, doc_subset=subset),
                            ops.maxsim_topk(queries, emb, offsets, 9)))
    finally:
        ops.set_num_threads(before)
    (a, b, (c, d)), (a2, b2, (c2, d2)) = results
    assert torch.equal(a, a2) and torch.equal(b, b2) and torch.equal(c, c2) and torch.equal(d, d2)


# ------------------------------------------------------------------------------ top-k


@pytest.mark.parametrize("k", [1, 3, 10, 64, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_maxsim_topk_matches_reference_with_ties(device, k, dtype):
    # Integer values in a narrow range: many equal scores, so the tie rule (lower id first)
    # decides; both sides are exact, so scores and indices must match exactly.
    lengths = [3, 0, 5, 1, 7, 0, 2, 11] * 8
    emb, offsets = integer_docs(lengths, 7, dtype=dtype, device=device)
    queries = integer_queries(3, 5, 7, device=device)
    got_scores, got_ids = ops.maxsim_topk(queries, emb, offsets, k)
    want_scores, want_ids = reference.maxsim_topk(queries, emb.float(), offsets, k)
    k_out = min(k, len(lengths))
    assert got_scores.shape == got_ids.shape == (3, k_out)
    assert got_scores.dtype == torch.float32 and got_ids.dtype == torch.int64
    assert torch.equal(got_scores, want_scores) and torch.equal(got_ids, want_ids)
    # More slots than non-empty documents: the rest is (-inf, -1), never an empty document.
    if k_out > 48:
        assert (got_ids[:, 48:] == -1).all() and torch.isneginf(got_scores[:, 48:]).all()
    assert torch.isfinite(got_scores[got_ids >= 0]).all()


def test_maxsim_topk_subset_returns_document_ids(device):
    emb, offsets = integer_docs([4, 9, 0, 2, 6, 3], 32, device=device)
    queries = integer_queries(2, 5, 32, device=device)
    subset = torch.tensor([5, 2, 0, 4, 4], device=device)
    got_scores, got_ids = ops.maxsim_topk(queries, emb, offsets, 4, doc_subset=subset)
    want_scores, want_ids = reference.maxsim_topk(queries, emb, offsets, 4, doc_subset=subset)
    assert torch.equal(got_scores, want_scores) and torch.equal(got_ids, want_ids)
    assert set(got_ids.flatten().tolist()) <= {5, 0, 4, -1}  # 2 is empty


def test_maxsim_topk_shapes_numpy_and_empty_cases(device):
    emb, offsets = packed_docs([3, 0, 5], 16, device=device)
    scores, ids = ops.maxsim_topk(torch.randn(4, 16, device=device), emb, offsets, 5)
    assert scores.shape == ids.shape == (3,) and ids[-1] == -1 and scores[-1] == float("-inf")
    scores, ids = ops.maxsim_topk(torch.randn(2, 4, 16, device=device), emb[:0], offsets[:1], 5)
    assert scores.shape == ids.shape == (2, 0)
    scores, ids = ops.maxsim_topk(torch.randn(0, 4, 16, device=device), emb, offsets, 2)
    assert scores.shape == ids.shape == (0, 2)
    if device == "cpu":
        np_scores, np_ids = ops.maxsim_topk(np.ones((4, 16), np.float32), emb.numpy(), offsets.numpy(), 2)
        assert isinstance(np_scores, np.ndarray) and np_ids.dtype == np.int64 and np_ids.shape == (2,)


@pytest.mark.parametrize("subset", [None, [9, 3, 3, 0, 12, 5, 1, 7, 2]])
def test_maxsim_topk_chunked_merge_logic(monkeypatch, subset):
    """The CUDA path scores chunks of documents and merges a running top-k in torch; its
    merge runs here on CPU tensors (maxsim_launch dispatches by device) with tiny chunks."""
    maxsim_module = sys.modules["colbert_engine.ops.maxsim"]  # the module, not the function
    monkeypatch.setattr(maxsim_module, "_CUDA_TOPK_CHUNK", 4)
    emb, offsets = integer_docs([3, 0, 5, 1, 7, 0, 2, 11, 4, 4, 0, 6, 2], 7)
    queries = integer_queries(3, 5, 7)
    subset = None if subset is None else torch.tensor(subset)
    for k in (1, 5, 13):
        want_scores, want_ids = reference.maxsim_topk(queries, emb, offsets, k, doc_subset=subset)
        k_out = want_ids.shape[1]
        scores = torch.empty(3, k_out)
        ids = torch.empty(3, k_out, dtype=torch.int64)
        maxsim_module._cuda_topk(queries, emb, offsets, subset, k_out, scores, ids)
        assert torch.equal(scores, want_scores) and torch.equal(ids, want_ids)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None])
def test_maxsim_topk_rejects_bad_k(k):
    emb, offsets = packed_docs([3, 2], 8)
    with pytest.raises(ValueError, match="k"):
        ops.maxsim_topk(torch.randn(2, 8), emb, offsets, k)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 60), min_size=0, max_size=20),
       dim=st.sampled_from([1, 5, 16, 33, 64]), query_len=st.integers(1, 40),
       nq=st.integers(1, 3), k=st.integers(1, 25),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**16))
def test_maxsim_and_topk_properties(lengths, dim, query_len, nq, k, dtype, seed):
    emb, offsets = integer_docs(lengths, dim, dtype=dtype, seed=seed)
    queries = integer_queries(nq, query_len, dim, seed=seed + 1)
    scores = ops.maxsim(queries, emb, offsets)
    assert torch.equal(scores, reference.maxsim(queries, emb.float(), offsets))
    top_scores, top_ids = ops.maxsim_topk(queries, emb, offsets, k)
    want_scores, want_ids = reference.maxsim_topk(queries, emb.float(), offsets, k)
    assert torch.equal(top_scores, want_scores) and torch.equal(top_ids, want_ids)
    # The top-k scores are the k largest of the full score matrix.
    k_out = min(k, len(lengths))
    expected = scores.sort(dim=1, descending=True).values[:, :k_out]
    assert torch.equal(top_scores, expected)


# ------------------------------------------------------------------ every CPU SIMD path

# The paths a CPU whose best path is the key can also run (CE_ISA caps the choice).
_ISA_BELOW = {"scalar": [], "avx2": ["scalar"], "avx512": ["scalar", "avx2"], "neon": ["scalar"]}


def test_isa_environment_is_respected():
    """In the subprocess runs below CE_ISA is set; the kernels must run that path."""
    forced = os.environ.get("CE_ISA")
    if forced is None:
        pytest.skip("CE_ISA not set (the ISA path tests set it in a subprocess)")
    assert _native.cpu().isa() == forced


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "neon"])
def test_isa_path(isa):
    """Reruns this file's CPU tests with CE_ISA=<isa>; the best ISA already ran in-process."""
    if os.environ.get("CE_ISA"):
        pytest.skip("already inside an ISA run")
    best = _native.cpu().isa()
    if isa not in _ISA_BELOW[best]:
        pytest.skip(f"{isa} is this process's path ({best}) or not supported by this CPU")
    root = Path(__file__).resolve().parents[2]
    # The package this process imported (installed, or python/ with an in-place build).
    package_parent = str(Path(colbert_engine.__file__).resolve().parents[1])
    env = dict(os.environ, CE_ISA=isa, PYTHONPATH=os.pathsep.join(
        [package_parent, os.environ.get("PYTHONPATH", "")]))
    # The hypothesis tests exercise the ISA-independent driver; the rest covers the kernels.
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(Path(__file__)),
           "-k", "not test_isa_path and not properties and not invariant_to_document_order"]
    result = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_zero_dim_is_rejected_on_every_device(device):
    """csrc/cuda/maxsim.cu rejects dim 0, so the op does on the CPU too (it returned zeros)."""
    queries, emb = torch.zeros(1, 2, 0, device=device), torch.zeros(3, 0, device=device)
    offsets = torch.tensor([0, 1, 3], device=device)
    with pytest.raises(ValueError, match="queries"):
        ops.maxsim(queries, emb, offsets)
    with pytest.raises(ValueError, match="queries"):
        ops.maxsim_topk(queries, emb, offsets, 1)


def test_numpy_integer_k_is_an_int():
    """k = np.int64(2) (e.g. read from an array) was rejected as "expected a positive int"."""
    gen = torch.Generator().manual_seed(0)
    queries, doc_emb = torch.randn(4, 8, generator=gen), torch.randn(10, 8, generator=gen)
    doc_offsets = torch.tensor([0, 3, 7, 10])
    want = ops.maxsim_topk(queries, doc_emb, doc_offsets, 2)
    for k in (np.int64(2), np.int32(2)):
        got = ops.maxsim_topk(queries, doc_emb, doc_offsets, k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# ------------------------------------------------------------------ impossible sizes

_IMPOSSIBLE_SIZE_SCRIPT = """
import torch
from colbert_engine import ops
nq, n_docs = 1_000_000, 1_000_000  # inputs of a few MB; k * nq hits of 12+ bytes: ~10^13 B
queries, docs = torch.ones(nq, 1, 1), torch.ones(n_docs, 1)
offsets = torch.arange(n_docs + 1)
for call in (lambda: ops.maxsim_topk(queries, docs, offsets, n_docs),
             lambda: ops.maxsim(queries, docs, offsets)):
    try:
        call()
        print("no error")
    except MemoryError as exc:
        print("MemoryError:", exc)
"""


def test_impossible_size_raises_memory_error_not_abort():
    """A top-k (or full score matrix) no machine can hold is a MemoryError naming the
    argument, and the process lives on; run in a subprocess so a regression to an abort
    or an OOM kill fails this test instead of the whole session."""
    package_parent = str(Path(colbert_engine.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _IMPOSSIBLE_SIZE_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("MemoryError:") for line in lines), result.stdout
    assert lines[0].startswith("MemoryError: k:") and "GiB" in lines[0]
