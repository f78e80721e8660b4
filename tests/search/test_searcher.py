"""The one funnel (colbert_engine/search/searcher.py): batched equals one by one, the
exhaustive branch equals exact search, results follow the library's one tie rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_engine.ops import reference
from colbert_engine.ops.maxsim import topk_by_score
from colbert_engine.search import Searcher

EVEN = ("json_extract(metadata, '$.even') = 1", ())


def _params(searcher, k, exhaustive_docs=0, **kw):
    return dataclasses.replace(searcher.params(k, **kw), exhaustive_docs=exhaustive_docs)


def _assert_same(got, want):
    assert len(got) == len(want)
    for (g_scores, g_ids), (w_scores, w_ids) in zip(got, want):
        assert g_ids.tolist() == w_ids.tolist()
        torch.testing.assert_close(g_scores, w_scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k, kw", [(10, {}), (100, {}), (7, {"nprobe": 3, "ndocs": 30}), (5, {"nprobe": 10**6})])
@pytest.mark.parametrize("filtered", [False, True])
def test_batch_equals_one_by_one(searched, k, kw, filtered):
    index, queries = searched
    searcher = Searcher(index.codec, index.segments)
    allowed = index._allowed(EVEN if filtered else None)
    params = _params(searcher, k, **kw)
    batch = searcher.search(queries, params, allowed)
    single = [searcher.search(queries[q:q + 1], params, allowed)[0] for q in range(queries.shape[0])]
    _assert_same(batch, single)
    for scores, ids in batch:
        assert len(ids) == k or k == 100
        assert (ids % 9 != 0).all()  # deleted documents never come back
        if filtered:
            assert all(index.metadata([int(i)])[0]["even"] for i in ids[:3])


def test_batch_in_bitmap_groups_equals_whole(searched, monkeypatch):
    import colbert_engine.search.searcher as module

    index, queries = searched
    searcher = Searcher(index.codec, index.segments)
    params = _params(searcher, 10)
    whole = searcher.search(queries, params)
    monkeypatch.setattr(module, "BITMAP_BUDGET_BYTES", 1)  # one query per group
    _assert_same(searcher.search(queries, params), whole)


@pytest.mark.parametrize("filtered", [False, True])
def test_exhaustive_branch_is_exact_search(searched, filtered):
    index, queries = searched
    searcher = Searcher(index.codec, index.segments)
    allowed = index._allowed(EVEN if filtered else None)
    for k in (1, 10, 1000):
        got = searcher.search(queries, _params(searcher, k, exhaustive_docs=10**6), allowed)
        want = searcher.exact(queries, k, allowed)
        _assert_same(got, want)
        expected = int((allowed if allowed is not None else torch.ones(index.n_docs, dtype=torch.bool)).sum())
        assert all(len(ids) == min(k, expected) for _, ids in got)


def test_exact_matches_decompressed_maxsim(searched):
    """Exhaustive scoring from the codes equals MaxSim over the decompressed vectors."""
    from colbert_engine import ops

    index, queries = searched
    want_scores, want_ids = [], []
    for seg in index.segments:
        emb = ops.decompress_residuals(seg.codes, seg.residuals, index.codec.centroids, index.codec.byte_codebook,
                                       index.codec.nbits, inv_norms=seg.inv_norms)
        want_scores.append(ops.maxsim(index.codec.rotate(queries), emb, seg.doc_offsets))
        want_ids.append(torch.arange(seg.n_docs) + seg.doc_base)
    scores = torch.cat(want_scores, dim=1)
    scores[:, index._live.logical_not()] = float("-inf")
    got = Searcher(index.codec, index.segments).exact(queries, 10, index._allowed(None))
    for q, (g_scores, g_ids) in enumerate(got):
        torch.testing.assert_close(g_scores, scores[q, g_ids], rtol=1e-4, atol=1e-4)
        assert float(g_scores[-1]) >= float(scores[q].topk(10).values[-1]) - 1e-4


def test_selective_filter_returns_every_match(searched):
    """A filter with fewer matches than k returns all of them, whatever the funnel would probe."""
    index, queries = searched
    wanted = [3, 250, 640, 9]  # 9 is deleted
    results = index.search_internal(queries, 10, filter=wanted)
    for _, ids in results:
        assert sorted(ids.tolist()) == [3, 250, 640]


def test_empty_results(searched):
    index, queries = searched
    assert all(ids.numel() == 0 for _, ids in index.search_internal(queries, 10, filter=[9]))
    empty = Searcher(index.codec, [])
    for searched_results in (empty.search(queries, empty.params(10)), empty.exact(queries, 10)):
        assert len(searched_results) == queries.shape[0]
        assert all(scores.numel() == 0 and ids.numel() == 0 for scores, ids in searched_results)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), width=st.one_of(st.integers(0, 30), st.integers(1000, 3000)), k=st.integers(1, 12),
       levels=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_topk_by_score_matches_reference(rows, width, k, levels, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, width), generator=gen).float()  # many ties
    scores[scores == 0] = float("-inf")
    ids = torch.stack([torch.randperm(4000, generator=gen)[:width] for _ in range(rows)])  # wide rows: narrowed first
    got = topk_by_score(scores, ids, k)
    want = reference.topk_by_score(scores, ids, k)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_default_params_adapt_to_the_collection():
    from colbert_engine.search import default_params

    fixed = default_params(10)
    assert (fixed.nprobe, fixed.ndocs, fixed.exact_docs, fixed.exhaustive_docs) == (1, 512, 128, 256)
    assert default_params(10, nbits=2).ndocs == 512 and default_params(100).exact_docs == 512
    # 160 tokens probed per query token at k <= 10: ~122 per cell (1M tokens, K = 8,192) -> 2
    # cells, ~70 (Vaswani) -> 3, ~17 (34k, K = 2,048) -> 10.
    assert default_params(10, n_centroids=8192, n_tokens=1_000_000).nprobe == 2
    assert default_params(10, n_centroids=8192, n_tokens=571_311).nprobe == 3
    assert default_params(10, n_centroids=2048, n_tokens=34_000).nprobe == 10
    assert default_params(100, n_centroids=2048, n_tokens=2_000).nprobe == 16
    assert default_params(100, n_centroids=8192, n_tokens=300_000).nprobe == 7   # 256 tokens / 36.6 per cell
    assert default_params(100, n_centroids=8192, n_tokens=1_000_000).nprobe == 3
    assert default_params(10, nprobe=1, n_centroids=2048, n_tokens=34_000).nprobe == 1  # given values win


def test_thread_team_restores_settings_and_results_do_not_depend_on_it(searched, monkeypatch):
    from colbert_engine import ops
    from colbert_engine.search import threads
    import colbert_engine.search.searcher as searcher_module

    index, queries = searched
    ours, theirs, spin = ops.get_num_threads(), torch.get_num_threads(), ops.get_pool_spin_us()
    want = index.search_internal(queries, 10)
    seen = []
    real_launch = searcher_module.lut_maxsim_launch

    def spy(*args, **kwargs):  # the settings while the machine reads as busy
        seen.append((ops.get_num_threads(), torch.get_num_threads(), ops.get_pool_spin_us()))
        return real_launch(*args, **kwargs)

    monkeypatch.setattr(searcher_module, "lut_maxsim_launch", spy)
    monkeypatch.setattr(threads, "search_threads", lambda allowed: 1)
    _assert_same(index.search_internal(queries, 10), want)
    # busy: both teams lowered, the pool sleeps sooner
    assert seen and all(s == (1, 1, min(spin, threads.BUSY_SPIN_US)) for s in seen)
    assert (ops.get_num_threads(), torch.get_num_threads(), ops.get_pool_spin_us()) == (ours, theirs, spin)


def test_searches_at_once_run_on_their_own_threads(searched, monkeypatch):
    """Two searches overlapping in two Python threads: the one that finds the other already
    running uses one kernel thread, the first keeps its team for the whole search (a search
    nests two teams: Index's, then the searcher's); both return what they return alone."""
    import threading

    from colbert_engine import ops
    from colbert_engine.search import threads
    import colbert_engine.search.searcher as searcher_module

    index, queries = searched
    want = [index.search_internal(queries[i:i + 1], 10) for i in range(2)]
    ops.set_num_threads(2)
    both_inside = threading.Barrier(2, timeout=30)
    seen, got = {}, [None, None]
    real_launch = searcher_module.lut_maxsim_launch

    def spy(*args, **kwargs):
        name = threading.current_thread().name
        if name not in seen:
            seen[name] = ops.get_num_threads()
            both_inside.wait()  # the two searches overlap from here on
        return real_launch(*args, **kwargs)

    monkeypatch.setattr(searcher_module, "lut_maxsim_launch", spy)
    monkeypatch.setattr(threads, "search_threads", lambda allowed, now=None: allowed)  # a quiet machine

    def run(i):
        ops.set_num_threads(2)
        got[i] = index.search_internal(queries[i:i + 1], 10)

    workers = [threading.Thread(target=run, args=(i,), name=f"search-{i}") for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers)
    assert sorted(seen.values()) == [1, 2]  # the first search ran alone (its team), the second beside it
    for g, w in zip(got, want):
        _assert_same(g, w)
