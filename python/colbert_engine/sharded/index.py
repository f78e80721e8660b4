"""``ShardedIndex``: N ordinary index folders sharing one codec, searched as one.

Search sends the whole query batch to every shard (threads in this process, or one Ray
actor per shard holding it open) and merges the per-shard top-k. Scores are comparable
across shards because the codec is shared, so the merge is exact for what the shards
return: with ``exact=True`` the result equals exact search over one index holding all the
documents with the same codec. Writes route by id (:func:`~.manifest.shard_of`) and end
with a new ``sharded.json``. One writer at a time; readers may be many.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.codec import MAX_POINTS_PER_CENTROID, Codec
from colbert_engine.index.codec_files import bucket_layout_of, codec_files, codec_from_arrays
from colbert_engine.ops import _validate as V
from colbert_engine.sharded import build as B
from colbert_engine.sharded import manifest as M

# How long a request waits for a restarting shard actor before the shard counts as failed.
RESTART_WAIT_S = 120.0
# Errors that come from the caller's arguments: the same on every shard, raised as they are.
_INPUT_ERRORS = (ValueError, TypeError)


class ShardError(RuntimeError):
    """One or more shards failed a request; ``failed`` maps shard name -> error text."""

    def __init__(self, message: str, failed: dict):
        super().__init__(message)
        self.failed = failed


@dataclass
class PartialResults:
    """What ``search(..., allow_partial=True)`` returns: the merged results over the shards
    that answered, and which did not (shard name -> error text)."""

    results: list
    answered: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.failed


def _invoke(index, method, args, kwargs):
    """Run ``index.method(*args, **kwargs)``, or ``method(index, ...)`` for a function."""
    if callable(method):
        return method(index, *args, **kwargs)
    return getattr(index, method)(*args, **kwargs)


def _args(args, shard: int) -> tuple:
    """``args`` may be one tuple for every shard or a dict shard -> tuple."""
    return args[shard] if isinstance(args, dict) else args


def _add_from_spool(index, spool: str, parts: list, shard: int) -> list:
    return index.add(B._shard_batches(Path(spool), parts, shard))


class _LocalShards:
    """The shards opened in this process; requests run on a thread pool (the kernels and
    SQLite release the GIL)."""

    def __init__(self, paths: list, device, verify: bool, max_workers: int | None):
        from colbert_engine.index import Index

        self.names = [p.name for p in paths]
        self.indexes = []
        try:
            for path in paths:
                self.indexes.append(Index.open(path, device=device, verify=verify))
        except BaseException:
            self.close()
            raise
        workers = max_workers or min(len(paths), os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="shard")

    def call(self, shards: list, method, args=(), kwargs=None, retry: bool = True) -> dict:
        kwargs = kwargs or {}
        if len(shards) == 1:
            futures = None
        else:
            futures = {s: self.pool.submit(_invoke, self.indexes[s], method, _args(args, s), kwargs) for s in shards}
        out = {}
        for s in shards:
            try:
                out[s] = futures[s].result() if futures else _invoke(self.indexes[s], method, _args(args, s), kwargs)
            except Exception as err:  # reported per shard by the caller
                out[s] = err
        return out

    def close(self) -> None:
        for index in self.indexes:
            index.close()
        self.indexes = []
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


class _RayShards:
    """One Ray actor per shard, each holding its shard open. An actor that dies is restarted
    by Ray (``max_restarts``) and a read request is retried once on it."""

    def __init__(self, address, paths: list, device, verify: bool, actor_options: dict | None,
                 timeout_s: float | None):
        from colbert_engine.sharded import ray_backend

        self.names = [p.name for p in paths]
        self.ray, self.actors = ray_backend.start_shard_actors(address, paths, device, verify, actor_options)
        self.timeout_s = timeout_s

    def _get(self, s: int, ref):
        ray = self.ray
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)
            raise TimeoutError(f"no answer within {self.timeout_s} s") from None

    def _wait_restarted(self, s: int) -> None:
        """Until actor ``s`` answers again (Ray restarts it, reopening its shard), at most
        RESTART_WAIT_S; a dead actor (restarts used up) raises at once."""
        ray = self.ray
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                ray.get(self.actors[s].pid.remote(), timeout=max(0.1, deadline - time.monotonic()))
                return
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def call(self, shards: list, method, args=(), kwargs=None, retry: bool = True) -> dict:
        ray = self.ray
        kwargs = kwargs or {}
        refs = {s: self.actors[s].call.remote(method, _args(args, s), kwargs) for s in shards}
        out = {}
        for s in shards:
            try:
                out[s] = self._get(s, refs[s])
            except ray.exceptions.RayTaskError as err:  # raised inside the shard: keep its type
                out[s] = err.as_instanceof_cause()
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
                if not retry:
                    out[s] = err
                    continue
                try:
                    self._wait_restarted(s)
                    out[s] = self._get(s, self.actors[s].call.remote(method, _args(args, s), kwargs))
                except ray.exceptions.RayTaskError as again:
                    out[s] = again.as_instanceof_cause()
                except Exception as again:
                    out[s] = again
            except Exception as err:
                out[s] = err
        return out

    def pids(self) -> list:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []


def _merge(per_shard: list, k: int) -> list:
    """Per query, the k best ``(id, score)`` over the shards' lists: score descending, ties
    in shard order, then in each shard's own order (which is the single index's)."""
    merged = []
    for lists in zip(*per_shard):
        hits = [(-score, shard, rank, doc_id) for shard, hits in enumerate(lists)
                for rank, (doc_id, score) in enumerate(hits)]
        hits.sort(key=lambda h: h[:3])
        merged.append([(doc_id, -neg) for neg, _, _, doc_id in hits[:k]])
    return merged


class ShardedIndex:
    """A sharded index folder (``FORMAT.md`` in this package). Use :meth:`build`,
    :meth:`build_from_text` or :meth:`open`; the search and write methods mirror
    :class:`colbert_engine.Index`."""

    def __init__(self, folder: Path, device, verify: bool, ray, max_workers: int | None,
                 actor_options: dict | None, timeout_s: float | None):
        self.path = Path(folder)
        self.device = device
        self._manifest = M.read_manifest(self.path)
        self.codec = self._load_codec(verify)
        self.shards_ahead = self._check_shards()
        paths = [self.path / e["name"] for e in self._manifest["shards"]]
        self._backend = (_RayShards(ray, paths, device, verify, actor_options, timeout_s) if ray
                         else _LocalShards(paths, device, verify, max_workers))

    # ------------------------------------------------------------------ opening
    def _load_codec(self, verify: bool) -> Codec:
        m = self._manifest
        try:
            names = codec_files(bucket_layout_of(m))
        except ValueError as exc:
            raise ValueError(f"{self.path / M.SHARDED_MANIFEST}: {exc}") from None
        if not isinstance(m.get("codec"), dict) or set(m["codec"]) != set(names.values()):
            raise ValueError(f"{self.path / M.SHARDED_MANIFEST}: codec names {sorted(m.get('codec') or [])!r:.120}, "
                             f"expected {sorted(names.values())} (bucket_layout {bucket_layout_of(m)!r})")
        arrays = {key: F.as_torch(F.load_npy(self.path, name, m["codec"][name], verify)).clone()
                  for key, name in names.items()}
        if M.codec_checksum(m["codec"]) != m["codec_checksum"]:
            raise ValueError(f"{self.path / M.SHARDED_MANIFEST}: codec_checksum does not match its codec entries")
        return codec_from_arrays(arrays, self.path, m)

    def _check_shards(self) -> list:
        """Every shard must hold the shared codec and be at least at the recorded generation
        (a shard written alone, or a crash between a shard's commit and ``sharded.json``,
        leaves it ahead: accepted and listed; behind means an older copy: refused)."""
        ahead = []
        for entry in self._manifest["shards"]:
            folder = self.path / entry["name"]
            shard = F.read_manifest(folder)  # ValueError naming the shard's manifest
            crcs = {name: e["crc32"] for name, e in shard["codec"].items()}
            if crcs != {name: e["crc32"] for name, e in self._manifest["codec"].items()} \
                    or bucket_layout_of(shard) != bucket_layout_of(self._manifest):
                raise ValueError(f"{folder}: its codec differs from the sharded index's shared codec "
                                 "(a shard of another index?)")
            if shard["generation"] < entry["generation"]:
                raise ValueError(f"{folder}: generation {shard['generation']} is older than the "
                                 f"{entry['generation']} that {M.SHARDED_MANIFEST} records (an older copy of the shard?)")
            if shard["generation"] > entry["generation"]:
                ahead.append(entry["name"])
        return ahead

    @classmethod
    def open(cls, path, device=None, verify: bool = True, *, ray=None, max_workers: int | None = None,
             actor_options: dict | None = None, timeout_s: float | None = None) -> "ShardedIndex":
        """Open a sharded index folder.

        Args:
            device, verify: as :meth:`Index.open`, for every shard.
            ray: None (default) opens the shards in this process and searches them on a
                thread pool of ``max_workers`` (default: min(shards, cores)); True/"local"
                or a Ray address puts each shard in a Ray actor (``actor_options`` are
                passed to ``ray.remote``; default ``num_cpus=0, max_restarts=2``).
            timeout_s: with Ray, how long a shard may take to answer before it counts as failed.
        Raises:
            ValueError naming the file: a bad ``sharded.json``, a shard that does not open,
            holds another codec, or is older than the manifest records.
        """
        from colbert_engine.index.index import _resolve_device

        return cls(Path(path), _resolve_device(device), verify, ray, max_workers, actor_options, timeout_s)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self) -> None:
        if self._backend is None:
            raise ValueError(f"{self.path}: this ShardedIndex was closed; open it again with ShardedIndex.open")

    def __repr__(self) -> str:
        return (f"ShardedIndex({str(self.path)!r}, shards={self.n_shards}, docs={self.n_docs}, "
                f"live={self.n_live}, nbits={self.codec.nbits})")

    # --------------------------------------------------------------- properties
    @property
    def n_shards(self) -> int:
        return len(self._manifest["shards"])

    @property
    def shard_names(self) -> list:
        return [e["name"] for e in self._manifest["shards"]]

    @property
    def generation(self) -> int:
        return self._manifest["generation"]

    @property
    def n_docs(self) -> int:
        return sum(e["n_docs"] for e in self._manifest["shards"])

    @property
    def n_live(self) -> int:
        return sum(e["n_docs"] - e["n_deleted"] for e in self._manifest["shards"])

    @property
    def n_tokens(self) -> int:
        return sum(e["n_tokens"] for e in self._manifest["shards"])

    def stats(self) -> dict:
        """Totals over the shards (as :meth:`Index.stats`) plus ``shards``: each shard's stats."""
        per_shard = self._each(list(range(self.n_shards)), "stats")
        total_bytes = sum(s["bytes"] for s in per_shard)
        seg_bytes = sum(s["bytes_per_token"] * s["tokens"] for s in per_shard)
        tokens = sum(s["tokens"] for s in per_shard)
        m = self._manifest
        return {
            "path": str(self.path), "shards": self.n_shards, "docs": sum(s["docs"] for s in per_shard),
            "live_docs": sum(s["live_docs"] for s in per_shard), "deleted_docs": sum(s["deleted_docs"] for s in per_shard),
            "tokens": tokens, "bytes": total_bytes, "bytes_per_token": seg_bytes / tokens if tokens else 0.0,
            "centroids": m["n_centroids"], "nbits": m["nbits"], "dim": m["dim"],
            "format_version": m["format_version"], "generation": m["generation"],
            "shards_ahead": list(self.shards_ahead), "device": str(self.device),
            "shard_stats": per_shard,
        }

    # ------------------------------------------------------------ fan-out core
    def _each(self, shards: list, method, args=(), kwargs=None, retry: bool = True, allow_partial: bool = False):
        """Run ``method`` on ``shards``; returns results in order (allow_partial: a dict of
        the shards that answered, and the failures)."""
        self._check_open()
        out = self._backend.call(shards, method, args, kwargs, retry)
        failed = {s: r for s, r in out.items() if isinstance(r, BaseException)}
        if failed and not allow_partial:
            first = next(iter(failed.values()))
            if isinstance(first, _INPUT_ERRORS) and all(isinstance(e, _INPUT_ERRORS) for e in failed.values()):
                raise first
            names = {self.shard_names[s]: f"{type(e).__name__}: {e}" for s, e in failed.items()}
            listing = "; ".join(f"{name}: {text}" for name, text in names.items())
            raise ShardError(f"{self.path}: {len(failed)} of {len(shards)} shard(s) failed: {listing}", names) \
                from first
        if allow_partial:
            return {s: r for s, r in out.items() if s not in failed}, failed
        return [out[s] for s in shards]

    # ------------------------------------------------------------------ search
    def _check_queries(self, queries):
        queries = V.as_tensor(queries, "queries")
        V.check_dtype(queries, "queries", V.FLOAT_DTYPES)
        V.check_ndim(queries, "queries", (2, 3))
        V.check_size(queries, "queries", queries.dim() - 1, self.codec.dim, "the index's dim")
        return queries.cpu() if self._ray else queries

    @property
    def _ray(self) -> bool:
        return isinstance(self._backend, _RayShards)

    def search(self, queries, k: int = 10, nprobe: int | None = None, centroid_score_threshold: float | None = None,
               ndocs: int | None = None, exact: bool = False, filter=None, allow_partial: bool = False):
        """Top-k documents per query over all shards (arguments as :meth:`Index.search`).

        The filter is applied by each shard to its own documents. Every shard must answer;
        otherwise :class:`ShardError` names the ones that did not (a Ray shard actor that
        died is restarted and asked once more first). With ``allow_partial=True`` a
        :class:`PartialResults` is returned instead, saying which shards answered.

        Returns:
            as :meth:`Index.search`: a list of ``(id, score)`` (best first) per query, or
            one such list for a single ``(Lq, dim)`` query.
        """
        queries = self._check_queries(queries)
        single = queries.dim() == 2
        kwargs = dict(k=k, nprobe=nprobe, centroid_score_threshold=centroid_score_threshold, ndocs=ndocs,
                      exact=exact, filter=filter)
        shards = list(range(self.n_shards))
        if not allow_partial:
            per_shard = self._each(shards, "search", (queries,), kwargs)
            merged = _merge([[r] if single else r for r in per_shard], k)
            return merged[0] if single else merged
        answered, failed = self._each(shards, "search", (queries,), kwargs, allow_partial=True)
        nq = 1 if single else queries.shape[0]
        per_shard = [[r] if single else r for _, r in sorted(answered.items())] or [[[] for _ in range(nq)]]
        merged = _merge(per_shard, k)
        return PartialResults(merged[0] if single else merged, [self.shard_names[s] for s in sorted(answered)],
                              {self.shard_names[s]: f"{type(e).__name__}: {e}" for s, e in failed.items()})

    def recall(self, queries, k: int = 10, **search_kwargs) -> float:
        """Mean recall@k of the default (or given) funnel against exact search, over all shards."""
        queries = self._check_queries(queries)
        if queries.dim() == 2:
            queries = queries.unsqueeze(0)
        approx = self.search(queries, k, **search_kwargs)
        truth = self.search(queries, k, exact=True, filter=search_kwargs.get("filter"))
        values = [len({i for i, _ in a} & {i for i, _ in t}) / len(t) for a, t in zip(approx, truth) if t]
        return float(np.mean(values)) if values else 1.0

    def metadata(self, ids) -> list:
        """The metadata of live documents ``ids`` (None where absent or unknown)."""
        from colbert_engine.index.batches import id_list

        ids = id_list(ids, "ids")
        groups = self._route(ids)
        shards = sorted(groups)
        answers = self._each(shards, "metadata", {s: ([ids[p] for p in groups[s]],) for s in shards})
        out = [None] * len(ids)
        for s, values in zip(shards, answers):
            for pos, value in zip(groups[s], values):
                out[pos] = value
        return out

    def _route(self, ids: list) -> dict:
        """shard -> positions in ``ids`` of the ids it holds (or receives)."""
        groups: dict[int, list] = {}
        for pos, doc_id in enumerate(ids):
            groups.setdefault(M.shard_of(doc_id, self.n_shards), []).append(pos)
        return groups

    # ----------------------------------------------------------------- writing
    def _refresh(self, shards: Iterable[int]) -> None:
        """Record the written shards' new generations and counts: a new ``sharded.json``."""
        shards = sorted(set(shards))
        if not shards:
            return
        stats = self._each(shards, "stats")
        body = {k: v for k, v in self._manifest.items() if k not in ("checksum", "written_by", "written_at")}
        body["shards"] = [dict(e) for e in self._manifest["shards"]]
        for s, st in zip(shards, stats):
            body["shards"][s].update(generation=st["generation"], n_docs=st["docs"], n_tokens=st["tokens"],
                                     n_deleted=st["deleted_docs"])
        body["generation"] = self._manifest["generation"] + 1
        F.crash_point("sharded_before_manifest")
        M.write_manifest(self.path, body)
        self._manifest = M.read_manifest(self.path)
        self.shards_ahead = [n for n in self.shards_ahead if self.shard_names.index(n) not in shards]

    def add(self, doc_emb, doc_offsets=None, ids=None, metadata=None) -> list:
        """Add documents, each to the shard its id routes to (same inputs as
        :meth:`Index.add`). Default ids continue after the internal document count over all
        shards. Each touched shard commits one new segment; if a shard fails, what the
        others added is deleted again and :class:`ShardError` names the failed shard.
        Returns the ids added.
        """
        self._check_open()
        if isinstance(doc_emb, (torch.Tensor, np.ndarray)):
            batches, first_id = B.packed_batches(doc_emb, doc_offsets, ids, metadata), self.n_docs
        else:
            if doc_offsets is not None or ids is not None or metadata is not None:
                raise ValueError("doc_offsets/ids/metadata: give them inside each batch when doc_emb is an iterable")
            batches, first_id = doc_emb, self.n_docs
        spool = self.path / (B.SPOOL + "-add")
        shutil.rmtree(spool, ignore_errors=True)
        spool.mkdir()
        try:
            summaries, all_ids = [], []
            for i, part in enumerate(B.vector_parts(batches, first_id=first_id)):
                all_ids.extend(part["ids"])
                summaries.append(B.spool_part(spool, i, part, self.n_shards))
            if not summaries:
                return []
            dims = {s["dim"] for s in summaries}
            if dims - {self.codec.dim}:
                raise ValueError(f"doc_emb: dim {sorted(dims - {self.codec.dim})[0]} does not match the index's dim "
                                 f"{self.codec.dim}")
            parts = [s["part"] for s in summaries]
            shards = sorted({int(x) for s in summaries for x in np.unique(s["shards"])})
            out = self._each(shards, _add_from_spool, {s: (str(spool), parts, s) for s in shards},
                             retry=False, allow_partial=True)
            added, failed = out
            if failed:
                for s, ids_added in added.items():  # undo the shards that did commit
                    self._each([s], "delete", (ids_added,), retry=False)
                self._refresh(added)
                names = {self.shard_names[s]: f"{type(e).__name__}: {e}" for s, e in failed.items()}
                first = next(iter(failed.values()))
                if isinstance(first, _INPUT_ERRORS):
                    raise first
                raise ShardError(f"{self.path}: add failed on " + "; ".join(f"{n}: {t}" for n, t in names.items())
                                 + " (nothing was added)", names) from first
            self._refresh(shards)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        return all_ids

    def delete(self, ids) -> int:
        """Tombstone the live documents with these ids (each looked up in the shard its id
        routes to); unknown ids are ignored. Returns how many were deleted."""
        from colbert_engine.index.ids import normalize_id
        from colbert_engine.index.batches import id_list

        self._check_open()
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        ids = [normalize_id(i) for i in id_list(ids, "ids")]
        groups = self._route(ids)
        shards = sorted(groups)
        counts = self._each(shards, "delete", {s: ([ids[p] for p in groups[s]],) for s in shards}, retry=False)
        self._refresh([s for s, n in zip(shards, counts) if n])
        return int(sum(counts))

    def compact(self) -> None:
        """Compact every shard (see :meth:`Index.compact`)."""
        shards = list(range(self.n_shards))
        self._each(shards, "compact", retry=False)
        self._refresh(shards)

    # ------------------------------------------------------------------- build
    @classmethod
    def build(cls, path, doc_emb, doc_offsets=None, ids=None, metadata=None, *, n_shards: int = 2, nbits: int = 2,
              device=None, seed: int = 0, n_centroids: int | None = None, kmeans_niters: int = 4,
              max_points_per_centroid: int = MAX_POINTS_PER_CENTROID, bucket_layout: str | None = None,
              docs_per_part: int = 4096, ray=None, open_on_ray: bool = False,
              quiet: bool = True, report: dict | None = None) -> "ShardedIndex":
        """Build a sharded index from token vectors and open it.

        Args:
            doc_emb, doc_offsets, ids, metadata: as :meth:`Index.build` (packed, or an
                iterable of ``(emb, offsets[, ids[, metadata]])`` batches).
            n_shards: number of shards; a document goes to ``shard_of(id, n_shards)``.
            ray: None builds in this process; True/"local" or an address builds on Ray
                (spooling through ``map_batches``, one task per shard). Same files either way.
            open_on_ray: open the result with its shards in Ray actors (else in this process).
            seed, n_centroids, kmeans_niters, max_points_per_centroid, bucket_layout: the
                shared codec's training, as :meth:`Index.build` (same defaults).
            report: a dict that receives step times and peak RSS per worker.
        """
        if isinstance(doc_emb, (torch.Tensor, np.ndarray)):
            batches = B.packed_batches(doc_emb, doc_offsets, ids, metadata, docs_per_part)
        else:
            if doc_offsets is not None or ids is not None or metadata is not None:
                raise ValueError("doc_offsets/ids/metadata: give them inside each batch when doc_emb is an iterable")
            batches = doc_emb
        B.build_sharded(path, B.vector_parts(batches), n_shards, nbits=nbits, seed=seed, n_centroids=n_centroids,
                        kmeans_niters=kmeans_niters, max_points_per_centroid=max_points_per_centroid,
                        bucket_layout=bucket_layout, device=device, ray=ray, quiet=quiet, report=report)
        return cls.open(path, device=device, ray=ray if open_on_ray else None)

    @classmethod
    def build_from_text(cls, path, records, encoder_factory: Callable, *, n_shards: int = 2, nbits: int = 2,
                        device=None, seed: int = 0, chunk_docs: int = 2048, batch_size: int = 32,
                        store_text: bool = True, ray=None, workers: int | None = None, open_on_ray: bool = False,
                        quiet: bool = True, report: dict | None = None, **codec_options) -> "ShardedIndex":
        """Encode a text collection and build a sharded index.

        Args:
            records: a ``.jsonl``/``.tsv`` file or folder of ``.txt`` files (read with
                :func:`colbert_engine.collection.read_records`), or an iterable of its
                ``Record`` objects.
            encoder_factory: a picklable callable returning an encoder (anything with
                ``encode_documents(texts, batch_size) -> (emb, offsets)``), e.g.
                ``functools.partial(Encoder.from_pretrained, "jinaai/jina-colbert-v2")``;
                on Ray every encoder actor calls it once (one actor per GPU when the
                cluster has GPUs, else ``workers`` CPU actors).
            chunk_docs: documents per part; store_text: keep each text in its metadata.
        """
        if isinstance(records, (str, os.PathLike)):
            from colbert_engine.collection import read_records

            records = read_records(records)
        B.build_sharded(path, B.text_parts(records, chunk_docs, store_text), n_shards, nbits=nbits, seed=seed,
                        device=device, encoder_factory=encoder_factory, batch_size=batch_size, ray=ray,
                        workers=workers, quiet=quiet, report=report, **codec_options)
        return cls.open(path, device=device, ray=ray if open_on_ray else None)
