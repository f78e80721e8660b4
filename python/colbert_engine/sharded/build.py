"""Building a sharded index: spool, train one codec on a corpus-wide sample, write shards.

The same three steps run in this process (one part and one shard at a time) or on Ray
(parts through a Ray Dataset's ``map_batches``, text through a pool of encoder actors;
shards in parallel tasks), and give the same files for the same input and seed:

1. **spool**: the input is cut into *parts* (numbered batches of whole documents, in input
   order). Each part is encoded if it is text, each document routed to its shard by the
   hash of its id (:func:`~colbert_engine.sharded.manifest.shard_of`), and the part's token
   vectors written per shard to ``<index>/.spool/`` (the input dtype is kept: no rounding
   between the vectors and the codec). Only a summary (document lengths and shards) comes
   back to the driver.
2. **codec**: the driver draws ColBERT's document sample over the whole corpus (seeded),
   reads just those tokens back from the spool and trains the codec once
   (:func:`colbert_engine.index.codec.train_codec`).
3. **shards**: each shard is an ordinary :meth:`Index.build <colbert_engine.Index.build>`
   with that codec over its spooled parts in part order; then ``sharded.json`` is written
   (the commit point) and the spool removed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.batches import sample_documents
from colbert_engine.index.codec import (HELDOUT_TOKENS, MAX_POINTS_PER_CENTROID, Codec, check_bucket_layout,
                                        num_centroids, train_codec)
from colbert_engine.index.codec_files import write_codec
from colbert_engine.index.ids import normalize_id
from colbert_engine.ops import _validate as V
from colbert_engine.sharded import manifest as M

SPOOL = ".spool"
# Parts handed to Ray per Dataset: bounds the driver's memory for a streamed input.
DEFAULT_WINDOW_PARTS = 64
_OWN_ENTRY = re.compile(r"^(shard-\d{4}|\.spool|codec\..*\.npy(\.tmp)?|sharded\.json\.tmp)$")


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry over a parent's
    peak into a child started by fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------ input parts

def vector_parts(batches: Iterable, first_id: int = 0) -> Iterator[dict]:
    """Parts from an iterable of ``(emb, offsets[, ids[, metadata]])`` batches (as
    :meth:`Index.build` takes them). Documents without ids get ``first_id`` + their position
    in the whole input (``0..n-1`` for a build, as in a single index)."""
    first_doc = first_id
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 4:
            raise TypeError(f"doc_emb: batch {i} must be a tuple (emb, offsets[, ids[, metadata]]), "
                            f"got {type(batch).__name__}")
        emb = V.as_tensor(batch[0], f"batch {i}: doc_emb")
        V.check_dtype(emb, f"batch {i}: doc_emb", V.FLOAT_DTYPES)
        V.check_ndim(emb, f"batch {i}: doc_emb", (2,))
        offsets = V.check_offsets(V.as_tensor(batch[1], f"batch {i}: doc_offsets"), f"batch {i}: doc_offsets",
                                  emb.shape[0])
        n = offsets.numel() - 1
        ids = _list_of(batch[2] if len(batch) > 2 else None, n, f"batch {i}: ids")
        metadata = _list_of(batch[3] if len(batch) > 3 else None, n, f"batch {i}: metadata")
        if ids is None:
            ids = list(range(first_doc, first_doc + n))
        first_doc += n
        if emb.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            emb = emb.float()
        yield {"emb": emb.cpu().numpy(), "offsets": offsets.cpu().numpy(), "ids": [normalize_id(x) for x in ids],
               "metadata": metadata}


def packed_batches(doc_emb, doc_offsets, ids=None, metadata=None, docs_per_part: int = 4096) -> Iterator[tuple]:
    """A packed collection cut into batches of ``docs_per_part`` whole documents."""
    emb = V.as_tensor(doc_emb, "doc_emb")
    V.check_ndim(emb, "doc_emb", (2,))
    if doc_offsets is None:
        raise ValueError("doc_offsets: required with a packed doc_emb tensor")
    offsets = V.check_offsets(V.as_tensor(doc_offsets, "doc_offsets"), "doc_offsets", emb.shape[0])
    n = offsets.numel() - 1
    ids = _list_of(ids, n, "ids")
    metadata = _list_of(metadata, n, "metadata")
    for start in range(0, n, docs_per_part):
        end = min(start + docs_per_part, n)
        t0, t1 = int(offsets[start]), int(offsets[end])
        yield (emb[t0:t1], offsets[start:end + 1] - t0,
               None if ids is None else ids[start:end],
               None if metadata is None else metadata[start:end])


def text_parts(records: Iterable, chunk_docs: int, store_text: bool = True) -> Iterator[dict]:
    """Parts from :class:`colbert_engine.collection.Record` objects (text still to encode)."""
    records = iter(records)
    while True:
        chunk = list(itertools.islice(records, chunk_docs))
        if not chunk:
            return
        metadata = []
        for record in chunk:
            meta = dict(record.metadata or {})
            if store_text:
                meta.setdefault("text", record.text)
            metadata.append(meta or None)
        yield {"texts": [r.text for r in chunk], "ids": [r.id for r in chunk], "metadata": metadata}


def _list_of(values, n: int, name: str):
    if values is None:
        return None
    values = values.tolist() if isinstance(values, (np.ndarray, torch.Tensor)) else list(values)
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} entries for {n} documents")
    return values


# ----------------------------------------------------------------------------- spool

def _part_file(spool: Path, part: int, shard: int, what: str) -> Path:
    return spool / f"p{part:06d}.s{shard:04d}.{what}"


def spool_part(spool: Path, part: int, payload: dict, n_shards: int, encoder=None, batch_size: int = 32) -> dict:
    """Encode (if text) and write one part per shard; returns its summary (no vectors):
    ``{"part", "lengths" int64 (n,), "shards" int32 (n,), "dim", "peak_rss_mb"}``."""
    if "texts" in payload:
        if encoder is None:
            raise ValueError("encoder: required to build from text")
        emb, offsets = encoder.encode_documents(payload["texts"], batch_size=batch_size)
        emb = emb.detach().cpu()
        emb = (emb.float() if emb.dtype == torch.bfloat16 else emb).numpy()
        offsets = offsets.cpu().numpy()
    else:
        emb, offsets = payload["emb"], payload["offsets"]
    ids, metadata = payload["ids"], payload["metadata"]
    lengths = np.diff(offsets).astype(np.int64)
    shards = np.fromiter((M.shard_of(x, n_shards) for x in ids), dtype=np.int32, count=len(ids))
    token_shard = np.repeat(shards, lengths)
    for s in np.unique(shards).tolist():
        docs = np.flatnonzero(shards == s)
        np.save(_part_file(spool, part, s, "emb.npy"), np.ascontiguousarray(emb[token_shard == s]))
        np.save(_part_file(spool, part, s, "lengths.npy"), lengths[docs])
        sub_meta = None if metadata is None else [metadata[d] for d in docs]
        try:
            text = json.dumps({"ids": [ids[d] for d in docs], "metadata": sub_meta})
        except TypeError as err:
            raise TypeError(f"metadata: part {part} holds metadata that is not JSON serialisable: {err}") from None
        _part_file(spool, part, s, "docs.json").write_text(text)
    return {"part": part, "lengths": lengths, "shards": shards, "dim": int(emb.shape[1]),
            "peak_rss_mb": _peak_rss_mb()}


def _shard_batches(spool: Path, parts: list, shard: int) -> Iterator[tuple]:
    for part in parts:
        path = _part_file(spool, part, shard, "emb.npy")
        if not path.exists():
            continue
        emb = torch.from_numpy(np.load(path))
        lengths = np.load(_part_file(spool, part, shard, "lengths.npy"))
        offsets = torch.zeros(lengths.shape[0] + 1, dtype=torch.int64)
        offsets[1:] = torch.from_numpy(np.cumsum(lengths))
        docs = json.loads(_part_file(spool, part, shard, "docs.json").read_text())
        yield emb, offsets, docs["ids"], docs["metadata"]


# ----------------------------------------------------------------------------- codec

def train_shared_codec(spool: Path, summaries: list, nbits: int, seed: int, kmeans_niters: int,
                       n_centroids: int | None, max_points_per_centroid: int, device,
                       bucket_layout: str | None = None) -> Codec:
    """The codec of all shards, trained on a sample drawn across the whole corpus."""
    lengths = torch.from_numpy(np.concatenate([s["lengths"] for s in summaries]))
    n_tokens = int(lengths.sum())
    if n_tokens == 0:
        raise ValueError("doc_emb: the collection has no tokens; nothing to train the codec on")
    k = n_centroids or num_centroids(n_tokens, n_tokens)
    chosen = np.zeros(lengths.numel(), dtype=bool)
    chosen[sample_documents(lengths, seed, max_points_per_centroid * k + HELDOUT_TOKENS).numpy()] = True
    # read the chosen documents' tokens back from the spool, in global document order
    pieces, doc = [], 0
    for summary in summaries:
        part_lengths, part_shards = summary["lengths"], summary["shards"]
        n = part_lengths.shape[0]
        picked = np.flatnonzero(chosen[doc:doc + n])
        doc += n
        if picked.size == 0:
            continue
        # a document's rows in its shard's file start after the part's earlier docs of that shard
        start = np.zeros(n, dtype=np.int64)
        files = {}
        for s in np.unique(part_shards[picked]).tolist():
            docs = np.flatnonzero(part_shards == s)
            start[docs] = np.cumsum(part_lengths[docs]) - part_lengths[docs]
            files[s] = np.load(_part_file(spool, summary["part"], s, "emb.npy"), mmap_mode="r")
        pieces.extend(np.asarray(files[part_shards[d]][start[d]:start[d] + part_lengths[d]]) for d in picked)
    points = torch.from_numpy(np.concatenate(pieces))
    return train_codec(points, n_tokens, nbits, seed=seed, niters=kmeans_niters, n_centroids=n_centroids,
                       max_points_per_centroid=max_points_per_centroid, device=device, bucket_layout=bucket_layout)


# ---------------------------------------------------------------------------- shards

def write_shard(folder: Path, shard: int, parts: list, codec: Codec, nbits: int, device=None) -> dict:
    """Build shard ``shard`` (an ordinary index folder) from its spooled parts."""
    from colbert_engine.index import Index

    start, cpu = time.perf_counter(), _cpu_s()
    spool = folder / SPOOL
    index = Index.build(folder / M.shard_name(shard), _shard_batches(spool, parts, shard), nbits=nbits,
                        device=device, codec=codec)
    stats = index.stats()
    index.close()
    return {"name": M.shard_name(shard), "generation": stats["generation"], "n_docs": stats["docs"],
            "n_tokens": stats["tokens"], "n_deleted": 0, "seconds": time.perf_counter() - start,
            "cpu_seconds": _cpu_s() - cpu,
            "peak_rss_mb": _peak_rss_mb(), "pid": os.getpid()}


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` or clean what a crashed build left; refuse an existing index."""
    folder.mkdir(parents=True, exist_ok=True)
    if M.is_sharded(folder):
        raise ValueError(f"{folder}: already holds a sharded index (open it and add, or remove it first)")
    if (folder / F.MANIFEST).exists():
        raise ValueError(f"{folder}: already holds an index")
    for entry in os.listdir(folder):
        if _OWN_ENTRY.match(entry):
            path = folder / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def build_sharded(folder, parts: Iterable[dict], n_shards: int, *, nbits: int = 2, seed: int = 0,
                  n_centroids: int | None = None, kmeans_niters: int = 4,
                  max_points_per_centroid: int = MAX_POINTS_PER_CENTROID, bucket_layout: str | None = None,
                  device=None, encoder_factory: Callable | None = None, batch_size: int = 32, ray=None,
                  workers: int | None = None, window_parts: int = DEFAULT_WINDOW_PARTS, quiet: bool = True,
                  report: dict | None = None) -> Path:
    """Spool ``parts``, train the shared codec, write ``n_shards`` shards and the manifest.

    ``ray``: None/False builds in this process; True or ``"local"`` starts (or uses) a local
    Ray instance, any other string is a cluster address. ``report`` (a dict) receives the
    per-step times and each worker's peak RSS. Returns the folder.
    """
    from tqdm import tqdm

    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards: expected an int >= 1, got {n_shards!r}")
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits: must be 1, 2 or 4, got {nbits}")
    check_bucket_layout(bucket_layout)  # before the corpus is spooled
    folder = Path(folder)
    prepare_folder(folder)
    spool = folder / SPOOL
    spool.mkdir()
    report = {} if report is None else report
    t0 = time.perf_counter()
    try:
        if ray:
            from colbert_engine.sharded import ray_backend

            summaries = ray_backend.spool_parts(ray, spool, parts, n_shards, encoder_factory, batch_size,
                                                workers, window_parts, quiet)
        else:
            encoder = encoder_factory() if encoder_factory is not None else None
            summaries = [spool_part(spool, i, payload, n_shards, encoder, batch_size)
                         for i, payload in enumerate(tqdm(parts, desc="spooling", unit="part", disable=quiet))]
        summaries.sort(key=lambda s: s["part"])
        if not summaries:
            raise ValueError("doc_emb: the collection has no documents")
        dims = {s["dim"] for s in summaries}
        if len(dims) != 1:
            raise ValueError(f"doc_emb: batches have different dims {sorted(dims)}")
        report["spool_s"] = time.perf_counter() - t0
        report["spool_peak_rss_mb"] = [s["peak_rss_mb"] for s in summaries]
        t1 = time.perf_counter()
        codec = train_shared_codec(spool, summaries, nbits, seed, kmeans_niters, n_centroids,
                                   max_points_per_centroid, device, bucket_layout)
        codec = codec.to("cpu")
        codec_entries = write_codec(folder, codec)  # the files of the codec's bucket layout
        report["codec_s"] = time.perf_counter() - t1
        report["driver_peak_rss_mb"] = _peak_rss_mb()
        t2 = time.perf_counter()
        part_ids = [s["part"] for s in summaries]
        if ray:
            shards = ray_backend.write_shards(ray, folder, n_shards, part_ids, codec, nbits, quiet)
        else:
            shards = [write_shard(folder, s, part_ids, codec, nbits, device)
                      for s in tqdm(range(n_shards), desc="shards", unit="shard", disable=quiet)]
        report["shards_s"] = time.perf_counter() - t2
        report["shards"] = shards
        body = {"format": M.SHARDED_FORMAT_NAME, "format_version": M.sharded_format_version_for(codec.bucket_layout),
                "generation": 1,
                "dim": codec.dim, "nbits": nbits, "n_centroids": int(codec.centroids.shape[0]),
                "codec": codec_entries, "codec_checksum": M.codec_checksum(codec_entries),
                "bucket_layout": codec.bucket_layout, "routing": M.ROUTING,
                "shards": [{k: s[k] for k in ("name", "generation", "n_docs", "n_tokens", "n_deleted")}
                           for s in shards]}
        F.crash_point("sharded_build_before_manifest")
        M.write_manifest(folder, body)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    report["total_s"] = time.perf_counter() - t0
    return folder
