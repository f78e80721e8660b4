"""ops.centroid_scores / ops.candidates / ops.centroid_interaction (the PLAID funnel's centroid
stages) against ops.reference on awkward synthetic indexes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine import ops
from colbert_engine.index.segment import build_ivf
from colbert_engine.ops import reference


def make_index(n_docs, n_centroids, max_len=12, seed=0, empty_every=5):
    """Random packed doc codes (every `empty_every`-th doc empty) and their inverted lists:
    for each centroid the sorted unique docs having a token there."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (n_docs,), generator=gen)
    if empty_every:
        lengths[::empty_every] = 0
    doc_offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    doc_offsets[1:] = torch.cumsum(lengths, 0)
    doc_codes = torch.randint(0, n_centroids, (int(doc_offsets[-1]),), generator=gen, dtype=torch.int32)
    ivf, ivf_offsets = build_ivf(doc_codes.numpy(), doc_offsets.numpy(), n_centroids)
    return doc_codes, doc_offsets, torch.from_numpy(ivf), torch.from_numpy(ivf_offsets)


def dyadic_scores(shape, seed, levels=16):
    """Scores in multiples of 1/8: every sum is exact in fp32, so kernel and reference agree
    bit for bit whatever the summation order, ties included."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-levels, levels + 1, shape, generator=gen).float() / 8


def subsets(n_docs, seed):
    gen = torch.Generator().manual_seed(seed)
    return {
        "none": None,
        "all_false": torch.zeros(n_docs, dtype=torch.bool),
        "all_true": torch.ones(n_docs, dtype=torch.bool),
        "random": torch.rand(n_docs, generator=gen) < 0.5,
    }


# --------------------------------------------------------------------------- centroid_scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("query_shape", [(1, 64), (32, 64), (3, 7, 64), (0, 5, 64)])
def test_centroid_scores_matches_reference(device, dtype, query_shape):
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(query_shape, generator=gen).to(device=device, dtype=dtype)
    centroids = torch.randn(1000, 64, generator=gen).to(device=device, dtype=dtype)
    if query_shape[-2] == 0:
        with pytest.raises(ValueError, match="queries"):
            ops.centroid_scores(queries, centroids)
        return
    got = ops.centroid_scores(queries, centroids)
    want = reference.centroid_scores(queries.cpu(), centroids.cpu())
    expected_shape = (1000, query_shape[0]) if len(query_shape) == 2 else (query_shape[0], 1000, query_shape[1])
    assert got.shape == expected_shape and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_centroid_scores_numpy_in_numpy_out():
    rng = np.random.default_rng(0)
    queries, centroids = rng.standard_normal((5, 16), dtype=np.float32), rng.standard_normal((9, 16), dtype=np.float32)
    got = ops.centroid_scores(queries, centroids)
    assert isinstance(got, np.ndarray) and got.shape == (9, 5)
    np.testing.assert_allclose(got, centroids @ queries.T, rtol=1e-5, atol=1e-5)


def test_centroid_scores_bad_input():
    centroids = torch.randn(8, 16)
    with pytest.raises(ValueError, match="queries"):
        ops.centroid_scores(torch.randn(4, 15), centroids)
    with pytest.raises(ValueError, match="queries"):
        ops.centroid_scores(torch.full((4, 16), float("nan")), centroids)
    with pytest.raises(ValueError, match="centroids"):
        ops.centroid_scores(torch.randn(4, 16), torch.full((8, 16), float("nan")))
    with pytest.raises(TypeError, match="queries"):
        ops.centroid_scores(torch.randn(4, 16).double(), centroids)
    with pytest.raises(ValueError, match="centroids"):
        ops.centroid_scores(torch.randn(4, 16), torch.randn(16))


# --------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("n_centroids", [1, 7, 1000])
@pytest.mark.parametrize("query_len", [1, 32])
@pytest.mark.parametrize("nprobe", [1, 2, 4, "more_than_k"])
@pytest.mark.parametrize("n_docs", [0, 1, 1000])
def test_candidates_matches_reference(n_centroids, query_len, nprobe, n_docs):
    nprobe = n_centroids + 3 if nprobe == "more_than_k" else nprobe
    _, _, ivf, ivf_offsets = make_index(n_docs, n_centroids, seed=n_docs + n_centroids)
    # Coarse scores: many ties, which must go to the lower centroid id.
    scores = dyadic_scores((n_centroids, query_len), seed=query_len, levels=3)
    for name, subset in subsets(n_docs, seed=nprobe).items():
        got = ops.candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=subset)
        want = reference.candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=subset)
        assert got.dtype == torch.int32 and got.dim() == 1, name
        assert torch.equal(got, want), name


def test_candidates_large_nprobe_selection_path():
    # nprobe above the insertion-array limit takes the per-token selection path.
    _, _, ivf, ivf_offsets = make_index(500, 300, seed=3)
    scores = dyadic_scores((2, 300, 5), seed=4, levels=4)
    for nprobe in (65, 150, 299):
        got = ops.candidates(scores, ivf, ivf_offsets, nprobe, 500)
        want = reference.candidates(scores, ivf, ivf_offsets, nprobe, 500)
        assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_candidates_batched_equals_per_query():
    _, _, ivf, ivf_offsets = make_index(777, 5000, seed=5)  # > one 4096-centroid scan chunk
    scores = torch.randn(5, 5000, 32, generator=torch.Generator().manual_seed(6))
    subset = torch.rand(777, generator=torch.Generator().manual_seed(7)) < 0.7
    got = ops.candidates(scores, ivf, ivf_offsets, 2, 777, subset=subset)
    assert isinstance(got, list) and len(got) == 5
    for q in range(5):
        assert torch.equal(got[q], ops.candidates(scores[q], ivf, ivf_offsets, 2, 777, subset=subset))
        assert torch.equal(got[q], reference.candidates(scores[q], ivf, ivf_offsets, 2, 777, subset=subset))


def test_candidates_empty_lists_and_numpy():
    # Every list empty but one; numpy in, numpy out.
    ivf = np.array([3, 5], dtype=np.int32)
    ivf_offsets = np.array([0, 0, 2, 2], dtype=np.int64)
    scores = np.array([[1.0], [0.0], [0.5]], dtype=np.float32)
    assert ops.candidates(scores, ivf, ivf_offsets, 1, 8).tolist() == []
    got = ops.candidates(scores, ivf, ivf_offsets, 3, 8)
    assert isinstance(got, np.ndarray) and got.tolist() == [3, 5]


@settings(max_examples=40, deadline=None)
@given(n_docs=st.integers(0, 300), n_centroids=st.integers(1, 80), query_len=st.integers(1, 9),
       nprobe=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_candidates_is_union_of_brute_force_top_cells(n_docs, n_centroids, query_len, nprobe, seed):
    _, _, ivf, ivf_offsets = make_index(n_docs, n_centroids, seed=seed)
    scores = torch.randn(n_centroids, query_len, generator=torch.Generator().manual_seed(seed))
    got = set(ops.candidates(scores, ivf, ivf_offsets, nprobe, n_docs).tolist())
    # Continuous scores: no ties, so topk's cells are the top cells.
    top_cells = set(scores.topk(min(nprobe, n_centroids), dim=0).indices.flatten().tolist())
    listed = {d for c in top_cells for d in ivf[ivf_offsets[c]:ivf_offsets[c + 1]].tolist()}
    assert got == listed  # superset of each top cell's docs, and nothing else


def test_candidates_bad_input():
    _, _, ivf, ivf_offsets = make_index(20, 6, seed=1)
    scores = torch.randn(6, 4)
    with pytest.raises(ValueError, match="ivf"):
        ops.candidates(scores, ivf, ivf_offsets, 1, int(ivf.max()))  # ids >= n_docs
    with pytest.raises(ValueError, match="ivf"):
        bad = ivf.clone()
        bad[0] = -1
        ops.candidates(scores, bad, ivf_offsets, 1, 20)
    with pytest.raises(ValueError, match="ivf_offsets"):
        ops.candidates(scores, ivf, ivf_offsets[:-1], 1, 20)  # wrong length
    with pytest.raises(ValueError, match="ivf_offsets"):
        bad = ivf_offsets.clone()
        bad[2] = bad[3] + 1
        ops.candidates(scores, ivf, bad, 1, 20)  # not monotone
    with pytest.raises(ValueError, match="ivf_offsets"):
        bad = ivf_offsets.clone()
        bad[-1] -= 1
        ops.candidates(scores, ivf, bad, 1, 20)  # does not end at len(ivf)
    with pytest.raises(ValueError, match="nprobe"):
        ops.candidates(scores, ivf, ivf_offsets, 0, 20)
    with pytest.raises(TypeError, match="nprobe"):
        ops.candidates(scores, ivf, ivf_offsets, 1.5, 20)
    with pytest.raises(ValueError, match="scores"):
        ops.candidates(torch.full((6, 4), float("nan")), ivf, ivf_offsets, 1, 20)
    with pytest.raises(ValueError, match="scores"):
        ops.candidates(torch.randn(6), ivf, ivf_offsets, 1, 20)
    with pytest.raises(ValueError, match="subset"):
        ops.candidates(scores, ivf, ivf_offsets, 1, 20, subset=torch.ones(19, dtype=torch.bool))
    with pytest.raises(TypeError, match="subset"):
        ops.candidates(scores, ivf, ivf_offsets, 1, 20, subset=torch.ones(20))
    with pytest.raises(TypeError, match="ivf"):
        ops.candidates(scores, ivf.float(), ivf_offsets, 1, 20)


# --------------------------------------------------------------------------- centroid_interaction


@pytest.mark.parametrize("n_centroids", [1, 7, 1000])
@pytest.mark.parametrize("query_len", [1, 32])
@pytest.mark.parametrize("n_docs", [1, 1000])
@pytest.mark.parametrize("threshold", [None, 0.5, 100.0])
@pytest.mark.parametrize("ndocs", [1, 7, 5000])
def test_centroid_interaction_matches_reference(n_centroids, query_len, n_docs, threshold, ndocs):
    doc_codes, doc_offsets, _, _ = make_index(n_docs, n_centroids, seed=n_docs * 3 + n_centroids)
    scores = dyadic_scores((n_centroids, query_len), seed=query_len + n_centroids)
    gen = torch.Generator().manual_seed(ndocs)
    candidates = torch.sort(torch.randperm(n_docs, generator=gen)[: max(1, n_docs // 2)]).values
    got_scores, got_ids = ops.centroid_interaction(scores, doc_codes, doc_offsets, candidates, ndocs,
                                                   threshold=threshold)
    want_scores, want_ids = reference.centroid_interaction(scores, doc_codes, doc_offsets, candidates,
                                                           ndocs, threshold=threshold)
    assert got_scores.dtype == torch.float32 and got_ids.dtype == torch.int32
    assert got_ids.numel() == min(ndocs, candidates.numel())
    # Dyadic scores: exact sums, so equal scores and the same tie order (score desc, id asc).
    assert torch.equal(got_scores, want_scores)
    assert torch.equal(got_ids, want_ids)


def test_centroid_interaction_empty_and_pruned_documents_score_minus_inf():
    # doc 0: codes {0, 1}; doc 1: empty; doc 2: only centroid 1 (pruned); doc 3: centroid 0.
    scores = torch.tensor([[0.75, 0.25], [0.125, -0.5]])  # centroid max: 0.75 kept, 0.125 pruned
    doc_codes = torch.tensor([0, 1, 1, 0], dtype=torch.int32)
    doc_offsets = torch.tensor([0, 2, 2, 3, 4])
    candidates = torch.tensor([0, 1, 2, 3])
    approx, ids = ops.centroid_interaction(scores, doc_codes, doc_offsets, candidates, 10, threshold=0.5)
    assert ids.tolist() == [0, 3, 1, 2]  # -inf docs last, by id
    assert approx.tolist() == [1.0, 1.0, float("-inf"), float("-inf")]
    approx, ids = ops.centroid_interaction(scores, doc_codes, doc_offsets, candidates, 10)
    assert ids.tolist() == [0, 3, 2, 1] and approx.tolist() == [1.0, 1.0, -0.375, float("-inf")]


def test_centroid_interaction_negative_scores_not_clamped():
    scores = -torch.ones(3, 4)
    approx, ids = ops.centroid_interaction(scores, torch.tensor([0, 1, 2], dtype=torch.int32),
                                           torch.tensor([0, 3]), torch.tensor([0]), 1)
    assert approx.tolist() == [-4.0] and ids.tolist() == [0]


def test_centroid_interaction_no_candidates():
    doc_codes, doc_offsets, _, _ = make_index(10, 4)
    approx, ids = ops.centroid_interaction(torch.randn(4, 3), doc_codes, doc_offsets,
                                           torch.empty(0, dtype=torch.int32), 5, threshold=0.1)
    assert approx.shape == (0,) and ids.shape == (0,) and ids.dtype == torch.int32


def test_centroid_interaction_batched_equals_per_query():
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(2000, 300, seed=8)
    scores = dyadic_scores((4, 300, 32), seed=9)
    cands = ops.candidates(scores, ivf, ivf_offsets, 2, 2000)
    cands[2] = cands[2][:0]  # one query without candidates
    got = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 50, threshold=1.0)
    assert isinstance(got, list) and len(got) == 4
    for q in range(4):
        single = ops.centroid_interaction(scores[q], doc_codes, doc_offsets, cands[q], 50, threshold=1.0)
        want = reference.centroid_interaction(scores[q], doc_codes, doc_offsets, cands[q], 50, threshold=1.0)
        for g, s, w in zip(got[q], single, want):
            assert torch.equal(g, s) and torch.equal(g, w)


def test_funnel_stage_2_then_stage_3():
    """Stage 3 is the same op without threshold on the stage-2 survivors."""
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(3000, 500, seed=10)
    scores = dyadic_scores((500, 32), seed=11)
    cands = ops.candidates(scores, ivf, ivf_offsets, 4, 3000)
    _, survivors = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 256, threshold=0.5)
    got = ops.centroid_interaction(scores, doc_codes, doc_offsets, survivors, 64)
    want = reference.centroid_interaction(scores, doc_codes, doc_offsets, survivors, 64)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_centroid_interaction_numpy_and_int64_candidates():
    doc_codes, doc_offsets, _, _ = make_index(50, 9, seed=12)
    scores = dyadic_scores((9, 4), seed=13)
    cands = np.arange(0, 50, 3, dtype=np.int64)
    approx, ids = ops.centroid_interaction(scores.numpy(), doc_codes.numpy(), doc_offsets.numpy(), cands, 5)
    assert isinstance(approx, np.ndarray) and isinstance(ids, np.ndarray) and ids.dtype == np.int32
    want = reference.centroid_interaction(scores, doc_codes, doc_offsets, torch.from_numpy(cands), 5)
    assert ids.tolist() == want[1].tolist() and approx.tolist() == want[0].tolist()


@settings(max_examples=30, deadline=None)
@given(n_docs=st.integers(1, 120), n_centroids=st.integers(1, 40), query_len=st.integers(1, 8),
       ndocs=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_centroid_interaction_equals_maxsim_over_centroid_vectors(n_docs, n_centroids, query_len, ndocs, seed):
    gen = torch.Generator().manual_seed(seed)
    doc_codes, doc_offsets, _, _ = make_index(n_docs, n_centroids, seed=seed)
    queries = torch.randn(query_len, 16, generator=gen)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, 16, generator=gen), dim=1)
    candidates = torch.randperm(n_docs, generator=gen)[: torch.randint(1, n_docs + 1, (1,), generator=gen).item()]
    scores = ops.centroid_scores(queries, centroids)
    approx, ids = ops.centroid_interaction(scores, doc_codes, doc_offsets, candidates, ndocs)
    exact = reference.maxsim(queries, centroids[doc_codes.long()], doc_offsets)  # (n_docs,)
    torch.testing.assert_close(approx, exact[ids.long()], atol=1e-4, rtol=1e-5)
    # The returned ids are the best by the reference, modulo near-ties at the cut.
    best = torch.sort(exact[candidates], descending=True).values
    kept = min(ndocs, candidates.numel())
    assert ids.numel() == kept and len(set(ids.tolist())) == kept
    assert set(ids.tolist()) <= set(candidates.tolist())
    torch.testing.assert_close(torch.sort(approx, descending=True).values, best[:kept], atol=1e-4, rtol=1e-5)


def test_centroid_interaction_bad_input():
    doc_codes, doc_offsets, _, _ = make_index(20, 6, seed=1)
    scores = torch.randn(6, 4)
    cands = torch.arange(20)
    with pytest.raises(ValueError, match="doc_codes"):
        bad = doc_codes.clone()
        bad[0] = 6
        ops.centroid_interaction(scores, bad, doc_offsets, cands, 5)
    with pytest.raises(ValueError, match="doc_codes"):
        bad = doc_codes.clone()
        bad[0] = -1
        ops.centroid_interaction(scores, bad, doc_offsets, cands, 5)
    with pytest.raises(ValueError, match="candidates"):
        ops.centroid_interaction(scores, doc_codes, doc_offsets, torch.tensor([20]), 5)
    with pytest.raises(ValueError, match="candidates"):
        ops.centroid_interaction(scores, doc_codes, doc_offsets, torch.tensor([-1]), 5)
    with pytest.raises(ValueError, match="ndocs"):
        ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 0)
    with pytest.raises(ValueError, match="scores"):
        ops.centroid_interaction(torch.full((6, 4), float("nan")), doc_codes, doc_offsets, cands, 5)
    with pytest.raises(ValueError, match="doc_offsets"):
        bad = doc_offsets.clone()
        bad[3] = bad[4] + 1
        ops.centroid_interaction(scores, doc_codes, bad, cands, 5)
    with pytest.raises(ValueError, match="threshold"):
        ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 5, threshold=float("nan"))
    with pytest.raises(ValueError, match="candidates"):
        ops.centroid_interaction(torch.randn(2, 6, 4), doc_codes, doc_offsets, [cands], 5)


# --------------------------------------------------------------------------- threads


@pytest.fixture
def restore_threads():
    before = ops.get_num_threads()
    yield
    ops.set_num_threads(before)


def test_thread_count_invariance(restore_threads):
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(5000, 5000, max_len=40, seed=14)
    scores = torch.randn(3, 5000, 32, generator=torch.Generator().manual_seed(15))
    subset = torch.rand(5000, generator=torch.Generator().manual_seed(16)) < 0.9
    results = []
    for threads in (1, 3):
        ops.set_num_threads(threads)
        cands = ops.candidates(scores, ivf, ivf_offsets, 4, 5000, subset=subset)
        single = ops.candidates(scores[0], ivf, ivf_offsets, 100, 5000)
        stage2 = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 64, threshold=0.5)
        stage3 = ops.centroid_interaction(scores[0], doc_codes, doc_offsets, single, 16)
        results.append((cands, single, stage2, stage3))
    (c1, s1, a1, b1), (c2, s2, a2, b2) = results
    assert all(torch.equal(x, y) for x, y in zip(c1, c2)) and torch.equal(s1, s2)
    for (x_scores, x_ids), (y_scores, y_ids) in zip(a1 + [b1], a2 + [b2]):
        assert torch.equal(x_scores, y_scores) and torch.equal(x_ids, y_ids)


def test_non_contiguous_scores_and_ids():
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(300, 40, seed=17)
    wide = dyadic_scores((6, 40), seed=18)
    scores = wide.T  # (40, 6) view, not contiguous
    ivf_strided = torch.stack([ivf, ivf], dim=1)[:, 0]
    got = ops.candidates(scores, ivf_strided, ivf_offsets, 3, 300)
    assert torch.equal(got, reference.candidates(scores.contiguous(), ivf, ivf_offsets, 3, 300))
    cands = torch.stack([got, got], dim=1)[:, 1]
    got = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 10, threshold=0.25)
    want = reference.centroid_interaction(scores.contiguous(), doc_codes, doc_offsets, cands.contiguous(), 10,
                                          threshold=0.25)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_candidates_batch_split_by_bitmap_budget(monkeypatch):
    from colbert_engine.ops import plaid

    _, _, ivf, ivf_offsets = make_index(1000, 50, seed=19)
    scores = torch.randn(7, 50, 4, generator=torch.Generator().manual_seed(20))
    whole = ops.candidates(scores, ivf, ivf_offsets, 2, 1000)
    monkeypatch.setattr(plaid, "BITMAP_BUDGET_BYTES", 3 * 8 * 16)  # 3 queries per C++ call
    split = ops.candidates(scores, ivf, ivf_offsets, 2, 1000)
    assert all(torch.equal(a, b) for a, b in zip(whole, split))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    from colbert_engine import _native

    if not hasattr(_native.cuda(), "centroid_interaction"):
        pytest.skip("colbert_engine._cuda has no PLAID kernels yet")
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(3000, 700, max_len=30, seed=21)
    scores = dyadic_scores((3, 700, 32), seed=22)
    subset = torch.rand(3000, generator=torch.Generator().manual_seed(23)) < 0.8
    want = ops.candidates(scores, ivf, ivf_offsets, 2, 3000, subset=subset)
    got = ops.candidates(scores.cuda(), ivf.cuda(), ivf_offsets.cuda(), 2, 3000, subset=subset.cuda())
    assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want))
    for threshold in (None, 0.5):
        want_top = ops.centroid_interaction(scores, doc_codes, doc_offsets, want, 100, threshold=threshold)
        got_top = ops.centroid_interaction(scores.cuda(), doc_codes.cuda(), doc_offsets.cuda(),
                                           [g for g in got], 100, threshold=threshold)
        for (gs, gi), (ws, wi) in zip(got_top, want_top):
            assert torch.equal(gs.cpu(), ws) and torch.equal(gi.cpu(), wi)


def test_huge_nprobe_and_ndocs_mean_all():
    """nprobe / ndocs beyond int64 (2**63) behave like "every cell" / "every candidate"
    (they used to fail in the binding or in torch with an unrelated overflow error)."""
    doc_codes, doc_offsets, ivf, ivf_offsets = make_index(20, 6, seed=1)
    scores = torch.randn(6, 4)
    every = ops.candidates(scores, ivf, ivf_offsets, 6, 20)
    assert torch.equal(ops.candidates(scores, ivf, ivf_offsets, 2**63, 20), every)
    assert torch.equal(ops.candidates(scores.unsqueeze(0), ivf, ivf_offsets, 2**70, 20)[0], every)
    cands = torch.arange(20)
    want = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 20)
    got = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, 2**63)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    got = ops.centroid_interaction(scores.unsqueeze(0), doc_codes, doc_offsets, [cands], 2**64)
    assert torch.equal(got[0][1], want[1])
