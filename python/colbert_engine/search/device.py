"""The PLAID funnel on a CUDA index with no host synchronisation until the final results.

Same stages and results as :func:`colbert_engine.search.plaid.plaid_search` (which calls
this for CUDA indexes), but every variable-length intermediate has a size the host knows
without reading the device:

- Stage 1 writes each query's candidates into a padded ``(nq, cap)`` int32 block
  (``candidates_collect`` with ``out_offsets = q * cap``); ``cap`` bounds any query's
  candidate count: the sum of the ``Lq * nprobe`` longest inverted lists (at most
  ``n_docs``), computed once per segment and cached. Unused slots hold ``n_docs``, a
  virtual empty document (``doc_offsets`` gets one more entry, cached per segment), which
  scores -inf in every stage and ranks after every real document (ties by lower id), so
  the padding never displaces a real candidate.
- Stages 2 and 3 (``centroid_interaction``) see ``cand_offsets = q * cap`` and keep
  ``min(ndocs, cap)`` / ``min(exact_docs, ...)`` slots per query: fixed sizes again.
- Stage 4 (``lut_maxsim``) runs once per query on its fixed-size survivor row (one launch
  per query, queued without waiting), and the per-query top-k is two stable sorts on
  the device (score descending, then doc id ascending, as everywhere else).

The one synchronisation is the final copy of the ``(nq, k)`` results to the host. The
first search of a segment also reads its list lengths once (cached afterwards).

Limits of the CUDA kernels (csrc/cuda/plaid.cu): ``Lq * nprobe <= 8192`` (or nprobe >= K)
and ``min(ndocs, cap) <= 8192``; :func:`fits` says whether a search stays within them, and
the caller falls back to the host-synchronising path when it does not.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

from colbert_engine import _native
from colbert_engine.ops import _validate as V
from colbert_engine.ops.lut_maxsim import lut_maxsim_launch

MAX_PICKS = 8192  # csrc/cuda/plaid.cu kMaxPicks
MAX_KEEP = 8192   # csrc/cuda/plaid.cu kSortCap

# Per-segment helpers, keyed by id() of the segment's ivf_offsets tensor and dropped when
# that tensor is (tensors compare elementwise, so they cannot be WeakKeyDictionary keys).
_segment_cache: dict[int, dict] = {}


def _cache_of(seg) -> dict:
    key = id(seg.ivf_offsets)
    entry = _segment_cache.get(key)
    if entry is None:
        entry = _segment_cache[key] = {}
        weakref.finalize(seg.ivf_offsets, _segment_cache.pop, key, None)
    return entry


def _candidate_cap(seg, n_picks: int) -> int:
    """Upper bound on one query's candidates: the n_picks longest lists' total, <= n_docs."""
    cache = _cache_of(seg)
    if "lengths" not in cache:
        sizes = torch.diff(seg.ivf_offsets).sort(descending=True).values
        cache["lengths"] = torch.cumsum(sizes, 0).tolist()  # one read per segment, then cached
    lengths = cache["lengths"]
    if not lengths:
        return 0
    return min(seg.n_docs, lengths[min(n_picks, len(lengths)) - 1])


def _offsets_with_empty_doc(seg) -> torch.Tensor:
    """doc_offsets with one more, empty, document (id n_docs) for padding slots."""
    cache = _cache_of(seg)
    if "offsets" not in cache:
        cache["offsets"] = torch.cat([seg.doc_offsets, seg.doc_offsets[-1:]]).contiguous()
    return cache["offsets"]


def _device_guard(device):
    # CPU tensors only in tests that run this path on the CPU kernels (same contracts).
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def fits(query_len: int, n_centroids: int, params) -> bool:
    """Whether the CUDA kernels' shared-memory limits allow this search."""
    picks_ok = params.nprobe >= n_centroids or query_len * params.nprobe <= MAX_PICKS
    return picks_ok and params.ndocs <= MAX_KEEP


def _offsets(nq: int, width: int, device) -> torch.Tensor:
    return torch.arange(nq + 1, dtype=torch.int64, device=device) * width


def funnel(queries, codec, segments, allowed, params):
    """Stages 1-4 for a batch on the device; returns device tensors (scores float32 (nq, k'),
    global internal ids int64 (nq, k')), best first, -inf / garbage ids in unfilled slots.
    Queues work only: no host synchronisation (after a segment's first search)."""
    cuda = _native.cuda()
    device = queries.device
    stream = V.stream_of(device)
    nq, lq, _ = queries.shape
    scores = torch.matmul(codec.centroids.to(torch.float32), queries.transpose(1, 2)).contiguous()  # (nq, K, Lq)
    n_centroids = scores.shape[1]
    nprobe = params.nprobe
    n_picks = n_centroids if nprobe >= n_centroids else lq * nprobe
    all_scores = [torch.full((nq, 0), float("-inf"), device=device)]
    all_ids = [torch.zeros((nq, 0), dtype=torch.int64, device=device)]
    for seg in segments:
        cap = _candidate_cap(seg, n_picks) if seg.n_docs else 0
        if cap == 0:
            continue
        n_docs = seg.n_docs
        doc_offsets = _offsets_with_empty_doc(seg)
        subset = None if allowed is None else allowed[seg.doc_base:seg.doc_base + n_docs].contiguous()
        # Stage 1: bitmap per query, then its ids into a padded (nq, cap) block.
        words = (n_docs + 63) // 64
        bitmap = torch.zeros((nq, words), dtype=torch.int64, device=device)
        counts = torch.empty(nq, dtype=torch.int64, device=device)
        cuda.candidates_mark(scores.data_ptr(), seg.ivf.data_ptr(), seg.ivf_offsets.data_ptr(),
                             0 if subset is None else subset.data_ptr(), bitmap.data_ptr(), counts.data_ptr(),
                             nq, n_centroids, lq, nprobe, n_docs, words, stream)
        cands = torch.full((nq * cap,), n_docs, dtype=torch.int32, device=device)
        cand_offsets = _offsets(nq, cap, device)
        cuda.candidates_collect(bitmap.data_ptr(), cand_offsets.data_ptr(), cands.data_ptr(), nq, n_docs, words,
                                stream)
        # Stage 2 (pruned at t_cs), stage 3 (unpruned) on the survivors.
        stages = [(min(params.ndocs, cap), params.centroid_score_threshold)]
        if params.exact_docs < stages[0][0]:
            stages.append((params.exact_docs, None))
        width = cap
        keep = torch.empty((nq, n_centroids), dtype=torch.uint8, device=device)
        for kept, threshold in stages:
            approx = torch.empty(nq * width, dtype=torch.float32, device=device)
            out_scores = torch.empty(nq * kept, dtype=torch.float32, device=device)
            out_ids = torch.empty(nq * kept, dtype=torch.int32, device=device)
            prune = threshold is not None
            # Named, not inline: a tensor must outlive the call that takes its address.
            in_offsets, kept_offsets = _offsets(nq, width, device), _offsets(nq, kept, device)
            cuda.centroid_interaction(scores.data_ptr(), seg.codes.data_ptr(), doc_offsets.data_ptr(),
                                      cands.data_ptr(), in_offsets.data_ptr(),
                                      keep.data_ptr() if prune else 0, approx.data_ptr(),
                                      kept_offsets.data_ptr(), out_scores.data_ptr(),
                                      out_ids.data_ptr(), nq, n_centroids, lq, n_docs + 1, kept,
                                      float(threshold) if prune else 0.0, int(prune), stream)
            cands, width = out_ids, kept
        # Stage 4: exact scores from the compressed tokens, one launch per query.
        survivors = cands.view(nq, width).to(torch.int64)
        exact = torch.empty((nq, width), dtype=torch.float32, device=device)
        for q in range(nq):
            lut_maxsim_launch(queries[q:q + 1], scores[q:q + 1], seg.codes, seg.residuals, seg.inv_norms,
                              doc_offsets, survivors[q], codec.bucket_weights, codec.nbits, exact[q:q + 1])
        all_scores.append(exact)
        all_ids.append(survivors + seg.doc_base)
    merged_scores = torch.cat(all_scores, dim=1)
    merged_ids = torch.cat(all_ids, dim=1)
    # Best k per query by (score desc, id asc): a stable sort by id, then by score.
    by_id = torch.argsort(merged_ids, dim=1, stable=True)
    merged_scores, merged_ids = merged_scores.gather(1, by_id), merged_ids.gather(1, by_id)
    order = torch.argsort(merged_scores, dim=1, descending=True, stable=True)[:, :params.k]
    return merged_scores.gather(1, order), merged_ids.gather(1, order)


def plaid_search_device(queries, codec, segments, allowed, params):
    """:func:`funnel`, then the one copy to the host; same result as ``plaid_search``."""
    with _device_guard(queries.device):
        top_scores, top_ids = funnel(queries, codec, segments, allowed, params)
    top_scores, top_ids = top_scores.cpu(), top_ids.cpu()  # the synchronisation
    results = []
    for scores, ids in zip(top_scores, top_ids):
        keep = torch.isfinite(scores)  # padding and empty documents score -inf
        results.append((scores[keep], ids[keep]))
    return results


def _host_offsets(seg) -> torch.Tensor:
    """The segment's doc_offsets on the host (copied once, cached): chunk bounds of exact search."""
    cache = _cache_of(seg)
    if "host_offsets" not in cache:
        cache["host_offsets"] = seg.doc_offsets.cpu()
    return cache["host_offsets"]


def exact_search_device(queries, codec, segments, allowed, k: int, chunk_tokens: int):
    """Exhaustive MaxSim on a CUDA index, like ``plaid.exact_search`` (decompress chunks of at
    most ``chunk_tokens`` tokens with the stored inverse norms, fused MaxSim, running top-k by
    (score desc, id asc)), with chunk bounds from a cached host copy of the offsets, so the
    only synchronisation is the final copy."""
    from colbert_engine.ops.maxsim import maxsim_launch

    cuda = _native.cuda()
    centroids = codec.centroids.to(torch.float32).contiguous()
    n_centroids, dim = centroids.shape
    nq = queries.shape[0]
    device = queries.device
    best_scores = torch.empty(nq, 0, device=device)
    best_ids = torch.empty(nq, 0, dtype=torch.int64, device=device)
    with _device_guard(device):
        for seg in segments:
            host = _host_offsets(seg)
            doc = 0
            while doc < seg.n_docs:
                end = int(torch.searchsorted(host, int(host[doc]) + chunk_tokens, right=True)) - 1
                end = min(max(end, doc + 1), seg.n_docs)
                t0, t1 = int(host[doc]), int(host[end])
                # The unchecked kernel (ops.decompress_residuals re-validates, which reads back).
                emb = torch.empty(t1 - t0, dim, dtype=torch.float32, device=device)
                cuda.decompress_residuals(seg.codes[t0:].data_ptr(), seg.residuals[t0:].data_ptr(),
                                          centroids.data_ptr(), codec.bucket_weights.data_ptr(),
                                          seg.inv_norms[t0:].data_ptr(), emb.data_ptr(), t1 - t0, dim,
                                          n_centroids, codec.nbits, True, V.DTYPE_CODE[torch.float32],
                                          V.stream_of(device))
                chunk_offsets = (seg.doc_offsets[doc:end + 1] - t0).contiguous()
                chunk = torch.empty(nq, end - doc, dtype=torch.float32, device=device)
                maxsim_launch(queries, emb, chunk_offsets, None, chunk)
                if allowed is not None:
                    mask = allowed[seg.doc_base + doc:seg.doc_base + end]
                    chunk = chunk.masked_fill(~mask.unsqueeze(0), float("-inf"))
                ids = torch.arange(doc, end, device=device, dtype=torch.int64) + seg.doc_base
                scores = torch.cat([best_scores, chunk], dim=1)
                all_ids = torch.cat([best_ids, ids.unsqueeze(0).expand(nq, -1)], dim=1)
                by_id = torch.argsort(all_ids, dim=1, stable=True)
                scores, all_ids = scores.gather(1, by_id), all_ids.gather(1, by_id)
                order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
                best_scores, best_ids = scores.gather(1, order), all_ids.gather(1, order)
                doc = end
    best_scores, best_ids = best_scores.cpu(), best_ids.cpu()  # the synchronisation
    results = []
    for scores, ids in zip(best_scores, best_ids):
        keep = torch.isfinite(scores)
        results.append((scores[keep], ids[keep]))
    return results
