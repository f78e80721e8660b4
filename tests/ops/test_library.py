"""The torch.library registrations (ops/_library.py): opcheck on every registered op, results
equal to the public ops, and maxsim + lut_maxsim inside a torch.compile'd function with no
graph break (fullgraph=True)."""

from __future__ import annotations

import os

import pytest
import torch

from colbert_engine import ops
from colbert_engine.ops import reference

NBITS = 2


def _packed(device, lengths=(3, 0, 7, 1, 12), dim=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
    emb = torch.nn.functional.normalize(torch.randn(int(offsets[-1]), dim, generator=gen), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(2, 5, dim, generator=gen), dim=-1)
    return queries.to(device), emb.to(device), offsets.to(device)


def _compressed(device, dim=24, n_centroids=9, seed=0):
    """(queries, centroid scores, codes, residuals, inv_norms, offsets, candidates, weights,
    centroids, cutoffs, emb) of a small compressed collection."""
    queries, emb, offsets = _packed("cpu", dim=dim, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=-1)
    cutoffs = torch.tensor([-0.1, 0.0, 0.1])
    weights = torch.tensor([-0.15, -0.05, 0.05, 0.15])
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, NBITS)
    scores = ops.centroid_scores(queries, centroids)
    candidates = torch.tensor([4, 1, 0, 2])
    tensors = (queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, centroids, cutoffs, emb)
    return tuple(t.to(device) for t in tensors)


def _opcheck_cases(device):
    queries, emb, offsets = _packed(device)
    subset = torch.tensor([4, 0, 2, 2], device=device)
    q, s, codes, res, inv, off, cand, w, cents, cuts, cemb = _compressed(device)
    lib = torch.ops.colbert_engine
    return [
        (lib.maxsim, (queries, emb, offsets), {}),
        (lib.maxsim, (queries[0], emb, offsets, subset), {}),
        (lib.maxsim_topk, (queries, emb, offsets, 3), {}),
        (lib.maxsim_topk, (queries, emb, offsets, 9), {"doc_subset": subset}),
        (lib.lut_maxsim, (q, s, codes, res, inv, off, cand, w, NBITS), {}),
        (lib.compress_residuals, (cemb, cents, cuts, w, NBITS), {}),
        (lib.decompress_residuals, (codes, res, cents, w, NBITS), {}),
        (lib.decompress_residuals, (codes, res, cents, w, NBITS, True, torch.float16, inv), {}),
    ]


@pytest.mark.parametrize("case", range(8))
def test_opcheck(device, case):
    op, args, kwargs = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args, kwargs)


def test_registered_ops_equal_public_ops(device):
    queries, emb, offsets = _packed(device)
    torch.testing.assert_close(torch.ops.colbert_engine.maxsim(queries, emb, offsets),
                               ops.maxsim(queries, emb, offsets), rtol=0, atol=0)
    got = torch.ops.colbert_engine.maxsim_topk(queries, emb, offsets, 2)
    want = ops.maxsim_topk(queries, emb, offsets, 2)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    q, s, codes, res, inv, off, cand, w, *_ = _compressed(device)
    torch.testing.assert_close(torch.ops.colbert_engine.lut_maxsim(q, s, codes, res, inv, off, cand, w, NBITS),
                               ops.lut_maxsim(q, s, codes, res, inv, off, cand, w, NBITS), rtol=0, atol=0)


def test_registered_op_still_validates(device):
    queries, emb, offsets = _packed(device)
    with pytest.raises(ValueError, match="doc_offsets"):
        torch.ops.colbert_engine.maxsim(queries, emb, offsets[:-1])


def _rerank(queries, emb, offsets, scores, codes, residuals, inv_norms, candidates, weights):
    # What a compiled model around the engine does: exact and compressed scores, mixed with
    # plain torch ops before, between and after the kernels.
    exact = ops.maxsim(queries * 1.0, emb, offsets)
    compressed = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, NBITS)
    top_scores, top_ids = ops.maxsim_topk(queries, emb, offsets, 2)
    return exact[:, candidates] - compressed, top_scores.sum() + top_ids.sum()


# Inductor compiles C++ for the surrounding torch ops (over a minute on 2 cores): opt-in.
_INDUCTOR = pytest.param("inductor", marks=[pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("CE_SLOW_TESTS") != "1", reason="set CE_SLOW_TESTS=1 to compile with inductor")])


@pytest.mark.parametrize("backend", ["aot_eager", _INDUCTOR])
def test_torch_compile_fullgraph(device, backend):
    """No graph break: fullgraph=True raises on one; results equal the eager calls."""
    torch._dynamo.reset()
    q, s, codes, res, inv, off, cand, w, _, _, emb = _compressed(device)
    args = (q, emb, off, s, codes, res, inv, cand, w)
    compiled = torch.compile(_rerank, fullgraph=True, backend=backend)
    got = compiled(*args)
    want = _rerank(*args)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0, equal_nan=True)  # empty doc: -inf - -inf
    torch.testing.assert_close(got[1], want[1])
    # The compressed scores agree with exact MaxSim over the decoded vectors (the reference).
    decoded = reference.decompress_residuals(codes.cpu(), res.cpu(), _compressed("cpu")[8], w.cpu(), NBITS,
                                             inv_norms=inv.cpu())
    want_lut = reference.maxsim(q.cpu(), decoded, off.cpu())[:, cand.cpu()]
    torch.testing.assert_close(want[0].cpu(), reference.maxsim(q.cpu(), emb.cpu(), off.cpu())[:, cand.cpu()]
                               - want_lut, atol=1e-4, rtol=1e-4, equal_nan=True)
