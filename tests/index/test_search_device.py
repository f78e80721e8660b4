"""The sync-free device search path (colbert_engine/search/device.py).

Its padded-layout logic runs everywhere: the CPU kernels share the CUDA kernels' contracts,
so a shim that forwards ``_native.cuda()`` calls to ``_native.cpu()`` runs the same funnel
on CPU tensors and must reproduce ``plaid_search``. On a GPU the real thing runs, checked
against the CPU index and for the absence of host synchronisation.
"""

from __future__ import annotations

import pytest
import torch

from colbert_engine import Index, _native
from colbert_engine.ops import _validate as V
from colbert_engine.testing import clustered_collection
from colbert_engine.search import device as device_search
from colbert_engine.search import plaid


class _CpuAsCuda:
    """Forwards CUDA kernel calls to the CPU module, dropping the trailing stream argument."""

    def __getattr__(self, name):
        fn = getattr(_native.cpu(), name)
        if name == "lut_workspace_floats":  # a size query, not a kernel: no stream
            return fn
        return lambda *args: fn(*args[:-1])


@pytest.fixture
def cpu_as_cuda(monkeypatch):
    monkeypatch.setattr(_native, "cuda", lambda: _CpuAsCuda())
    monkeypatch.setattr(V, "stream_of", lambda device: 0)


def _compare(got, want, min_overlap=1.0):
    assert len(got) == len(want)
    for (g_scores, g_ids), (w_scores, w_ids) in zip(got, want):
        assert g_scores.shape == g_ids.shape and torch.isfinite(g_scores).all()
        overlap = len(set(g_ids.tolist()) & set(w_ids.tolist())) / max(1, len(w_ids))
        assert len(g_ids) == len(w_ids) and overlap >= min_overlap
        common = {int(d): float(s) for s, d in zip(w_scores, w_ids)}
        for s, d in zip(g_scores.tolist(), g_ids.tolist()):
            if d in common:
                assert s == pytest.approx(common[d], rel=1e-4, abs=1e-4)


def _device_results(index, queries, k, **kw):
    prepared, _ = index._prepare_queries(queries)
    params = plaid.default_params(k, kw.get("nprobe"), kw.get("centroid_score_threshold"), kw.get("ndocs"))
    allowed = index._allowed(kw.get("filter"))
    top_scores, top_ids = device_search.funnel(prepared, index.codec, index.segments, allowed, params)
    out = []
    for scores, ids in zip(top_scores.cpu(), top_ids.cpu()):
        keep = torch.isfinite(scores)
        out.append((scores[keep], ids[keep]))
    return out


@pytest.mark.parametrize("k, nprobe, ndocs", [(10, None, None), (100, None, None), (5, 3, 40), (20, 64, 8)])
def test_device_funnel_on_cpu_kernels_matches_plaid_search(cpu_as_cuda, built_index, collection, k, nprobe, ndocs):
    with Index.open(built_index) as index:
        queries = collection.queries[:6]
        want = index.search_internal(queries, k, nprobe=nprobe, ndocs=ndocs)
        got = _device_results(index, queries, k, nprobe=nprobe, ndocs=ndocs)
        _compare(got, want)


def test_device_funnel_on_cpu_kernels_segments_deletes_filter(cpu_as_cuda, index_copy, collection):
    with Index.open(index_copy) as index:
        more = clustered_collection(n_docs=300, mean_doc_len=40, dim=64, n_queries=1, seed=4)
        index.add(more.doc_emb, more.doc_offsets, ids=[f"new-{i}" for i in range(300)])
        index.delete([f"doc-{i}" for i in range(0, 600, 7)])
        flt = ("json_extract(metadata, '$.lang') = ?", ["de"])
        for kw in ({}, {"filter": flt}):
            want = index.search_internal(collection.queries[:5], 10, **kw)
            got = _device_results(index, collection.queries[:5], 10, **kw)
            _compare(got, want)


@pytest.mark.parametrize("chunk_tokens", [1 << 18, 500])
def test_exact_search_device_on_cpu_kernels_matches_exact_search(cpu_as_cuda, index_copy, collection, chunk_tokens):
    with Index.open(index_copy) as index:
        index.delete([f"doc-{i}" for i in range(0, 600, 5)])
        queries, _ = index._prepare_queries(collection.queries[:4])
        allowed = index._allowed(None)
        want = plaid.exact_search(queries, index.codec, index.segments, allowed, 10)
        got = device_search.exact_search_device(queries, index.codec, index.segments, allowed, 10, chunk_tokens)
        _compare(got, want)


def test_fits_reports_kernel_limits():
    params = plaid.default_params(10)
    assert device_search.fits(32, 4096, params)
    assert not device_search.fits(32, 4096, plaid.default_params(10, nprobe=300))
    assert device_search.fits(32, 256, plaid.default_params(10, nprobe=300))  # probes every cell
    assert not device_search.fits(32, 4096, plaid.default_params(10, ndocs=9000))


@pytest.mark.gpu
@pytest.mark.parametrize("k", [10, 100])
def test_cuda_index_search_matches_cpu(built_index, collection, k):
    with Index.open(built_index) as cpu_index, Index.open(built_index, device="cuda") as gpu_index:
        want = cpu_index.search_internal(collection.queries, k)
        got = gpu_index.search_internal(collection.queries, k)
        # Centroid scores come from different GEMMs: allow a few boundary swaps.
        _compare(got, want, min_overlap=0.9)


@pytest.mark.gpu
def test_cuda_exact_search_matches_cpu(built_index, collection):
    with Index.open(built_index) as cpu_index, Index.open(built_index, device="cuda") as gpu_index:
        want = cpu_index.search_internal(collection.queries, 10, exact=True)
        got = gpu_index.search_internal(collection.queries, 10, exact=True)
        _compare(got, want, min_overlap=0.9)


@pytest.mark.gpu
def test_cuda_funnel_makes_no_host_sync(built_index, collection):
    with Index.open(built_index, device="cuda") as index:
        queries, _ = index._prepare_queries(collection.queries)
        params = plaid.default_params(10)
        device_search.funnel(queries, index.codec, index.segments, None, params)  # caches list lengths
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            device_search.funnel(queries, index.codec, index.segments, None, params)
        finally:
            torch.cuda.set_sync_debug_mode("default")
