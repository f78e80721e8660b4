"""``colbert_engine.Index``: build, open, search, add, delete, compact, filter, import.

Layout and crash-safety rules are in ``FORMAT.md``. One writer at a time per folder
(readers may be many); every write ends with a new manifest, the commit point.
"""

from __future__ import annotations

import itertools
import numbers
import os
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from colbert_engine import __version__
from colbert_engine.index import format as F
from colbert_engine.index.codec import HELDOUT_TOKENS, Codec, num_centroids, sample_doc_count, train_codec
from colbert_engine.index.ids import IdStore
from colbert_engine.index.segment import Segment, SegmentWriter
from colbert_engine.ops import _validate as V
from colbert_engine.search import plaid

CODEC_FILES = {"centroids": "codec.centroids.npy", "bucket_cutoffs": "codec.bucket_cutoffs.npy",
               "bucket_weights": "codec.bucket_weights.npy"}
# Docs per batch when a packed collection is cut into batches for compression.
_BATCH_TOKENS = 1 << 18
# Streaming builds train the codec on the documents of the first this-many tokens.
DEFAULT_TRAIN_BUFFER_TOKENS = 1 << 19
_OWN_FILE = re.compile(r"^(seg\d+\..*\.npy|ids\.\d+\.sqlite(-journal|-wal|-shm)?|codec\..*\.npy)(\.tmp)?$|.*\.tmp$")


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


def _id_list(ids, name: str) -> list:
    """A collection of external ids as a list. A str or bytes is not a collection of ids (it
    used to be iterated: metadata("d1") looked up "d" and "1", delete(b"d1") ids 100 and 49)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__} {ids!r:.60}; wrap one id in a list")
    if isinstance(ids, (np.ndarray, torch.Tensor)):
        return ids.tolist()
    try:
        return list(ids)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__}") from None


def _seg_name(gen: int) -> str:
    return f"seg{gen:06d}"


def _db_name(gen: int) -> str:
    return f"ids.{gen:06d}.sqlite"


def _check_batch(emb, offsets, where: str):
    emb = V.as_tensor(emb, f"{where}doc_emb")
    V.check_dtype(emb, f"{where}doc_emb", V.FLOAT_DTYPES)
    V.check_ndim(emb, f"{where}doc_emb", (2,))
    if offsets is None:
        raise ValueError(f"{where}doc_offsets: required with a packed doc_emb tensor")
    offsets = V.check_offsets(V.as_tensor(offsets, f"{where}doc_offsets"), f"{where}doc_offsets", emb.shape[0])
    return emb, offsets


def _as_list(values, n: int, name: str):
    if values is None:
        return None
    if isinstance(values, (np.ndarray, torch.Tensor)):
        values = values.tolist()
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} entries for {n} documents")
    return values


def _packed_batches(emb, offsets, ids, metadata) -> Iterator[tuple]:
    """Cut a packed collection into batches of whole documents, about _BATCH_TOKENS each."""
    n_docs = offsets.numel() - 1
    doc = 0
    while doc < n_docs:
        end = int(torch.searchsorted(offsets, offsets[doc] + _BATCH_TOKENS, right=True)) - 1
        end = min(max(end, doc + 1), n_docs)
        t0, t1 = int(offsets[doc]), int(offsets[end])
        yield (emb[t0:t1], offsets[doc:end + 1] - t0, None if ids is None else ids[doc:end],
               None if metadata is None else metadata[doc:end])
        doc = end


def _stream_batches(batches: Iterable) -> Iterator[tuple]:
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 4:
            raise TypeError(f"doc_emb: batch {i} must be a tuple (emb, offsets[, ids[, metadata]]), "
                            f"got {type(batch).__name__}")
        emb, offsets = _check_batch(batch[0], batch[1], f"batch {i}: ")
        n = offsets.numel() - 1
        ids = _as_list(batch[2], n, f"batch {i}: ids") if len(batch) > 2 else None
        metadata = _as_list(batch[3], n, f"batch {i}: metadata") if len(batch) > 3 else None
        yield emb, offsets, ids, metadata


def _batches_of(doc_emb, doc_offsets, ids, metadata) -> Iterator[tuple]:
    if isinstance(doc_emb, (torch.Tensor, np.ndarray)):
        emb, offsets = _check_batch(doc_emb, doc_offsets, "")
        n = offsets.numel() - 1
        return _packed_batches(emb, offsets, _as_list(ids, n, "ids"), _as_list(metadata, n, "metadata"))
    if doc_offsets is not None or ids is not None or metadata is not None:
        raise ValueError("doc_offsets/ids/metadata: give them inside each batch when doc_emb is an iterable")
    return _stream_batches(doc_emb)


def _sample_rows(lengths: torch.Tensor, seed: int, max_tokens: int) -> torch.Tensor:
    """Token indices (int64, ascending) of randomly chosen documents, ColBERT's
    min(1 + 16 sqrt(120 n), n) of them, taken in random order until ``max_tokens`` (what
    k-means and the bucket statistics will use) are reached: the sample never grows with
    the collection beyond that, and is a list of rows, not a copy of the vectors."""
    n_docs = lengths.numel()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_docs, generator=gen)[:sample_doc_count(n_docs)]
    take = int(torch.searchsorted(torch.cumsum(lengths[order], 0), max_tokens)) + 1
    chosen = torch.zeros(n_docs, dtype=torch.bool)
    chosen[order[:take]] = True
    token_mask = torch.repeat_interleave(chosen, lengths, output_size=int(lengths.sum()))
    return torch.nonzero(token_mask).flatten()


def _gather_rows(parts: list, rows: torch.Tensor) -> torch.Tensor:
    """``torch.cat(parts)[rows]`` without concatenating the parts (rows ascending)."""
    out, base = [], 0
    for part in parts:
        lo, hi = torch.searchsorted(rows, torch.tensor([base, base + part.shape[0]]))
        out.append(part[rows[int(lo):int(hi)] - base])
        base += part.shape[0]
    return torch.cat(out)


class Index:
    """A compressed late-interaction index in one folder. Use :meth:`build`, :meth:`open`
    or :meth:`from_colbert`; search with :meth:`search`."""

    def __init__(self, folder: Path, device: torch.device, verify: bool):
        self.path = Path(folder)
        self.device = device
        self._verify = verify
        self._ids: IdStore | None = None
        self.codec: Codec | None = None
        self.segments: list[Segment] = []
        self._load()

    # ------------------------------------------------------------------ opening
    def _load(self) -> None:
        manifest = F.read_manifest(self.path)
        self._manifest = manifest
        if getattr(self, "codec", None) is None:  # the codec never changes after build
            codec_arrays = {}
            for key, name in CODEC_FILES.items():
                entry = manifest["codec"][name]
                codec_arrays[key] = F.as_torch(F.load_npy(self.path, name, entry, self._verify)).clone()
            self.codec = Codec(codec_arrays["centroids"], codec_arrays["bucket_cutoffs"],
                               codec_arrays["bucket_weights"], manifest["nbits"]).to(self.device)
        # segments are immutable: after a commit only the new ones are opened (and verified)
        opened = {s.name: s for s in getattr(self, "segments", [])}
        self.segments = [opened.get(entry["name"]) or Segment.open(self.path, entry, self.device, self._verify,
                                                                       self.codec.centroids.shape[0])
                         for entry in manifest["segments"]]
        db = self.path / manifest["ids_db"]
        if not db.is_file():
            raise ValueError(f"{db}: missing (named in the manifest)")
        if self._ids is not None and self._ids.path != db:
            self._ids.close()
            self._ids = None
        if self._ids is None:
            self._ids = IdStore(db)
        self.generation = manifest["generation"]
        self.n_docs = manifest["n_docs"]
        deleted = self._ids.deleted_doc_ids(self.generation)
        if deleted.size != manifest["n_deleted"]:
            raise ValueError(f"{db}: {deleted.size} deleted documents, manifest says {manifest['n_deleted']}: "
                             "the id database does not belong to this manifest")
        if deleted.size:
            live = torch.ones(self.n_docs, dtype=torch.bool)
            live[torch.from_numpy(deleted)] = False
            self._live = live.to(self.device)
        else:
            self._live = None

    @classmethod
    def open(cls, path, device=None, verify: bool = True) -> "Index":
        """Open an index folder.

        Args:
            path: the folder.
            device: ``"cpu"`` (default; arrays stay memory-mapped) or ``"cuda[:i]"``
                (arrays copied to the GPU).
            verify: check the crc32 of every file's data and the index invariants the
                kernels rely on (reads each file once: about 0.3 s per GB from the page
                cache, plus the disk read). File sizes, npy headers, dtypes and shapes are
                always checked; ``verify=False`` trusts the files' contents.
        Raises:
            ValueError naming the file: missing/corrupt manifest, newer format_version,
            truncated or corrupt array, id database not matching the manifest.
        """
        return cls(Path(path), _resolve_device(device), verify)

    def close(self) -> None:
        if self._ids is not None:
            self._ids.close()
            self._ids = None
        self.segments = []

    def _check_open(self) -> None:
        # After close() the segments are gone: a search returned nothing or failed with
        # "'NoneType' object has no attribute ..." deep inside.
        if self._ids is None:
            raise ValueError(f"{self.path}: this Index was closed; open it again with Index.open")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, docs={self.n_docs}, live={self.n_live}, "
                f"segments={len(self.segments)}, nbits={self.codec.nbits}, device={self.device})")

    # --------------------------------------------------------------- properties
    @property
    def n_live(self) -> int:
        return self.n_docs - self._manifest["n_deleted"]

    @property
    def n_tokens(self) -> int:
        return self._manifest["n_tokens"]

    def stats(self) -> dict:
        """Counts and sizes for the CLI (bytes_per_token over the segments' files)."""
        seg_bytes = sum(s.nbytes for s in self.segments)
        m = self._manifest
        return {
            "path": str(self.path), "docs": self.n_docs, "live_docs": self.n_live, "deleted_docs": m["n_deleted"],
            "tokens": self.n_tokens, "bytes": seg_bytes + sum(e["bytes"] for e in m["codec"].values()),
            "bytes_per_token": seg_bytes / self.n_tokens if self.n_tokens else 0.0,
            "centroids": self.codec.centroids.shape[0], "nbits": self.codec.nbits, "dim": self.codec.dim,
            "format_version": m["format_version"], "generation": self.generation, "segments": len(self.segments),
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ search
    def _allowed(self, filter) -> torch.Tensor | None:
        """bool (n_docs,) of docs that may be returned: live, and matching ``filter``."""
        if filter is None:
            return self._live
        if isinstance(filter, tuple) and len(filter) == 2 and isinstance(filter[0], str):
            doc_ids = self._ids.where(filter[0], filter[1], self.generation)
        elif isinstance(filter, str):
            doc_ids = self._ids.where(filter, (), self.generation)
        else:
            filter = _id_list(filter, "filter")
            found = self._ids.lookup_live(filter, self.generation)
            doc_ids = np.fromiter(found.values(), dtype=np.int64, count=len(found))
        mask = torch.zeros(self.n_docs, dtype=torch.bool)
        if doc_ids.size:
            mask[torch.from_numpy(doc_ids)] = True
        mask = mask.to(self.device)
        return mask if self._live is None else mask & self._live

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
        V.check_finite(queries, "queries")
        return queries.to(self.device, torch.float32).contiguous(), single

    def search_internal(self, queries, k=10, nprobe=None, centroid_score_threshold=None, ndocs=None,
                        exact=False, filter=None):
        """Like :meth:`search` but returns internal doc ids: list of (scores, doc_ids) tensors."""
        self._check_open()
        queries, _ = self._prepare_queries(queries)
        allowed = self._allowed(filter)
        if exact:
            k = plaid.check_count(k, "k")
            return plaid.exact_search(queries, self.codec, self.segments, allowed, k)
        params = plaid.default_params(k, nprobe, centroid_score_threshold, ndocs)
        return plaid.plaid_search(queries, self.codec, self.segments, allowed, params)

    def search(self, queries, k: int = 10, nprobe: int | None = None, centroid_score_threshold: float | None = None,
               ndocs: int | None = None, exact: bool = False, filter=None):
        """Top-k documents per query.

        Args:
            queries: ``(nq, Lq, dim)`` or ``(Lq, dim)`` float32/float16/bfloat16 (numpy or torch);
                a batch is processed together.
            k: results per query.
            nprobe, centroid_score_threshold, ndocs: funnel parameters; None takes PLAID's
                default for k (DESIGN.md section 5).
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

    def metadata(self, ids: Sequence) -> list:
        """The metadata stored with live documents ``ids`` (None where absent or unknown)."""
        self._check_open()
        ids = _id_list(ids, "ids")
        found = self._ids.lookup_live(ids, self.generation)
        meta = self._ids.metadata(list(found.values()))
        return [meta.get(found.get(i)) for i in ids]

    # ----------------------------------------------------------------- writing
    def _begin_write(self) -> None:
        """Undo leftovers of a writer that crashed, remove files no manifest names."""
        self._check_open()
        self._ids.rollback_uncommitted(self.generation)
        _collect_garbage(self.path, self._manifest)

    def _commit(self, manifest: dict) -> None:
        manifest["generation"] = self.generation + 1
        manifest["written_by"] = f"colbert-engine {__version__}"
        manifest["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        F.write_manifest(self.path, manifest)
        F.crash_point("manifest_committed")
        old_manifest = self._manifest
        self._load()
        if old_manifest["ids_db"] != manifest["ids_db"]:
            _collect_garbage(self.path, self._manifest)

    def add(self, doc_emb, doc_offsets=None, ids=None, metadata=None) -> list:
        """Append documents as a new segment compressed with the existing codec.

        Same inputs as :meth:`build` (packed tensors or an iterable of batches). Default
        ids continue after the largest internal doc id (``n_docs, n_docs + 1, ...``).
        Returns the ids added. Re-adding an id that was deleted is allowed (a new document).
        """
        self._begin_write()
        gen = self.generation + 1
        base = self.n_docs
        writer = SegmentWriter(self.path, _seg_name(gen), self.codec, self.device)
        self._ids.begin()
        added = []
        try:
            for emb, offsets, batch_ids, batch_meta in _batches_of(doc_emb, doc_offsets, ids, metadata):
                self._check_dim(emb)
                n = offsets.numel() - 1
                first = base + writer.n_docs
                batch_ids = list(range(first, first + n)) if batch_ids is None else batch_ids
                self._ids.insert(first, batch_ids, batch_meta, gen)
                writer.add(emb, offsets)
                added.extend(batch_ids)
            entry = writer.finish(doc_base=base)
        except BaseException:
            writer.abort()
            self._ids.rollback()
            raise
        F.crash_point("add_segments_written")
        self._ids.commit()
        F.crash_point("add_ids_committed")
        manifest = dict(self._manifest)
        manifest["segments"] = self._manifest["segments"] + [entry]
        manifest["n_docs"] = base + entry["n_docs"]
        manifest["n_tokens"] = self.n_tokens + entry["n_tokens"]
        self._commit(manifest)
        return added

    def _check_dim(self, emb) -> None:
        if emb.shape[1] != self.codec.dim:
            raise ValueError(f"doc_emb: dim {emb.shape[1]} does not match the index's dim {self.codec.dim}")

    def delete(self, ids) -> int:
        """Tombstone the live documents with these ids; unknown ids are ignored.

        Internal ids are never renumbered (until :meth:`compact`); deleted documents are
        never returned. Returns how many documents were deleted.
        """
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        ids = _id_list(ids, "ids")
        self._begin_write()
        found = self._ids.lookup_live(ids, self.generation)
        if not found:
            return 0
        self._ids.begin()
        try:
            self._ids.mark_deleted(found.values(), self.generation + 1)
        except BaseException:
            self._ids.rollback()
            raise
        F.crash_point("delete_before_commit")
        self._ids.commit()
        F.crash_point("delete_ids_committed")
        manifest = dict(self._manifest)
        manifest["n_deleted"] = self._manifest["n_deleted"] + len(found)
        self._commit(manifest)
        return len(found)

    def compact(self) -> None:
        """Rewrite the index as one segment without tombstones (external ids kept; the
        compressed tokens are copied, not recompressed, so scores do not change)."""
        self._begin_write()
        gen = self.generation + 1
        writer = SegmentWriter(self.path, _seg_name(gen), self.codec, self.device)
        new_db = self.path / _db_name(gen)
        new_db.unlink(missing_ok=True)
        try:
            for seg in self.segments:
                offsets = seg.doc_offsets.cpu()
                lengths = torch.diff(offsets)
                live = torch.ones(seg.n_docs, dtype=torch.bool) if self._live is None else \
                    self._live[seg.doc_base:seg.doc_base + seg.n_docs].cpu()
                for start in range(0, seg.n_docs, 1 << 14):
                    end = min(start + (1 << 14), seg.n_docs)
                    docs = torch.nonzero(live[start:end]).flatten() + start
                    if docs.numel() == 0:
                        continue
                    token_mask = torch.repeat_interleave(live[start:end], lengths[start:end])
                    t0, t1 = int(offsets[start]), int(offsets[end])
                    writer.add_compressed(seg.codes[t0:t1].cpu()[token_mask], seg.residuals[t0:t1].cpu()[token_mask],
                                          seg.inv_norms[t0:t1].cpu()[token_mask], lengths[docs].numpy())
            entry = writer.finish(doc_base=0)
            store = IdStore(new_db)
            try:
                self._ids.copy_live_to(store, self.generation, gen)
            finally:
                store.close()
            F._fsync_file(new_db)
            F.fsync_dir(self.path)
        except BaseException:
            writer.abort()
            raise
        F.crash_point("compact_files_written")
        manifest = dict(self._manifest)
        manifest.update(segments=[entry], n_docs=entry["n_docs"], n_tokens=entry["n_tokens"], n_deleted=0,
                        ids_db=new_db.name)
        self._commit(manifest)

    # ------------------------------------------------------------------- build
    @classmethod
    def build(cls, path, doc_emb, doc_offsets=None, ids=None, metadata=None, nbits: int = 2, device=None, *,
              n_centroids: int | None = None, kmeans_niters: int = 4, seed: int = 0,
              train_buffer_tokens: int = DEFAULT_TRAIN_BUFFER_TOKENS, n_tokens_hint: int | None = None,
              max_points_per_centroid: int = 32, codec: Codec | None = None) -> "Index":
        """Build an index folder from token vectors and open it.

        Args:
            path: folder to create (may exist, but must not hold an index).
            doc_emb: packed ``(T, dim)`` float tensor/array with ``doc_offsets`` int64
                ``(n_docs + 1,)``; OR an iterable of batches ``(emb, offsets)``,
                ``(emb, offsets, ids)`` or ``(emb, offsets, ids, metadata)``, streamed so
                peak RAM stays bounded: only the first ``train_buffer_tokens`` tokens are
                held (the codec is trained on a document sample of those, so a stream
                should not be sorted by topic; pass ``n_tokens_hint`` -- the expected total
                -- so K fits the whole collection), every later batch is compressed and
                written as it arrives.
            ids: one id (int or str) per document; default ``0..n_docs-1``.
            metadata: one JSON-serialisable value (or None) per document.
            nbits: residual bits per dimension, 1, 2 or 4.
            device: where k-means and compression run (``"cpu"``/``"cuda"``) and where
                the returned index lives.
            n_centroids: override K; kmeans_niters, seed: k-means settings.
            codec: a trained :class:`Codec` to compress with instead of training one (the
                shards of a sharded index share one); the collection may then be empty.
        """
        if nbits not in (1, 2, 4):
            raise ValueError(f"nbits: must be 1, 2 or 4, got {nbits}")
        device = _resolve_device(device)
        folder = Path(path)
        if n_centroids is not None:
            n_centroids = plaid.check_count(n_centroids, "n_centroids")
        if isinstance(kmeans_niters, bool) or not isinstance(kmeans_niters, numbers.Integral) or kmeans_niters < 0:
            raise ValueError(f"kmeans_niters: expected an int >= 0, got {kmeans_niters!r}")
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / F.MANIFEST).exists():
            raise ValueError(f"{folder}: already holds an index (open it and add, or remove it first)")
        for leftover in os.listdir(folder):  # a build that crashed before its first manifest
            if _OWN_FILE.match(leftover):
                (folder / leftover).unlink()

        batches = _batches_of(doc_emb, doc_offsets, ids, metadata)
        if codec is not None:
            return cls._build_with_codec(folder, codec, batches, nbits, device)
        buffered, buffered_tokens = [], 0
        for batch in batches:
            buffered.append(batch)
            buffered_tokens += batch[0].shape[0]
            if buffered_tokens >= train_buffer_tokens:
                break
        if buffered_tokens == 0:
            raise ValueError("doc_emb: the collection has no tokens; nothing to train the codec on")
        dims = {b[0].shape[1] for b in buffered}
        if len(dims) != 1:
            raise ValueError(f"doc_emb: batches have different dims {sorted(dims)}")
        packed = isinstance(doc_emb, (torch.Tensor, np.ndarray))
        if packed:
            points, offsets = _check_batch(doc_emb, doc_offsets, "")
            lengths, n_tokens = torch.diff(offsets), points.shape[0]
        else:  # sample the buffered stream's documents
            lengths = torch.cat([torch.diff(b[1]) for b in buffered])
            n_tokens = n_tokens_hint or buffered_tokens
        k = n_centroids or num_centroids(n_tokens, n_tokens)
        rows = _sample_rows(lengths, seed, max_points_per_centroid * k + HELDOUT_TOKENS)
        if not packed:  # copy just the sampled tokens out of the buffered batches
            points = _gather_rows([b[0] for b in buffered], rows)
            rows = None
        codec = train_codec(points, n_tokens, nbits, seed=seed, niters=kmeans_niters, n_centroids=n_centroids,
                            max_points_per_centroid=max_points_per_centroid, rows=rows, device=device)
        del points, rows
        codec_entries = {CODEC_FILES["centroids"]: F.write_npy(folder, CODEC_FILES["centroids"], codec.centroids.cpu()),
                         CODEC_FILES["bucket_cutoffs"]: F.write_npy(folder, CODEC_FILES["bucket_cutoffs"],
                                                                    codec.bucket_cutoffs.cpu()),
                         CODEC_FILES["bucket_weights"]: F.write_npy(folder, CODEC_FILES["bucket_weights"],
                                                                    codec.bucket_weights.cpu())}
        # hand the buffered batches over one by one so each is freed once compressed
        buffered_stream = (buffered.pop(0) for _ in range(len(buffered)))
        return cls._write_first_generation(folder, codec, codec_entries, itertools.chain(buffered_stream, batches),
                                           device)

    @classmethod
    def _build_with_codec(cls, folder: Path, codec: Codec, batches, nbits: int, device) -> "Index":
        if not isinstance(codec, Codec):
            raise TypeError(f"codec: expected a Codec, got {type(codec).__name__}")
        if codec.nbits != nbits:
            raise ValueError(f"codec: its nbits {codec.nbits} differ from nbits={nbits}")
        codec = codec.to(device)
        codec_entries = {name: F.write_npy(folder, name, getattr(codec, key).cpu()) for key, name in CODEC_FILES.items()}
        return cls._write_first_generation(folder, codec, codec_entries, batches, device)

    @classmethod
    def _write_first_generation(cls, folder: Path, codec: Codec, codec_entries: dict, batches, device,
                                compressed: bool = False) -> "Index":
        gen = 1
        store = IdStore(folder / _db_name(gen))
        writer = SegmentWriter(folder, _seg_name(gen), codec, device)
        store.begin()
        try:
            for emb, offsets, batch_ids, batch_meta in batches:
                n = offsets.numel() - 1 if not compressed else len(offsets)
                first = writer.n_docs
                batch_ids = list(range(first, first + n)) if batch_ids is None else batch_ids
                store.insert(first, batch_ids, batch_meta, gen)
                if compressed:
                    writer.add_compressed(*emb, offsets)
                else:
                    if emb.shape[1] != codec.dim:
                        raise ValueError(f"doc_emb: batch dim {emb.shape[1]} != {codec.dim}")
                    writer.add(emb, offsets)
            entry = writer.finish(doc_base=0)
            store.commit()
        except BaseException:
            writer.abort()
            store.rollback()
            raise
        finally:
            store.close()
        F._fsync_file(folder / _db_name(gen))
        manifest = {
            "format": F.FORMAT_NAME, "format_version": F.FORMAT_VERSION, "generation": gen,
            "dim": codec.dim, "nbits": codec.nbits, "n_centroids": int(codec.centroids.shape[0]),
            "n_docs": entry["n_docs"], "n_tokens": entry["n_tokens"], "n_deleted": 0,
            "codec": codec_entries, "segments": [entry], "ids_db": _db_name(gen),
            "written_by": f"colbert-engine {__version__}",
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        F.write_manifest(folder, manifest)
        return cls.open(folder, device=device)

    @classmethod
    def from_colbert(cls, colbert_index_dir, path, device=None) -> "Index":
        """Import a stanford ColBERT / PLAID index folder (see :mod:`colbert_engine.index.colbert_import`)."""
        from colbert_engine.index.colbert_import import import_colbert

        return import_colbert(cls, Path(colbert_index_dir), Path(path), _resolve_device(device))


def _collect_garbage(folder: Path, manifest: dict) -> None:
    """Delete our own files that the committed manifest does not name (crashed writes,
    generations replaced by compaction)."""
    keep = set(manifest["codec"]) | {manifest["ids_db"], manifest["ids_db"] + "-journal",
                                     manifest["ids_db"] + "-wal", manifest["ids_db"] + "-shm"}
    for seg in manifest["segments"]:
        keep |= set(seg["files"])
    for name in os.listdir(folder):
        if name not in keep and name != F.MANIFEST and _OWN_FILE.match(name):
            (folder / name).unlink(missing_ok=True)
