"""ops.maxsim against ops.reference.maxsim on awkward packed inputs, every device."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
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
