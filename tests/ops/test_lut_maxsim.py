"""ops.lut_maxsim (scoring compressed documents without decompressing) against
ops.reference.lut_maxsim and against decompress_residuals + maxsim."""

from __future__ import annotations

import functools
import importlib
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
from colbert_engine.ops.codec import byte_codebook

NBITS = [1, 2, 4]


def compressed_collection(lengths, dim, nbits, n_centroids=53, seed=0, device="cpu"):
    """A packed collection compressed with quantile buckets: (centroids, weights, codes,
    residuals, inv_norms, doc_offsets)."""
    return tuple(t.to(device) for t in _compressed_collection(tuple(lengths), dim, nbits, n_centroids, seed))


@functools.lru_cache(maxsize=None)
def _compressed_collection(lengths, dim, nbits, n_centroids, seed):
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=-1)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    n_tokens = int(offsets[-1])
    picks = torch.randint(0, n_centroids, (max(n_tokens, 64),), generator=gen)
    emb = centroids[picks] + 0.3 * torch.randn(picks.numel(), dim, generator=gen) / dim**0.5
    emb = torch.nn.functional.normalize(emb, dim=-1)
    residual = (emb - centroids[(emb @ centroids.T).argmax(1)]).flatten()
    n = 1 << nbits
    cutoffs = torch.quantile(residual, torch.arange(1, n) / n)
    weights = torch.quantile(residual, (torch.arange(n) + 0.5) / n)
    codes, residuals, inv_norms = ops.compress_residuals(emb[:n_tokens], centroids, cutoffs, weights, nbits)
    return centroids, weights, codes, residuals, inv_norms, offsets


def queries_and_scores(centroids, n_queries, query_len, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dim = centroids.shape[1]
    queries = torch.nn.functional.normalize(torch.randn(n_queries, query_len, dim, generator=gen), dim=-1)
    queries = queries.to(centroids.device)
    scores = (centroids @ queries.transpose(1, 2)).contiguous()  # (nq, K, Lq): C @ q.T per query
    return queries, scores


@pytest.mark.parametrize(("nbits", "dim", "query_len"),
                         [(nbits, dim, 32) for nbits in NBITS for dim in (8, 24, 64, 96, 128)]
                         + [(2, 64, query_len) for query_len in (1, 7, 16, 33, 48)])
def test_lut_maxsim_matches_reference(device, nbits, dim, query_len):
    lengths = [1, 0, 7, 83, 113, 2, 0, 31]
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection(lengths, dim, nbits, device=device)
    queries, scores = queries_and_scores(cents, 3, query_len)
    candidates = torch.tensor([3, 1, 0, 4, 4, 7, 6, 2, 5], device=device)
    got = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, nbits)
    assert got.shape == (3, 9) and got.dtype == torch.float32 and got.device == queries.device
    want = reference.lut_maxsim(queries.cpu(), scores.cpu(), codes.cpu(), residuals.cpu(), inv_norms.cpu(),
                                offsets.cpu(), candidates.cpu(), weights.cpu(), nbits)
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)
    assert bool(torch.isinf(got[:, [1, 6]]).all()) and bool((got[:, [1, 6]] < 0).all())


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("dim", [64, 96, 128])
def test_lut_maxsim_equals_decompress_then_maxsim(device, nbits, dim):
    lengths = [5, 0, 120, 1, 64, 33, 17]
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection(lengths, dim, nbits, device=device)
    queries, scores = queries_and_scores(cents, 2, 32)
    candidates = torch.arange(len(lengths), device=device)
    got = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, bucket_weights=weights,
                         nbits=nbits)
    # With the stored fp16 inverse norms the two are the same numbers up to float rounding.
    decoded = ops.decompress_residuals(codes, residuals, cents, weights, nbits, inv_norms=inv_norms)
    torch.testing.assert_close(got, ops.maxsim(queries, decoded, offsets), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, reference.maxsim(queries.cpu(), decoded.cpu(), offsets.cpu()).to(device),
                               atol=1e-4, rtol=0)
    # With the norm recomputed in fp32 they differ by the fp16 rounding of inv_norm (2^-11).
    renormalized = ops.decompress_residuals(codes, residuals, cents, weights, nbits)
    exact = ops.maxsim(queries, renormalized, offsets)
    finite = torch.isfinite(exact)
    assert torch.equal(finite, torch.isfinite(got))
    assert bool(((got[finite] - exact[finite]).abs() <= exact[finite].abs() * 2.0**-11 + 1e-4).all())


def test_lut_maxsim_two_dimensional_query(device):
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([4, 9, 0, 3], 64, 2, device=device)
    queries, scores = queries_and_scores(cents, 1, 32)
    candidates = torch.tensor([2, 0, 3], dtype=torch.int32, device=device)
    got = ops.lut_maxsim(queries[0], scores[0], codes, residuals, inv_norms, offsets, candidates, weights, 2)
    assert got.shape == (3,)
    batch = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, 2)
    assert torch.equal(got, batch[0])


def test_lut_maxsim_no_candidates_and_no_documents(device):
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([], 64, 2, device=device)
    queries, scores = queries_and_scores(cents, 2, 32)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    got = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, empty, weights, 2)
    assert got.shape == (2, 0)


def test_lut_maxsim_numpy_in_numpy_out():
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([3, 5], 24, 4)
    queries, scores = queries_and_scores(cents, 1, 8)
    got = ops.lut_maxsim(queries[0].numpy(), scores[0].numpy(), codes.numpy(), residuals.numpy(),
                         inv_norms.numpy(), offsets.numpy(), np.array([1, 0]), weights.numpy(), 4)
    assert isinstance(got, np.ndarray) and got.shape == (2,)
    want = ops.lut_maxsim(queries[0], scores[0], codes, residuals, inv_norms, offsets, torch.tensor([1, 0]),
                          weights, 4)
    np.testing.assert_array_equal(got, want.numpy())


def test_lut_maxsim_many_queries_span_workspace_groups(monkeypatch):
    module = importlib.import_module("colbert_engine.ops.lut_maxsim")  # ops.lut_maxsim is the function

    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([7, 0, 12, 40], 32, 2)
    queries, scores = queries_and_scores(cents, 5, 16)
    candidates = torch.tensor([0, 1, 2, 3, 2])
    whole = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, 2)
    monkeypatch.setattr(module, "_LUT_WORKSPACE_BYTES", 1)  # one query per group
    grouped = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, 2)
    assert torch.equal(whole, grouped)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=10), nbits=st.sampled_from(NBITS),
       query_len=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_lut_maxsim_property(lengths, nbits, query_len, seed):
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection(lengths, 16, nbits, n_centroids=9,
                                                                                 seed=seed)
    queries, scores = queries_and_scores(cents, 2, query_len, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.randint(0, len(lengths), (len(lengths) + 2,), generator=gen)
    got = ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, nbits)
    want = reference.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, nbits)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_lut_maxsim_thread_count_invariance():
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([9, 0, 130, 1, 77] * 20, 128, 2)
    queries, scores = queries_and_scores(cents, 3, 32)
    candidates = torch.arange(100).flip(0)
    previous = ops.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            ops.set_num_threads(threads)
            results.append(ops.lut_maxsim(queries, scores, codes, residuals, inv_norms, offsets, candidates, weights, 2))
            # one query: every thread on its tables, then on its candidates
            results.append(ops.lut_maxsim(queries[:1], scores[:1], codes, residuals, inv_norms, offsets, candidates,
                                          weights, 2))
    finally:
        ops.set_num_threads(previous)
    assert all(torch.equal(r, w) for r, w in zip(results[2:], results[:2] * 2))


@pytest.mark.parametrize("isa", ["scalar", "avx2"])
def test_lut_maxsim_isa_paths_agree(tmp_path, isa):
    # A capped build of the same kernel against the best one here (in a subprocess: the ISA
    # is chosen once per process). Only the tables' fused multiply-adds may differ.
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([9, 0, 50, 1, 33, 20], 96, 4)
    queries, scores = queries_and_scores(cents, 2, 33)
    args = (queries, scores, codes, residuals, inv_norms, offsets, torch.arange(6), weights)
    torch.save(args, tmp_path / "args.pt")
    code = ("import sys, torch; from colbert_engine import ops; a = torch.load(sys.argv[1]); "
            "torch.save(ops.lut_maxsim(*a, 4), sys.argv[2])")
    env = dict(os.environ, CE_ISA=isa)
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "args.pt"), str(tmp_path / "out.pt")], env=env,
                   check=True)
    capped = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(ops.lut_maxsim(*args, 4), capped, atol=1e-5, rtol=1e-6)


def test_lut_maxsim_bad_input_names_the_argument():
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection([3, 4, 0], 64, 2)
    queries, scores = queries_and_scores(cents, 2, 32)
    candidates = torch.tensor([0, 2])
    good = dict(queries=queries, scores=scores, codes=codes, residuals=residuals, inv_norms=inv_norms,
                doc_offsets=offsets, candidates=candidates, bucket_weights=weights, nbits=2)

    def raises(exc, match, **changes):
        with pytest.raises(exc, match=match):
            ops.lut_maxsim(**{**good, **changes})

    nan_queries = queries.clone()
    nan_queries[0, 0, 0] = float("nan")
    raises(ValueError, "queries", queries=nan_queries)
    raises(ValueError, "queries", queries=queries[:, :0])
    raises(TypeError, "queries", queries=queries.double())
    raises(ValueError, "scores", scores=scores.transpose(1, 2))
    raises(ValueError, "scores", scores=scores[0])
    raises(ValueError, "codes", codes=codes + cents.shape[0])
    raises(ValueError, "codes", codes=codes[:-1])
    raises(ValueError, "residuals", residuals=residuals[:, :8])
    raises(TypeError, "inv_norms", inv_norms=inv_norms.float())
    raises(ValueError, "doc_offsets", doc_offsets=torch.tensor([0, 5, 3, 7]))
    raises(ValueError, "doc_offsets", doc_offsets=torch.tensor([0, 3, 7, 9]))
    raises(ValueError, "candidates", candidates=torch.tensor([0, 3]))
    raises(ValueError, "candidates", candidates=torch.tensor([-1]))
    raises(ValueError, "bucket_weights", bucket_weights=weights[:3])
    raises(ValueError, "nbits", nbits=3)
    raises(ValueError, "^residuals", nbits=4)  # 16 bytes per token are 2 bits at dim 64


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=10), sizes=st.lists(st.integers(0, 6), min_size=1,
       max_size=5), nbits=st.sampled_from(NBITS), query_len=st.integers(1, 40), one_per_group=st.booleans(),
       seed=st.integers(0, 2**16))
def test_lut_maxsim_per_query_offsets_property(lengths, sizes, nbits, query_len, one_per_group, seed):
    """The per-query layout (PLAID's stage 4 for a batch): each query scores its own run of
    candidates, in one call or in workspace groups of one query."""
    module = importlib.import_module("colbert_engine.ops.lut_maxsim")
    cents, weights, codes, residuals, inv_norms, offsets = compressed_collection(lengths, 16, nbits, n_centroids=9,
                                                                                 seed=seed)
    queries, scores = queries_and_scores(cents, len(sizes), query_len, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.randint(0, len(lengths), (sum(sizes),), generator=gen)
    host = [0]
    for size in sizes:
        host.append(host[-1] + size)
    out = torch.full((sum(sizes),), 7.0)
    budget = module._LUT_WORKSPACE_BYTES
    try:
        if one_per_group:
            module._LUT_WORKSPACE_BYTES = 1
        module.lut_maxsim_launch(queries, scores, codes, residuals, inv_norms, offsets, candidates,
                                 byte_codebook(weights, nbits, 16), nbits, out, cand_offsets=torch.tensor(host),
                                 host_offsets=host)
    finally:
        module._LUT_WORKSPACE_BYTES = budget
    want = reference.lut_maxsim_per_query(queries, scores, codes, residuals, inv_norms, offsets, candidates, host,
                                          weights, nbits)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-5)
