"""The PLAID funnel's centroid stages (DESIGN.md section 5, stages 1-3).

- :func:`centroid_scores`: ``S = C @ q.T`` in the centroid-major ``(K, Lq)`` layout.
- :func:`candidates`: top-``nprobe`` cells per query token, union of their inverted lists
  deduplicated with a bitmap, optional subset mask (stage 1).
- :func:`centroid_interaction`: centroid-only late interaction with optional t_cs pruning and
  bounded top-``ndocs`` selection (stage 2 with ``threshold``, stage 3 without).

Kernels: ``csrc/cpu/plaid.cpp`` (contract in ``csrc/common/plaid.h``); references in
:mod:`colbert_engine.ops.reference`. The ``*_launch`` functions skip the checks, for the
search path whose index arrays were validated once when the index was opened.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch

from colbert_engine import _native
from colbert_engine.ops import _validate as V

INDEX_DTYPES = (torch.int32, torch.int64)


# --------------------------------------------------------------------------- argument checks


def _check_finite(x: torch.Tensor, name: str) -> None:
    """NaN/inf check by one min/max reduction (NaN propagates through both): about 5x cheaper
    than ``isfinite(x).all()``, which materialises a mask; matters on the per-query path."""
    if x.numel():
        low, high = torch.aminmax(x)
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            raise ValueError(f"{name}: contains NaN or infinite values")


def _positive_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _check_scores(scores, name: str = "scores") -> torch.Tensor:
    """(K, Lq) or (nq, K, Lq) finite float centroid scores -> contiguous fp32."""
    scores = V.as_tensor(scores, name)
    V.check_device_supported(scores.device, name)
    V.check_dtype(scores, name, V.FLOAT_DTYPES)
    V.check_ndim(scores, name, (2, 3))
    if scores.shape[-2] == 0 or scores.shape[-1] == 0:
        raise ValueError(f"{name}: needs at least one centroid and one query token, got shape {tuple(scores.shape)}")
    _check_finite(scores, name)
    return scores.to(torch.float32).contiguous()


def _check_ids(ids, name: str, upper: int, device) -> torch.Tensor:
    """1-D int32/int64 ids in [0, upper) -> contiguous int32 on `device`."""
    ids = V.as_tensor(ids, name)
    V.check_dtype(ids, name, INDEX_DTYPES)
    V.check_ndim(ids, name, (1,))
    V.check_same_device(device, **{name: ids})
    if ids.numel():
        low, high = torch.aminmax(ids)
        if int(low) < 0 or int(high) >= upper:
            raise ValueError(f"{name}: values must lie in [0, {upper}), got range [{int(low)}, {int(high)}]")
    return ids.to(torch.int32).contiguous()


def _check_ivf(ivf, ivf_offsets, n_centroids: int, n_docs: int, device):
    ivf = _check_ids(ivf, "ivf", n_docs, device)
    ivf_offsets = V.as_tensor(ivf_offsets, "ivf_offsets")
    V.check_same_device(device, ivf_offsets=ivf_offsets)
    V.check_dtype(ivf_offsets, "ivf_offsets", INDEX_DTYPES)
    V.check_ndim(ivf_offsets, "ivf_offsets", (1,))
    if ivf_offsets.numel() != n_centroids + 1:
        raise ValueError(f"ivf_offsets: expected n_centroids + 1 = {n_centroids + 1} entries, got {ivf_offsets.numel()}")
    ivf_offsets = V.check_offsets(ivf_offsets, "ivf_offsets", ivf.numel())
    return ivf, ivf_offsets


def _check_subset(subset, n_docs: int, device):
    if subset is None:
        return None
    subset = V.as_tensor(subset, "subset")
    V.check_dtype(subset, "subset", (torch.bool, torch.uint8))
    V.check_ndim(subset, "subset", (1,))
    V.check_same_device(device, subset=subset)
    if subset.numel() != n_docs:
        raise ValueError(f"subset: expected one entry per document ({n_docs}), got {subset.numel()}")
    return subset.to(torch.bool).contiguous()


def _cuda_module():
    """``colbert_engine._cuda``, checked to carry this family's kernels (csrc/cuda/plaid.cu)."""
    module = _native.cuda()
    if not hasattr(module, "centroid_interaction"):
        raise RuntimeError("colbert_engine._cuda was built without the PLAID kernels (csrc/cuda/plaid.cu); "
                           "move the inputs to the CPU or rebuild")
    return module


def kernels_for(device, backend=None):
    """The native module for ``device``'s tensors. ``backend`` ("cpu" / "cuda") overrides the
    choice: a test runs the CUDA path's calls on CPU tensors through a stand-in module."""
    if (backend or device.type) == "cuda":
        return _cuda_module()
    return _native.cpu()


def device_guard(device):
    """Make ``device`` current for a CUDA launch (a no-op for CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch(device, backend, name, **kwargs):
    """Call kernel ``name`` of the module for (device, backend) by keyword; CUDA calls get
    the device's current stream."""
    module = kernels_for(device, backend)
    if (backend or device.type) == "cuda":
        with device_guard(device):
            getattr(module, name)(**kwargs, stream=V.stream_of(device))
    else:
        getattr(module, name)(**kwargs)


def cuda_limits() -> tuple[int, int]:
    """``(max_picks, max_keep)`` of the CUDA kernels, as the _cuda module exports them:
    ``query_len * nprobe <= max_picks`` unless nprobe >= K, and at most ``max_keep``
    documents kept per query by stages 2-3."""
    module = _cuda_module()
    return int(module.plaid_max_picks), int(module.plaid_max_keep)


def _to_numpy(x):
    if isinstance(x, tuple):
        return tuple(_to_numpy(t) for t in x)
    if isinstance(x, list):
        return [_to_numpy(t) for t in x]
    return x.cpu().numpy()


# --------------------------------------------------------------------------- centroid scores


def centroid_scores(queries, centroids):
    """Centroid scores ``S[c, i] = <centroids[c], queries[i]>`` laid out centroid-major.

    Args:
        queries: ``(Lq, dim)`` or ``(nq, Lq, dim)`` float32/float16/bfloat16.
        centroids: ``(K, dim)`` float32/float16/bfloat16.

    Returns:
        float32 ``(K, Lq)`` for 2-D queries, ``(nq, K, Lq)`` for 3-D, contiguous, on the
        inputs' device (a GEMM in fp32): one centroid's scores over the query tokens are
        contiguous, as :func:`candidates` and :func:`centroid_interaction` read them.
        numpy in, numpy out.
    """
    return_numpy = not isinstance(queries, torch.Tensor) and not isinstance(centroids, torch.Tensor)
    queries = V.as_tensor(queries, "queries")
    centroids = V.as_tensor(centroids, "centroids")
    device = centroids.device
    V.check_device_supported(device, "centroids")
    V.check_same_device(device, queries=queries)
    V.check_dtype(queries, "queries", V.FLOAT_DTYPES)
    V.check_dtype(centroids, "centroids", V.FLOAT_DTYPES)
    V.check_ndim(queries, "queries", (2, 3))
    V.check_ndim(centroids, "centroids", (2,))
    V.check_size(queries, "queries", -1, centroids.shape[1], "centroids' dim")
    if centroids.shape[0] == 0:
        raise ValueError("centroids: needs at least one centroid, got shape (0, dim)")
    if queries.shape[-2] == 0:
        raise ValueError(f"queries: needs at least one query token, got shape {tuple(queries.shape)}")
    _check_finite(queries, "queries")
    _check_finite(centroids, "centroids")
    c = centroids.to(torch.float32).contiguous()
    q = queries.to(torch.float32)
    scores = centroid_scores_launch(q.unsqueeze(0) if q.dim() == 2 else q, c)
    scores = scores[0] if q.dim() == 2 else scores
    return scores.numpy() if return_numpy else scores


def centroid_scores_launch(queries, centroids) -> torch.Tensor:
    """Unchecked :func:`centroid_scores` of fp32 ``(nq, Lq, dim)`` queries and contiguous fp32
    ``(K, dim)`` centroids: ``(nq, K, Lq)``. CPU: the native kernel on the kernels' thread
    pool (no OpenMP team, csrc/cpu/parallel.h); CUDA: cuBLAS through torch. Chosen by the
    device alone: the CUDA path's stand-in on CPU tensors (tests) scores like the CPU path."""
    if centroids.device.type == "cuda":
        return torch.matmul(centroids, queries.transpose(1, 2)).contiguous()
    queries = queries.contiguous()
    nq, query_len, dim = queries.shape
    scores = torch.empty((nq, centroids.shape[0], query_len), dtype=torch.float32, device=centroids.device)
    _native.cpu().centroid_scores(centroids=centroids.data_ptr(), queries=queries.data_ptr(),
                                  scores=scores.data_ptr(), n_queries=nq, n_centroids=centroids.shape[0],
                                  query_len=query_len, dim=dim)
    return scores


# --------------------------------------------------------------------------- stage 1


def candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=None):
    """Candidate documents: the union of the inverted lists of every query token's
    top-``nprobe`` centroids.

    For each query token i, the ``nprobe`` centroids with the highest ``scores[:, i]`` (ties:
    the lower centroid id); ``nprobe >= K`` probes every cell. Their inverted lists are
    merged with a bitmap over ``n_docs`` (no hash set, no sort of the concatenation) and
    documents the ``subset`` mask excludes are dropped here, before any scoring.

    Args:
        scores: ``(K, Lq)`` float32 centroid scores of one query (:func:`centroid_scores`), or
            ``(nq, K, Lq)`` for a batch (one C++ call, threads over queries and cells).
        ivf: ``(ivf_size,)`` int32 (int64 accepted) inverted lists back to back, doc ids in
            ``[0, n_docs)``; each list should hold sorted unique ids, but neither is required.
        ivf_offsets: ``(K + 1,)`` int64, list c is ``ivf[ivf_offsets[c]:ivf_offsets[c + 1]]``.
        nprobe: cells per query token, >= 1.
        n_docs: number of documents in the index, >= 0.
        subset: optional ``(n_docs,)`` bool/uint8 mask, True = allowed (deleted documents and
            metadata filters).

    Returns:
        int32 ``(m,)`` ascending unique document ids for 2-D scores; for 3-D scores a list of
        nq such tensors. numpy in, numpy out.
    """
    return_numpy = not isinstance(scores, torch.Tensor)
    scores = _check_scores(scores)
    device = scores.device
    nprobe = _positive_int(nprobe, "nprobe", 1)
    n_docs = _positive_int(n_docs, "n_docs", 0)
    if n_docs >= 2**31:
        raise ValueError(f"n_docs: at most 2^31 - 1 documents (int32 ids), got {n_docs}")
    ivf, ivf_offsets = _check_ivf(ivf, ivf_offsets, scores.shape[-2], n_docs, device)
    # nprobe >= K probes every cell: clamp so a huge value (2**63) still fits the binding's int64.
    nprobe = min(nprobe, scores.shape[-2])
    subset = _check_subset(subset, n_docs, device)
    batched = scores.dim() == 3
    ids, offsets = candidates_launch(scores if batched else scores.unsqueeze(0), ivf, ivf_offsets,
                                     nprobe, n_docs, subset)
    if batched:
        result = list(torch.split(ids, torch.diff(offsets).tolist()))
    else:
        result = ids
    return _to_numpy(result) if return_numpy else result


# Bitmap workspace per C++ call (nq * n_docs / 8 bytes): larger batches go in query groups.
BITMAP_BUDGET_BYTES = 64 << 20


def candidates_launch(scores, ivf, ivf_offsets, nprobe: int, n_docs: int, subset=None):
    """Unchecked stage 1 for a batch: scores fp32 ``(nq, K, Lq)``, ivf int32, ivf_offsets
    int64, subset bool or None, all contiguous on one device.

    Returns ``(ids, offsets)``: int32 ids of every query back to back, query q's at
    ``ids[offsets[q]:offsets[q + 1]]`` (int64 offsets ``(nq + 1,)``, on the CPU).
    """
    nq = scores.shape[0]
    bitmap_words = (n_docs + 63) // 64
    group = max(1, BITMAP_BUDGET_BYTES // max(1, 8 * bitmap_words))
    if nq > group:
        parts = [_candidates_group(scores[start:start + group], ivf, ivf_offsets, nprobe, n_docs, subset)
                 for start in range(0, nq, group)]
        ids = torch.cat([part_ids for part_ids, _ in parts])
        counts = torch.cat([torch.diff(part_offsets) for _, part_offsets in parts])
        offsets = torch.zeros(nq + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        return ids, offsets
    return _candidates_group(scores, ivf, ivf_offsets, nprobe, n_docs, subset)


def _candidates_group(scores, ivf, ivf_offsets, nprobe: int, n_docs: int, subset):
    device = scores.device
    nq = scores.shape[0]
    if device.type == "cuda":
        max_picks, _ = cuda_limits()
        if nprobe < scores.shape[1] and scores.shape[2] * nprobe > max_picks:
            raise ValueError(f"nprobe: on CUDA query_len * nprobe must be <= {max_picks} (or nprobe >= the "
                             f"number of centroids), got {scores.shape[2]} * {nprobe}")
    bitmap, counts = candidates_mark_launch(scores, ivf, ivf_offsets, nprobe, n_docs, subset)
    offsets = torch.zeros(nq + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=offsets[1:])
    total = int(offsets[-1])  # the one host synchronisation: sizes the output
    ids = torch.empty(total, dtype=torch.int32, device=device)
    if total:
        candidates_collect_launch(bitmap, offsets, ids, n_docs)
    return ids, offsets.cpu()


def candidates_mark_launch(scores, ivf, ivf_offsets, nprobe: int, n_docs: int, subset=None, *, backend=None):
    """Unchecked first phase of stage 1 for a batch (fp32 ``(nq, K, Lq)`` scores, int32 ivf,
    int64 ivf_offsets, bool subset or None; contiguous, one device). Returns ``(bitmap,
    counts)``: int64 ``(nq, words)`` candidate bitmaps and int64 ``(nq,)`` candidate counts,
    on the device (nothing read back)."""
    device = scores.device
    nq, n_centroids, query_len = scores.shape
    words = (n_docs + 63) // 64
    bitmap = torch.zeros((nq, words), dtype=torch.int64, device=device)
    counts = torch.empty(nq, dtype=torch.int64, device=device)
    _launch(device, backend, "candidates_mark", scores=scores.data_ptr(), ivf=ivf.data_ptr(),
            ivf_offsets=ivf_offsets.data_ptr(), subset=0 if subset is None else subset.data_ptr(),
            bitmap=bitmap.data_ptr(), counts=counts.data_ptr(), n_queries=nq, n_centroids=n_centroids,
            query_len=query_len, nprobe=nprobe, n_docs=n_docs, bitmap_words=words)
    return bitmap, counts


def candidates_collect_launch(bitmap, out_offsets, out_ids, n_docs: int, *, backend=None) -> None:
    """Unchecked second phase of stage 1: query q's candidates, ascending, into
    ``out_ids[out_offsets[q]:]`` (int64 offsets ``(nq + 1,)`` on the device; slots a query
    does not fill keep what the caller put there)."""
    _launch(bitmap.device, backend, "candidates_collect", bitmap=bitmap.data_ptr(),
            out_offsets=out_offsets.data_ptr(), out_ids=out_ids.data_ptr(), n_queries=bitmap.shape[0],
            n_docs=n_docs, bitmap_words=bitmap.shape[1])


# --------------------------------------------------------------------------- stages 2-3


def centroid_interaction(scores, doc_codes, doc_offsets, candidates, ndocs, threshold=None):
    """Approximate late-interaction scores from centroid ids only, and the best ``ndocs``.

    Per candidate d: ``sum_i max_{t in d} scores[doc_codes[t], i]``, the max starting at
    -inf. With ``threshold`` (PLAID's t_cs), tokens whose centroid has
    ``max_i scores[c, i] < threshold`` are skipped (a per-centroid keep mask built once per
    query). A document with no remaining token -- empty, or all its tokens pruned -- scores
    -inf and ranks last, ties by doc id. PLAID's C++ (``filter_pids.cpp``) started each max at
    the finite sentinel -9999, so such documents got ``-9999 * Lq`` and also ranked last;
    -inf says the same without a magic number, and stage 3 (no threshold) rescoring the
    survivors gives them their real score. Documents are still returned (m' below), as in
    PLAID. Unlike PLAID we do not deduplicate a document's codes with a hash set: a repeated
    code's max is a no-op.

    Selection is bounded (nth_element over the m scores, then a sort of the kept ndocs), with
    a deterministic order: higher score first, then lower doc id (PLAID's
    ``std::priority_queue<std::pair<float, int>>`` broke ties towards the higher pid, and kept
    every candidate in unbounded per-thread heaps over static slices).

    Args:
        scores: ``(K, Lq)`` float32 centroid scores of one query, or ``(nq, K, Lq)`` for a batch
            (then ``candidates`` is a sequence of nq tensors; one C++ call for all).
        doc_codes: ``(T,)`` int32 (int64 accepted) centroid id in ``[0, K)`` of every packed
            token.
        doc_offsets: ``(n_docs + 1,)`` int64 packed-layout offsets into ``doc_codes``.
        candidates: ``(m,)`` int32/int64 doc ids in ``[0, n_docs)`` (e.g. from
            :func:`candidates`).
        ndocs: documents to keep, >= 1.
        threshold: optional finite float t_cs; None disables pruning (stage 3).

    Returns:
        ``(approx_scores, doc_ids)``: float32 ``(m',)`` and int32 ``(m',)``, best first,
        ``m' = min(ndocs, m)``. For 3-D scores a list of nq such pairs. numpy in, numpy out.
    """
    return_numpy = not isinstance(scores, torch.Tensor)
    scores = _check_scores(scores)
    device = scores.device
    n_centroids = scores.shape[-2]
    ndocs = _positive_int(ndocs, "ndocs", 1)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
            raise ValueError(f"threshold: expected a finite float or None, got {threshold!r}")
        threshold = float(threshold)
    doc_codes = _check_ids(doc_codes, "doc_codes", n_centroids, device)
    doc_offsets = V.as_tensor(doc_offsets, "doc_offsets")
    V.check_same_device(device, doc_offsets=doc_offsets)
    doc_offsets = V.check_offsets(doc_offsets, "doc_offsets", doc_codes.numel())
    n_docs = doc_offsets.numel() - 1
    batched = scores.dim() == 3
    if batched:
        if isinstance(candidates, (torch.Tensor,)) or not hasattr(candidates, "__len__") \
                or len(candidates) != scores.shape[0]:
            raise ValueError(f"candidates: with 3-D scores expected a sequence of {scores.shape[0]} tensors, "
                             f"one per query, got {type(candidates).__name__}")
        per_query = [_check_ids(c, "candidates", n_docs, device) for c in candidates]
    else:
        per_query = [_check_ids(candidates, "candidates", n_docs, device)]
    cand_offsets = torch.zeros(len(per_query) + 1, dtype=torch.int64)
    cand_offsets[1:] = torch.cumsum(torch.tensor([c.numel() for c in per_query], dtype=torch.int64), 0)
    flat = torch.cat(per_query) if per_query else torch.empty(0, dtype=torch.int32, device=device)
    # No query keeps more than its candidates: clamp so a huge ndocs (2**63) fits int64 arithmetic.
    ndocs = min(ndocs, max(1, flat.numel()))
    approx, ids, out_offsets = centroid_interaction_launch(
        scores if batched else scores.unsqueeze(0), doc_codes, doc_offsets, flat,
        cand_offsets.to(device), ndocs, threshold)
    if batched:
        sizes = torch.diff(out_offsets).tolist()
        result = list(zip(torch.split(approx, sizes), torch.split(ids, sizes)))
    else:
        result = (approx, ids)
    return _to_numpy(result) if return_numpy else result


def centroid_interaction_launch(scores, doc_codes, doc_offsets, candidates, cand_offsets,
                                ndocs: int, threshold=None):
    """Unchecked stages 2-3 for a batch: scores fp32 ``(nq, K, Lq)``, doc_codes int32,
    doc_offsets int64, candidates int32 ``(M,)`` of all queries back to back with int64
    ``cand_offsets (nq + 1,)``; all contiguous on one device.

    Returns ``(approx_scores, doc_ids, offsets)``: float32 and int32 of all queries back to
    back, best first per query, query q's at ``[offsets[q]:offsets[q + 1]]`` (int64, CPU).
    """
    device = scores.device
    nq = scores.shape[0]
    cand_offsets_host = cand_offsets.cpu()
    sizes = torch.diff(cand_offsets_host)
    out_offsets = torch.zeros(nq + 1, dtype=torch.int64)
    torch.cumsum(sizes.clamp(max=ndocs), 0, out=out_offsets[1:])
    total = int(out_offsets[-1])
    out_scores = torch.empty(total, dtype=torch.float32, device=device)
    out_ids = torch.empty(total, dtype=torch.int32, device=device)
    if total == 0:
        return out_scores, out_ids, out_offsets
    if device.type == "cuda":
        # The CUDA selection holds min(ndocs, m_q) keys in shared memory.
        _, max_keep = cuda_limits()
        ndocs = min(ndocs, int(sizes.max()))
        if ndocs > max_keep:
            raise ValueError(f"ndocs: at most {max_keep} documents kept per query on CUDA, got {ndocs}")
    centroid_interaction_into(scores, doc_codes, doc_offsets, candidates, cand_offsets.to(device),
                              out_offsets.to(device), ndocs, threshold, out_scores, out_ids)
    return out_scores, out_ids, out_offsets


def centroid_interaction_into(scores, doc_codes, doc_offsets, candidates, cand_offsets, out_offsets,
                              ndocs: int, threshold, out_scores, out_ids, *, backend=None) -> None:
    """Unchecked stages 2-3 with every size given (nothing read back): query q's best
    ``min(ndocs, m_q)`` candidates into ``out_*[out_offsets[q]:]``, best first. Offsets are
    int64 ``(nq + 1,)`` on the device; ``doc_offsets`` has one entry per document plus one."""
    device = scores.device
    nq, n_centroids, query_len = scores.shape
    prune = threshold is not None
    keep = torch.empty((nq, n_centroids) if prune else (0,), dtype=torch.uint8, device=device)
    approx = torch.empty(max(1, candidates.numel()), dtype=torch.float32, device=device)
    _launch(device, backend, "centroid_interaction", scores=scores.data_ptr(), doc_codes=doc_codes.data_ptr(),
            doc_offsets=doc_offsets.data_ptr(), candidates=candidates.data_ptr(),
            cand_offsets=cand_offsets.data_ptr(), keep=keep.data_ptr() if prune else 0,
            approx=approx.data_ptr(), out_offsets=out_offsets.data_ptr(), out_scores=out_scores.data_ptr(),
            out_ids=out_ids.data_ptr(), n_queries=nq, n_centroids=n_centroids, query_len=query_len,
            n_docs=doc_offsets.numel() - 1, ndocs=ndocs, threshold=float(threshold) if prune else 0.0,
            prune=int(prune))
