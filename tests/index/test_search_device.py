"""The CUDA layout of the one funnel (colbert_engine/search/searcher.py).

Its padded, sync-free logic runs everywhere: the CPU kernels share the CUDA kernels'
contracts, so a stand-in that forwards ``_native.cuda()`` calls to ``_native.cpu()`` runs
the CUDA path (``Searcher(backend="cuda")``) on CPU tensors, and must return exactly what
the CPU path returns: the same ids in the same order. On a GPU the real thing runs, checked
against the CPU index and for the absence of host synchronisation.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from colbert_engine import Index, _native
from colbert_engine.ops import _validate as V
from colbert_engine.search import Searcher
from colbert_engine.testing import clustered_collection


class _CpuAsCuda:
    """Forwards CUDA kernel calls to the CPU module, dropping the stream argument, and
    exports the CUDA kernels' limits as the real module does."""

    plaid_max_picks = 8192
    plaid_max_keep = 8192

    def __getattr__(self, name):
        fn = getattr(_native.cpu(), name)
        if name == "lut_workspace_floats":  # a size query, not a kernel: no stream
            return fn

        def call(*args, stream=None, **kwargs):
            assert stream is not None and not args, "CUDA kernels are called by keyword, with a stream"
            return fn(**kwargs)
        return call


@pytest.fixture
def cpu_as_cuda(monkeypatch):
    monkeypatch.setattr(_native, "cuda", lambda: _CpuAsCuda())
    monkeypatch.setattr(V, "stream_of", lambda device: 0)


def _params(index, k, nprobe=None, ndocs=None, exhaustive_docs=0):
    params = Searcher(index.codec, index.segments).params(k, nprobe, None, ndocs)
    return dataclasses.replace(params, exhaustive_docs=exhaustive_docs)


def _same(got, want):
    """Same ids in the same order, same scores."""
    assert len(got) == len(want)
    for (g_scores, g_ids), (w_scores, w_ids) in zip(got, want):
        assert g_ids.tolist() == w_ids.tolist()
        torch.testing.assert_close(g_scores, w_scores, rtol=0, atol=0)


@pytest.mark.parametrize("k, nprobe, ndocs, exhaustive", [(10, None, None, 0), (100, None, None, 0),
                                                          (5, 3, 40, 0), (20, 64, 8, 0), (10, None, None, 10**6)])
def test_cuda_layout_on_cpu_kernels_matches_cpu_layout(cpu_as_cuda, built_index, collection, k, nprobe, ndocs,
                                                        exhaustive):
    with Index.open(built_index) as index:
        queries, _ = index._prepare_queries(collection.queries[:6])
        params = _params(index, k, nprobe, ndocs, exhaustive)
        want = Searcher(index.codec, index.segments).search(queries, params)
        got = Searcher(index.codec, index.segments, backend="cuda").search(queries, params)
        _same(got, want)


def test_cuda_layout_on_cpu_kernels_segments_deletes_filter(cpu_as_cuda, index_copy, collection):
    with Index.open(index_copy) as index:
        more = clustered_collection(n_docs=300, mean_doc_len=40, dim=64, n_queries=1, seed=4)
        index.add(more.doc_emb, more.doc_offsets, ids=[f"new-{i}" for i in range(300)])
        index.delete([f"doc-{i}" for i in range(0, 600, 7)])
        queries, _ = index._prepare_queries(collection.queries[:5])
        for flt in (None, ("json_extract(metadata, '$.lang') = ?", ["de"]), [f"doc-{i}" for i in range(1, 40)]):
            allowed = index._allowed(flt)
            for exhaustive in (0, 100):
                params = _params(index, 10, exhaustive_docs=exhaustive)
                want = Searcher(index.codec, index.segments).search(queries, params, allowed)
                got = Searcher(index.codec, index.segments, backend="cuda").search(queries, params, allowed)
                _same(got, want)
            want = Searcher(index.codec, index.segments).exact(queries, 10, allowed)
            got = Searcher(index.codec, index.segments, backend="cuda").exact(queries, 10, allowed)
            _same(got, want)


def test_cuda_layout_past_the_keep_limit_reads_counts(cpu_as_cuda, monkeypatch, built_index, collection):
    """Where min(ndocs, cap) exceeds the selection limit the CUDA path reads the real counts."""
    monkeypatch.setattr(_CpuAsCuda, "plaid_max_keep", 50)
    with Index.open(built_index) as index:
        queries, _ = index._prepare_queries(collection.queries[:4])
        params = _params(index, 10, nprobe=1, ndocs=40)
        want = Searcher(index.codec, index.segments).search(queries, params)
        got = Searcher(index.codec, index.segments, backend="cuda").search(queries, params)
        _same(got, want)
        with pytest.raises(ValueError, match="ndocs"):
            Searcher(index.codec, index.segments, backend="cuda").search(queries, _params(index, 10, 64, 4000))


def test_cuda_layout_rejects_too_many_picks(cpu_as_cuda, monkeypatch, built_index, collection):
    monkeypatch.setattr(_CpuAsCuda, "plaid_max_picks", 16)
    with Index.open(built_index) as index:
        queries, _ = index._prepare_queries(collection.queries[:2])
        with pytest.raises(ValueError, match="nprobe"):
            Searcher(index.codec, index.segments, backend="cuda").search(queries, _params(index, 10, nprobe=2))


@pytest.mark.gpu
@pytest.mark.parametrize("k", [10, 100])
def test_cuda_index_search_matches_cpu(built_index, collection, k):
    with Index.open(built_index) as cpu_index, Index.open(built_index, device="cuda") as gpu_index:
        want = cpu_index.search_internal(collection.queries, k)
        got = gpu_index.search_internal(collection.queries, k)
        # Centroid scores come from different GEMMs: allow a few boundary swaps.
        _compare_close(got, want, min_overlap=0.9)


@pytest.mark.gpu
def test_cuda_exact_search_matches_cpu(built_index, collection):
    with Index.open(built_index) as cpu_index, Index.open(built_index, device="cuda") as gpu_index:
        want = cpu_index.search_internal(collection.queries, 10, exact=True)
        got = gpu_index.search_internal(collection.queries, 10, exact=True)
        _compare_close(got, want, min_overlap=0.9)


@pytest.mark.gpu
def test_cuda_funnel_makes_no_host_sync(built_index, collection):
    with Index.open(built_index, device="cuda") as index:
        queries, _ = index._prepare_queries(collection.queries)
        searcher = Searcher(index.codec, index.segments)
        params = _params(index, 10)
        searcher.topk(queries, params)  # caches list lengths and the CUDA limits
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            searcher.topk(queries, params)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _compare_close(got, want, min_overlap):
    assert len(got) == len(want)
    for (g_scores, g_ids), (w_scores, w_ids) in zip(got, want):
        assert g_scores.shape == g_ids.shape and torch.isfinite(g_scores).all()
        overlap = len(set(g_ids.tolist()) & set(w_ids.tolist())) / max(1, len(w_ids))
        assert len(g_ids) == len(w_ids) and overlap >= min_overlap
        common = {int(d): float(s) for s, d in zip(w_scores, w_ids)}
        for s, d in zip(g_scores.tolist(), g_ids.tolist()):
            if d in common:
                assert s == pytest.approx(common[d], rel=1e-4, abs=1e-4)
