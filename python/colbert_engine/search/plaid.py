"""The PLAID funnel (DESIGN.md section 5) and exhaustive exact search over an index's segments.

1. ``S = Q Cᵀ`` as (K, Lq) per query (:func:`ops.centroid_scores`), top-``nprobe``
   cells per query token, union of their inverted lists restricted to the allowed
   documents (deleted ones and filters, as a bool mask) (:func:`ops.candidates`);
2. centroid-only scores with pruning at ``t_cs``, keep ``ndocs``;
3. the same without pruning, keep ``ndocs // 4`` (:func:`ops.centroid_interaction`);
4. exact late interaction of the survivors, scored in place from the compressed tokens
   (:func:`ops.lut_maxsim`), top k.

A segment with at most stage 4's budget of allowed documents (a small appended segment, or
a selective filter) skips stages 1-3 and scores all of them exactly: it returns min(k, matches).

Segments are searched one after the other with the same centroid scores and merged
by score; every segment's funnel keeps its own ``ndocs``.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers

import torch

from colbert_engine import ops
from colbert_engine.ops.lut_maxsim import lut_maxsim_launch
from colbert_engine.ops.maxsim import maxsim_launch
from colbert_engine.ops.plaid import candidates_launch, centroid_interaction_launch
from colbert_engine.search import device as device_search

# Tokens decompressed per maxsim call in exact search: bounds the fp32 copy to 128 MB at dim 128.
EXACT_CHUNK_TOKENS = 1 << 18


@dataclass(frozen=True)
class SearchParams:
    """Funnel parameters. ``exact_docs`` documents reach stage 4."""

    k: int
    nprobe: int
    centroid_score_threshold: float | None
    ndocs: int
    exact_docs: int


def check_count(value, name: str) -> int:
    """A search size (k, nprobe, ndocs): an int >= 1. A float or a string is a TypeError, not
    silently truncated (nprobe=1.7 used to mean 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return int(value)


def default_params(k: int, nprobe=None, centroid_score_threshold=None, ndocs=None) -> SearchParams:
    """PLAID's defaults by k (DESIGN.md section 5); any given value overrides its default.

    | k      | nprobe | t_cs | ndocs          | stage 4 |
    | <= 10  | 1      | 0.5  | 256            | 64      |
    | <= 100 | 2      | 0.45 | 1024           | 256     |
    | > 100  | 4      | 0.4  | max(4k, 4096)  | ndocs/4 |
    """
    k = check_count(k, "k")
    if k <= 10:
        d_nprobe, d_tcs, d_ndocs = 1, 0.5, 256
    elif k <= 100:
        d_nprobe, d_tcs, d_ndocs = 2, 0.45, 1024
    else:
        d_nprobe, d_tcs, d_ndocs = 4, 0.4, max(4 * k, 4096)
    nprobe = d_nprobe if nprobe is None else check_count(nprobe, "nprobe")
    if centroid_score_threshold is None:
        t_cs = d_tcs
    elif isinstance(centroid_score_threshold, bool) or not isinstance(centroid_score_threshold, numbers.Real) \
            or not math.isfinite(centroid_score_threshold):
        raise ValueError(f"centroid_score_threshold: expected a finite float or None, got {centroid_score_threshold!r}")
    else:
        t_cs = float(centroid_score_threshold)
    ndocs = d_ndocs if ndocs is None else check_count(ndocs, "ndocs")
    # Stage 2 keeps ndocs documents: fewer than k would silently cut the result short.
    ndocs = max(ndocs, k)
    return SearchParams(k, nprobe, t_cs, ndocs, max(ndocs // 4, k))


def _merge_topk(best_scores, best_ids, scores, ids, k):
    """Keep the k best of two (score, id) lists (1-D tensors)."""
    scores = torch.cat([best_scores, scores])
    ids = torch.cat([best_ids, ids])
    if scores.numel() > k:
        top = scores.topk(k)
        return top.values, ids[top.indices]
    return scores, ids


def _finish(best_scores, best_ids):
    order = torch.argsort(best_scores, descending=True, stable=True)
    scores, ids = best_scores[order], best_ids[order]
    keep = torch.isfinite(scores)  # empty documents score -inf and are never returned
    return scores[keep].cpu(), ids[keep].cpu()


def plaid_search(queries, codec, segments, allowed, params: SearchParams):
    """Run the funnel for a batch of queries (one kernel call per stage and segment for the
    whole batch; stage 4 per query, since each query has its own survivors).

    The segments' arrays were checked when the index was opened, so the stages call the
    ops' unchecked launchers instead of re-validating every array per batch.

    Args:
        queries: float32 ``(nq, Lq, dim)`` contiguous, on the index's device.
        codec: the index's :class:`~colbert_engine.index.codec.Codec`.
        segments: list of :class:`~colbert_engine.index.segment.Segment`.
        allowed: bool ``(n_docs,)`` of internal docs that may be returned, or None (all).
    Returns:
        list over queries of (scores float32 (<=k,), internal doc ids int64 (<=k,)), best first.
    """
    if queries.device.type == "cuda" and device_search.fits(queries.shape[1], codec.centroids.shape[0], params):
        return device_search.plaid_search_device(queries, codec, segments, allowed, params)  # no host syncs
    nq = queries.shape[0]
    device = queries.device
    scores = ops.centroid_scores(queries, codec.centroids)  # (nq, K, Lq)
    best = [(torch.empty(0, device=device), torch.empty(0, dtype=torch.int64, device=device)) for _ in range(nq)]
    for seg in segments:
        if seg.n_docs == 0:
            continue
        subset = None if allowed is None else allowed[seg.doc_base:seg.doc_base + seg.n_docs].contiguous()
        if (subset.sum() if subset is not None else seg.n_docs) <= params.exact_docs:
            # A small segment or a restrictive filter: the probed cells may hold fewer than k of
            # its documents, so score all of them exactly, no more than stage 4 would anyway.
            allowed_ids = (torch.arange(seg.n_docs, device=device) if subset is None
                           else subset.nonzero().flatten())
            if allowed_ids.numel():
                exact = torch.empty(nq, allowed_ids.numel(), dtype=torch.float32, device=device)
                lut_maxsim_launch(queries, scores, seg.codes, seg.residuals, seg.inv_norms, seg.doc_offsets,
                                  allowed_ids, codec.bucket_weights, codec.nbits, exact)
                for q in range(nq):
                    best[q] = _merge_topk(*best[q], exact[q], allowed_ids + seg.doc_base, params.k)
            continue
        cands, cand_offsets = candidates_launch(scores, seg.ivf, seg.ivf_offsets, params.nprobe, seg.n_docs, subset)
        if cands.numel() == 0:
            continue
        _, survivors, offsets = centroid_interaction_launch(scores, seg.codes, seg.doc_offsets, cands,
                                                            cand_offsets.to(device), params.ndocs,
                                                            params.centroid_score_threshold)
        if int(torch.diff(offsets).max()) > params.exact_docs:
            _, survivors, offsets = centroid_interaction_launch(scores, seg.codes, seg.doc_offsets, survivors,
                                                                offsets.to(device), params.exact_docs)
        bounds = offsets.tolist()
        for q in range(nq):
            ids = survivors[bounds[q]:bounds[q + 1]].to(torch.int64)
            if ids.numel() == 0:
                continue
            exact = torch.empty(1, ids.numel(), dtype=torch.float32, device=device)
            lut_maxsim_launch(queries[q:q + 1], scores[q:q + 1], seg.codes, seg.residuals, seg.inv_norms,
                              seg.doc_offsets, ids, codec.bucket_weights, codec.nbits, exact)
            best[q] = _merge_topk(*best[q], exact[0], ids + seg.doc_base, params.k)
    return [_finish(*b) for b in best]


def exact_search(queries, codec, segments, allowed, k: int):
    """Exhaustive MaxSim over every allowed document's decompressed vectors.

    The ground truth recall is measured against: decompresses at most
    ``EXACT_CHUNK_TOKENS`` tokens at a time (:func:`ops.decompress_residuals`, normalized
    with the stored inverse norms, i.e. exactly the vectors stage 4 scores) and scores them
    with the fused MaxSim kernel (:func:`ops.maxsim`).
    Same arguments and result as :func:`plaid_search`.
    """
    if queries.device.type == "cuda":
        return device_search.exact_search_device(queries, codec, segments, allowed, k, EXACT_CHUNK_TOKENS)
    nq = queries.shape[0]
    device = queries.device
    best_scores = torch.empty(nq, 0, device=device)
    best_ids = torch.empty(nq, 0, dtype=torch.int64, device=device)
    for seg in segments:
        offsets = seg.doc_offsets
        doc = 0
        while doc < seg.n_docs:
            limit = int(offsets[doc]) + EXACT_CHUNK_TOKENS
            end = int(torch.searchsorted(offsets, torch.tensor(limit, device=offsets.device), right=True)) - 1
            end = min(max(end, doc + 1), seg.n_docs)
            t0, t1 = int(offsets[doc]), int(offsets[end])
            emb = ops.decompress_residuals(seg.codes[t0:t1], seg.residuals[t0:t1], codec.centroids,
                                           codec.bucket_weights, codec.nbits, inv_norms=seg.inv_norms[t0:t1])
            chunk_offsets = (offsets[doc:end + 1] - t0).contiguous()
            chunk = torch.empty(nq, end - doc, dtype=torch.float32, device=device)
            maxsim_launch(queries, emb, chunk_offsets, None, chunk)
            if allowed is not None:
                mask = allowed[seg.doc_base + doc:seg.doc_base + end]
                chunk = chunk.masked_fill(~mask.unsqueeze(0), float("-inf"))
            ids = torch.arange(doc, end, device=device, dtype=torch.int64) + seg.doc_base
            scores = torch.cat([best_scores, chunk], dim=1)
            all_ids = torch.cat([best_ids, ids.unsqueeze(0).expand(nq, -1)], dim=1)
            if scores.shape[1] > k:
                top = scores.topk(k, dim=1)
                best_scores, best_ids = top.values, all_ids.gather(1, top.indices)
            else:
                best_scores, best_ids = scores, all_ids
            doc = end
    return [_finish(best_scores[q], best_ids[q]) for q in range(nq)]
