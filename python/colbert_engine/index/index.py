"""``colbert_engine.Index``: build, open, search, add, delete, compact, filter, import.

A facade over the index package: :mod:`.reader` (an opened generation), :mod:`.writer`
(new generations), :mod:`.build` (codec training + first generation), :mod:`.batches`
(input forms), :mod:`.codec_files`. Layout and crash-safety rules are in ``FORMAT.md``.
One writer at a time per folder (readers may be many); every write ends with a new
manifest, the commit point.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch

from colbert_engine.index import writer
from colbert_engine.index.build import DEFAULT_TRAIN_BUFFER_TOKENS, build_index
from colbert_engine.index.codec import MAX_POINTS_PER_CENTROID, Codec
from colbert_engine.index.reader import IndexReader
from colbert_engine.ops import _validate as V
from colbert_engine.search import Searcher, search_thread_team


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: {device!r} is not a device (cpu or cuda): {err}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {device} is not supported (cpu or cuda)")
    return device


def _check_timeout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < float("inf"):
        raise ValueError(f"lock_timeout: expected seconds >= 0, got {value!r}")
    return float(value)


# Largest query score bound accepted: leaves float32 headroom for sums and intermediates.
_MAX_SCORE = 1e30


class Index(IndexReader):
    """A compressed late-interaction index in one folder. Use :meth:`build`, :meth:`open`
    or :meth:`from_colbert`; search with :meth:`search`."""

    # seconds a write waits for another writer's lock (FORMAT.md, "Writers and readers")
    lock_timeout: float = writer.DEFAULT_LOCK_TIMEOUT_S

    @classmethod
    def open(cls, path, device=None, verify: bool = True, lock_timeout: float = writer.DEFAULT_LOCK_TIMEOUT_S
             ) -> "Index":
        """Open an index folder.

        Args:
            path: the folder.
            device: ``"cpu"`` (default; arrays stay memory-mapped) or ``"cuda[:i]"``
                (arrays copied to the GPU).
            verify: check the crc32 of every file's data and the index invariants the
                kernels rely on (reads each file once: about 0.3 s per GB from the page
                cache, plus the disk read). File sizes, npy headers, dtypes and shapes are
                always checked, and so are the bounds the kernels index with (codes < K,
                offsets, inverted lists); ``verify=False`` trusts the rest of the contents.
            lock_timeout: seconds a write through this handle waits while another writer
                holds the folder's lock, then :class:`IndexLockedError`; 0 fails at once.
        Raises:
            ValueError naming the file: missing/corrupt/invalid manifest, newer
            format_version, truncated or corrupt array, id database not matching the manifest.
        """
        lock_timeout = _check_timeout(lock_timeout)
        index = cls(Path(path), _resolve_device(device), verify)
        index.lock_timeout = lock_timeout
        return index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, docs={self.n_docs}, live={self.n_live}, "
                f"segments={len(self.segments)}, nbits={self.codec.nbits}, device={self.device})")

    # ------------------------------------------------------------------ search
    def _prepare_queries(self, queries) -> tuple[torch.Tensor, bool]:
        queries = V.as_tensor(queries, "queries")
        V.check_dtype(queries, "queries", V.FLOAT_DTYPES)
        V.check_ndim(queries, "queries", (2, 3))
        single = queries.dim() == 2
        if single:
            queries = queries.unsqueeze(0)
        V.check_size(queries, "queries", 2, self.codec.dim, "the index's dim")
        if queries.shape[1] == 0:
            raise ValueError(f"queries: need at least one query token, got shape {tuple(queries.shape)}")
        given, queries = queries, queries.to(self.device, torch.float32).contiguous()
        # A score is at most the sum of the query tokens' norms (documents are unit vectors):
        # past float32's range it overflows to inf/NaN and search returned [] (queries of 1e37).
        # NaN or inf make the bound non-finite too: one reduction checks both.
        bound = float(torch.linalg.vector_norm(queries, dim=2, dtype=torch.float64).sum(dim=1).max())
        if not bound < _MAX_SCORE:
            V.check_finite(given, "queries")  # NaN/inf as given get their own message
            raise ValueError(f"queries: values too large (token norms sum to {bound:.3g}; scores would overflow "
                             f"float32, limit {_MAX_SCORE:.0e}); normalise the query vectors")
        return queries, single

    def search_internal(self, queries, k=10, nprobe=None, centroid_score_threshold=None, ndocs=None,
                        exact=False, filter=None):
        """Like :meth:`search` but returns internal doc ids: list of (scores, doc_ids) tensors."""
        self._check_open()
        with search_thread_team():  # the query checks run torch ops too
            queries, _ = self._prepare_queries(queries)
            allowed = self._allowed(filter)
            searcher = Searcher(self.codec, self.segments)
            if exact:
                return searcher.exact(queries, k, allowed)
            return searcher.search(queries, searcher.params(k, nprobe, centroid_score_threshold, ndocs), allowed)

    def search(self, queries, k: int = 10, nprobe: int | None = None, centroid_score_threshold: float | None = None,
               ndocs: int | None = None, exact: bool = False, filter=None):
        """Top-k documents per query.

        Args:
            queries: ``(nq, Lq, dim)`` or ``(Lq, dim)`` float32/float16/bfloat16 (numpy or torch);
                a batch is processed together.
            k: results per query.
            nprobe, centroid_score_threshold, ndocs: funnel parameters; None takes the
                default for k and the collection (search/params.py: PLAID's, DESIGN.md
                section 5, adapted where they fail).
            exact: score every allowed document exhaustively (the ground truth).
            filter: None, a SQL WHERE clause over the columns ``id`` and ``metadata`` (JSON
                text) as ``(clause, params)`` with bound parameters (a sequence for ``?``,
                a dict for ``:name``; or a clause string without parameters), e.g.
                ``("json_extract(metadata, '$.lang') = ?", ["de"])``, or an explicit list
                of ids (unknown ids are ignored). Applied in candidate
                generation, so the best matching documents are found, not filtered leftovers.
        Returns:
            for each query a list of ``(id, score)`` best first (ids as given at build/add);
            for 2-D queries (one query) just that query's list.
        """
        single = V.as_tensor(queries, "queries").dim() == 2
        results = self.search_internal(queries, k, nprobe, centroid_score_threshold, ndocs, exact, filter)
        all_ids = torch.cat([ids for _, ids in results]).unique().tolist() if results else []
        external = self._ids.external_ids(all_ids)
        if len(external) != len(all_ids):
            missing = sorted(set(all_ids) - set(external))[:5]
            raise ValueError(f"{self._ids.path}: no id stored for internal doc ids {missing}: the id database "
                             "does not match the segments")
        out = [[(external[int(d)], float(s)) for s, d in zip(scores.tolist(), ids.tolist())]
               for scores, ids in results]
        return out[0] if single else out

    def recall(self, queries, k: int = 10, **search_kwargs) -> float:
        """Mean recall@k of the default (or given) funnel against exact search on ``queries``."""
        approx = self.search_internal(queries, k, **search_kwargs)
        truth = self.search_internal(queries, k, exact=True, filter=search_kwargs.get("filter"))
        values = []
        for (_, a), (_, t) in zip(approx, truth):
            if t.numel() == 0:
                continue
            values.append(len(set(a.tolist()) & set(t.tolist())) / t.numel())
        return float(np.mean(values)) if values else 1.0

    # ----------------------------------------------------------------- writing
    def add(self, doc_emb, doc_offsets=None, ids=None, metadata=None) -> list:
        """Append documents as a new segment compressed with the existing codec.

        Same inputs as :meth:`build` (packed tensors or an iterable of batches). Default
        ids continue after the largest internal doc id (``n_docs, n_docs + 1, ...``).
        Returns the ids added. Re-adding an id that was deleted is allowed (a new document).
        """
        return writer.add(self, doc_emb, doc_offsets, ids, metadata)

    def delete(self, ids) -> int:
        """Tombstone the live documents with these ids; unknown ids are ignored.

        Internal ids are never renumbered (until :meth:`compact`); deleted documents are
        never returned. Returns how many documents were deleted.
        """
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        return writer.delete(self, ids)

    def compact(self) -> None:
        """Rewrite the index as one segment without tombstones (external ids kept; the
        compressed tokens are copied, not recompressed, so scores do not change)."""
        writer.compact(self)

    # ------------------------------------------------------------------- build
    @classmethod
    def build(cls, path, doc_emb, doc_offsets=None, ids=None, metadata=None, nbits: int = 2, device=None, *,
              n_centroids: int | None = None, kmeans_niters: int = 4, seed: int = 0,
              train_buffer_tokens: int | None = DEFAULT_TRAIN_BUFFER_TOKENS, n_tokens_hint: int | None = None,
              max_points_per_centroid: int = MAX_POINTS_PER_CENTROID, codec: Codec | None = None,
              bucket_layout: str | None = None) -> "Index":
        """Build an index folder from token vectors and open it.

        Args:
            path: folder to create (may exist, but must not hold an index).
            doc_emb: packed ``(T, dim)`` float tensor/array with ``doc_offsets`` int64
                ``(n_docs + 1,)``; OR an iterable of batches ``(emb, offsets)``,
                ``(emb, offsets, ids)`` or ``(emb, offsets, ids, metadata)``, streamed so
                peak RAM stays bounded: each batch is checked and spilled to a temporary
                file in ``path`` (``build.spill.vectors``/``.docs``; needs as much free disk
                as the vectors take, T x dim x 4 bytes for float32), the codec is trained on
                ColBERT's document sample of the whole stream and the documents are
                compressed back from the spill, which is removed at the end (also on
                failure; a killed build's spill is removed by the next write). The index
                equals a packed build's of the same documents, whatever the stream's order
                or batch sizes.
            train_buffer_tokens: streams only, for machines without disk for a spill: train
                on the documents of the stream's first this-many tokens instead (a stream
                sorted by topic then gets a poor codec; pass ``n_tokens_hint``, the expected
                total, so K fits the whole collection; a spilled stream counts its tokens and
                ignores the hint); later batches are compressed and written as they arrive.
            ids: one id (int or str) per document; default ``0..n_docs-1``.
            metadata: one JSON-serialisable value (or None) per document.
            nbits: residual bits per dimension, 1, 2 or 4.
            device: where k-means and compression run (``"cpu"``/``"cuda"``) and where
                the returned index lives.
            n_centroids: override K; kmeans_niters, seed: k-means settings.
            codec: a trained :class:`Codec` to compress with instead of training one (the
                shards of a sharded index share one); the collection may then be empty.
            bucket_layout: residual tables, ``"codebook"`` (default: 256 trained codewords
                per residual byte, product quantization, format_version 3), ``"per_dim"``
                (a bucket table per dimension, Lloyd-Max fitted, format_version 2) or
                ``"pooled"`` (ColBERTv2's one table, the layout colbert-ai reads,
                format_version 1); all cost the same bytes per token. See FORMAT.md.
        """
        device = _resolve_device(device)
        build_index(Path(path), doc_emb, doc_offsets, ids, metadata, nbits, device, n_centroids=n_centroids,
                    kmeans_niters=kmeans_niters, seed=seed, train_buffer_tokens=train_buffer_tokens,
                    n_tokens_hint=n_tokens_hint, max_points_per_centroid=max_points_per_centroid, codec=codec,
                    bucket_layout=bucket_layout)
        return cls.open(path, device=device)

    @classmethod
    def from_colbert(cls, colbert_index_dir, path, device=None) -> "Index":
        """Import a stanford ColBERT / PLAID index folder (see :mod:`colbert_engine.index.colbert_import`)."""
        from colbert_engine.index.colbert_import import import_colbert

        device = _resolve_device(device)
        import_colbert(Path(colbert_index_dir), Path(path), device)
        return cls.open(path, device=device)
