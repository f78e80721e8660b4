"""One search implementation over an index's (codec, segments), for every device.

:class:`Searcher` runs the PLAID funnel (DESIGN.md section 5) for a whole batch of queries,
one kernel call per stage and segment:

1. ``S = C @ Qᵀ`` as ``(nq, K, Lq)``; every query token's top-``nprobe`` cells, the union of
   their inverted lists restricted to the allowed documents (a bitmap per query);
2. centroid-only scores with pruning at ``t_cs``, the best ``ndocs`` per query;
3. the same without pruning, the best ``exact_docs`` (skipped when stage 2 kept no more);
4. exact late interaction of every query's survivors, scored from the compressed tokens
   (``lut_maxsim`` with per-query candidate offsets);

then one merge of all segments' results by (score desc, id asc) (:func:`ops.maxsim.topk_by_score`,
the library's one tie rule). A segment with at most ``exhaustive_docs`` allowed documents (a
small collection, a small appended segment, a selective filter) skips stages 1-3: all its
allowed documents go to stage 4. :meth:`Searcher.exact` scores every allowed document the
same way (the ground truth of recall).

The device chooses the kernels (``ops`` dispatches on it) and how sizes are known:

- CPU: each query's candidate and survivor counts are read as they come (free on the host),
  so stages work on packed per-query runs.
- CUDA: nothing is read back until the final ``(nq, k)`` results. Stage 1 writes each
  query's candidates into a padded ``(nq, cap)`` block, ``cap`` bounding any query's count
  (the sum of the ``Lq * nprobe`` longest inverted lists, at most ``n_docs``, computed once
  per segment); unused slots hold ``n_docs``, a virtual empty document that scores -inf in
  every stage and is never returned. Stages 2-4 then have fixed per-query widths.

Both layouts run the same kernels on the same offsets contracts, so the CUDA path runs in
CI on the CPU kernels (tests/index/test_search_device.py) and must return the same ids in
the same order.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

from colbert_engine.ops import plaid as plaid_ops
from colbert_engine.ops import wake_pool
from colbert_engine.ops.lut_maxsim import lut_maxsim_launch
from colbert_engine.ops.maxsim import topk_by_score
from colbert_engine.search.params import SearchParams, check_count, default_params
from colbert_engine.search.threads import search_thread_team

# Documents per stage-4 call in exhaustive search: bounds the (nq, chunk) score block.
EXACT_CHUNK_DOCS = 1 << 15
# Bitmap workspace of stage 1 (nq * n_docs / 8 bytes): larger batches go in query groups.
BITMAP_BUDGET_BYTES = 64 << 20

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


def _list_sizes(seg) -> list[int]:
    """Inverted-list lengths, longest first, as running totals (read once per segment)."""
    cache = _cache_of(seg)
    if "lengths" not in cache:
        sizes = torch.diff(seg.ivf_offsets).sort(descending=True).values
        cache["lengths"] = torch.cumsum(sizes, 0).tolist()
    return cache["lengths"]


def _candidate_cap(seg, n_picks: int) -> int:
    """Upper bound on one query's candidates: the n_picks longest lists' total, <= n_docs."""
    lengths = _list_sizes(seg)
    if not lengths:
        return 0
    return min(seg.n_docs, lengths[min(n_picks, len(lengths)) - 1])


def _offsets_with_empty_doc(seg) -> torch.Tensor:
    """doc_offsets with one more, empty, document (id n_docs) for padding slots."""
    cache = _cache_of(seg)
    if "offsets" not in cache:
        cache["offsets"] = torch.cat([seg.doc_offsets, seg.doc_offsets[-1:]]).contiguous()
    return cache["offsets"]


def _prefix(sizes, device=None) -> tuple[list[int], torch.Tensor]:
    """Exclusive prefix sums of ``sizes`` as a host list and an int64 tensor on ``device``."""
    host = [0]
    for size in sizes:
        host.append(host[-1] + size)
    if sizes and all(size == sizes[0] for size in sizes):  # the padded layout: no host-to-device copy
        return host, torch.arange(len(sizes) + 1, dtype=torch.int64, device=device) * sizes[0]
    return host, torch.tensor(host, dtype=torch.int64, device=device)


class Searcher:
    """Search over ``(codec, segments)``: the funnel (:meth:`search`) and exhaustive scoring
    (:meth:`exact`), batched, on the device of the codec's arrays.

    ``backend`` ("cpu" / "cuda", default the device's type) picks the kernels and the
    layout; only tests set it (the CUDA path on CPU tensors through a stand-in module).
    """

    def __init__(self, codec, segments, *, backend: str | None = None):
        self.codec = codec
        self.segments = [seg for seg in segments if seg.n_docs]
        self.device = codec.centroids.device
        self.backend = backend or self.device.type
        self._centroids_fp32 = codec.centroids.to(torch.float32).contiguous()
        # CUDA: every size must be known to the host without reading the device.
        self.padded = self.backend == "cuda"

    # ------------------------------------------------------------------ parameters
    @property
    def n_docs(self) -> int:
        return sum(seg.n_docs for seg in self.segments)

    @property
    def n_tokens(self) -> int:
        return sum(seg.n_tokens for seg in self.segments)

    def params(self, k, nprobe=None, centroid_score_threshold=None, ndocs=None) -> SearchParams:
        """Funnel parameters for this collection (defaults by k and by the collection)."""
        return default_params(k, nprobe, centroid_score_threshold, ndocs, n_centroids=self.codec.centroids.shape[0],
                              n_docs=self.n_docs, n_tokens=self.n_tokens, nbits=self.codec.nbits)

    # ------------------------------------------------------------------ public
    def search(self, queries, params: SearchParams, allowed=None):
        """The funnel for a batch.

        Args:
            queries: float32 ``(nq, Lq, dim)`` contiguous, on the index's device (checked by
                the caller).
            params: :class:`SearchParams` (:meth:`params`).
            allowed: bool ``(n_docs,)`` of internal documents that may be returned, or None.
        Returns:
            list over queries of (scores float32 ``(<=k,)``, internal ids int64), best first
            by (score desc, id asc), on the CPU.
        """
        return self._run(queries, allowed, lambda q, s: self.topk(q, params, allowed, scores=s))

    def exact(self, queries, k: int, allowed=None):
        """Every allowed document scored exactly from its compressed tokens (the vectors
        ``ops.decompress_residuals(..., inv_norms=...)`` returns); same result form as
        :meth:`search`."""
        k = check_count(k, "k")
        return self._run(queries, allowed, lambda q, s: self.exact_topk(q, k, allowed, scores=s))

    def centroid_scores(self, queries) -> torch.Tensor:
        """``S[q, c, i] = <C[c], Q[q, i]>`` as fp32 ``(nq, K, Lq)`` (unchecked)."""
        return plaid_ops.centroid_scores_launch(queries.to(torch.float32), self._centroids_fp32)

    def topk(self, queries, params: SearchParams, allowed=None, *, scores=None):
        """The funnel's best ``k`` per query as device tensors ``(nq, k')`` (scores, internal
        ids), -inf where a query has fewer results. Reads nothing back on CUDA, except a
        filter's per-segment allowed counts."""
        scores = self.centroid_scores(queries) if scores is None else scores
        parts = []
        for seg in self.segments:
            subset = None if allowed is None else allowed[seg.doc_base:seg.doc_base + seg.n_docs].contiguous()
            n_allowed = seg.n_docs if subset is None else int(subset.sum())
            if n_allowed == 0:
                continue
            if n_allowed <= params.exhaustive_docs:
                ids = (torch.arange(seg.n_docs, device=self.device) if subset is None
                       else subset.nonzero().flatten())
                parts.append(self._score_all(queries, scores, seg, ids))
            else:
                parts.append(self._funnel(queries, scores, seg, subset, params))
        return self._merge(parts, queries.shape[0], params.k)

    def exact_topk(self, queries, k: int, allowed=None, *, scores=None):
        """:meth:`exact` as device tensors ``(nq, k')``, like :meth:`topk`."""
        scores = self.centroid_scores(queries) if scores is None else scores
        best = []
        for seg in self.segments:
            for start in range(0, seg.n_docs, EXACT_CHUNK_DOCS):
                ids = torch.arange(start, min(seg.n_docs, start + EXACT_CHUNK_DOCS), device=self.device)
                part_scores, part_ids = self._score_all(queries, scores, seg, ids)
                if allowed is not None:
                    mask = allowed[seg.doc_base + start:seg.doc_base + start + ids.numel()]
                    part_scores = part_scores.masked_fill(~mask.unsqueeze(0), float("-inf"))
                best = [self._merge(best + [(part_scores, part_ids)], queries.shape[0], k)]
        return self._merge(best, queries.shape[0], k)

    # ------------------------------------------------------------------ stages
    def _run(self, queries, allowed, topk_of_group):
        """Queries in groups whose stage-1 bitmaps fit the budget; results to the host once."""
        nq = queries.shape[0]
        words = max([(seg.n_docs + 63) // 64 for seg in self.segments] or [1])
        group = max(1, BITMAP_BUDGET_BYTES // (8 * words))
        results = []
        team = search_thread_team() if self.device.type == "cpu" else contextlib.nullcontext()
        with team, plaid_ops.device_guard(self.device):
            if self.device.type == "cpu":
                wake_pool()  # pool workers asleep since the last search spin by the first kernel
            # the codec's space (a "codebook" codec may rotate it; scores are unchanged)
            queries = self.codec.rotate(queries)
            scores = self.centroid_scores(queries)
            for start in range(0, nq, group):
                top_scores, top_ids = topk_of_group(queries[start:start + group], scores[start:start + group])
                top_scores, top_ids = top_scores.cpu(), top_ids.cpu()  # the synchronisation
                # Padding and empty documents score -inf: last in every row, left out.
                found = torch.isfinite(top_scores).sum(dim=1).tolist()
                results.extend((row_scores[:n], row_ids[:n])
                               for row_scores, row_ids, n in zip(top_scores, top_ids, found))
        return results

    def _score_all(self, queries, scores, seg, ids):
        """Stage 4 for every query against the same documents ``ids`` (int64, segment-local)."""
        out = torch.empty((queries.shape[0], ids.numel()), dtype=torch.float32, device=self.device)
        lut_maxsim_launch(queries, scores, seg.codes, seg.residuals, seg.inv_norms, seg.doc_offsets, ids,
                          self.codec.byte_codebook, self.codec.nbits, out, backend=self.backend)
        return out, (ids + seg.doc_base).unsqueeze(0).expand(queries.shape[0], -1)

    def _funnel(self, queries, scores, seg, subset, params: SearchParams):
        """Stages 1-4 on one segment for the batch: (nq, width) scores and global ids."""
        nq, n_centroids, query_len = scores.shape
        device, backend = self.device, self.backend
        nprobe = min(params.nprobe, n_centroids)  # >= K probes every cell
        n_picks = n_centroids if nprobe >= n_centroids else query_len * nprobe
        padded, cap = self.padded, 0
        if padded:
            max_picks, max_keep = plaid_ops.cuda_limits()
            if nprobe < n_centroids and n_picks > max_picks:
                raise ValueError(f"nprobe: on CUDA query_len * nprobe must be <= {max_picks} (or nprobe >= the "
                                 f"number of centroids), got {query_len} * {nprobe}")
            cap = _candidate_cap(seg, n_picks)
            # Past the kernels' selection limit the padded width is too wide: read the real
            # counts back instead (one synchronisation; ndocs above the limit is rare).
            padded = min(params.ndocs, cap) <= max_keep
        # Stage 1.
        bitmap, counts = plaid_ops.candidates_mark_launch(scores, seg.ivf, seg.ivf_offsets, nprobe, seg.n_docs,
                                                          subset, backend=backend)
        if padded:
            sizes = [cap] * nq
            doc_offsets = _offsets_with_empty_doc(seg)  # padding slots: doc n_docs, empty
        else:
            sizes = counts.tolist()
            doc_offsets = seg.doc_offsets
        host_offsets, offsets = _prefix(sizes, device)
        candidates = torch.full((host_offsets[-1],), seg.n_docs, dtype=torch.int32, device=device)
        if host_offsets[-1]:
            plaid_ops.candidates_collect_launch(bitmap, offsets, candidates, seg.n_docs, backend=backend)
        # Stage 2 (pruned at t_cs), stage 3 (unpruned) when stage 2 kept more than stage 4 takes.
        stages = [(params.ndocs, params.centroid_score_threshold), (params.exact_docs, None)]
        for keep, threshold in stages:
            if threshold is None and max(sizes, default=0) <= keep:
                break
            kept = [min(keep, size) for size in sizes]
            if self.padded and max(kept) > max_keep:
                raise ValueError(f"ndocs: at most {max_keep} documents kept per query on CUDA, got {max(kept)}")
            kept_host, kept_offsets = _prefix(kept, device)
            survivor_scores = torch.empty(kept_host[-1], dtype=torch.float32, device=device)
            survivors = torch.empty(kept_host[-1], dtype=torch.int32, device=device)
            if kept_host[-1]:
                plaid_ops.centroid_interaction_into(scores, seg.codes, doc_offsets, candidates, offsets, kept_offsets,
                                                    max(kept), threshold, survivor_scores, survivors, backend=backend)
            candidates, sizes, host_offsets, offsets = survivors, kept, kept_host, kept_offsets
        # Stage 4: every query's survivors in one call.
        ids = candidates.to(torch.int64)
        exact = torch.empty(ids.numel(), dtype=torch.float32, device=device)
        lut_maxsim_launch(queries, scores, seg.codes, seg.residuals, seg.inv_norms, doc_offsets, ids,
                          self.codec.byte_codebook, self.codec.nbits, exact, cand_offsets=offsets,
                          host_offsets=host_offsets, backend=backend)
        return self._rows(exact, ids + seg.doc_base, sizes, host_offsets)

    def _rows(self, flat_scores, flat_ids, sizes, host_offsets):
        """Per-query runs as (nq, max size) rows, -inf / id -1 past a query's run."""
        nq, width = len(sizes), max(sizes, default=0)
        if all(size == width for size in sizes):
            return flat_scores.view(nq, width), flat_ids.view(nq, width)
        scores = torch.full((nq, width), float("-inf"), device=self.device)
        ids = torch.full((nq, width), -1, dtype=torch.int64, device=self.device)
        sizes_t = torch.tensor(sizes, device=self.device)
        rows = torch.repeat_interleave(torch.arange(nq, device=self.device), sizes_t, output_size=host_offsets[-1])
        cols = torch.arange(host_offsets[-1], device=self.device) - torch.tensor(
            host_offsets[:-1], device=self.device)[rows]
        scores[rows, cols] = flat_scores
        ids[rows, cols] = flat_ids
        return scores, ids

    def _merge(self, parts, nq: int, k: int):
        if not parts:
            return (torch.empty((nq, 0), device=self.device),
                    torch.empty((nq, 0), dtype=torch.int64, device=self.device))
        scores = torch.cat([p[0] for p in parts], dim=1) if len(parts) > 1 else parts[0][0]
        ids = torch.cat([p[1] for p in parts], dim=1) if len(parts) > 1 else parts[0][1]
        return topk_by_score(scores, ids, k)
