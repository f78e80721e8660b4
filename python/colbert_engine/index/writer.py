"""The write side of an index folder: a new index's first generation (build, imports) and
the add / delete / compact generations of an open one. Crash-safety rules: FORMAT.md."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Iterable

import torch

from colbert_engine import __version__
from colbert_engine.index import format as F
from colbert_engine.index.batches import batches_of, id_list
from colbert_engine.index.codec import Codec
from colbert_engine.index.codec_files import write_codec
from colbert_engine.index.ids import IdStore
from colbert_engine.index.segment import SegmentWriter

_OWN_FILE = re.compile(r"^(seg\d+\..*\.npy|ids\.\d+\.sqlite(-journal|-wal|-shm)?|codec\..*\.npy)(\.tmp)?$|.*\.tmp$")


def seg_name(gen: int) -> str:
    return f"seg{gen:06d}"


def db_name(gen: int) -> str:
    return f"ids.{gen:06d}.sqlite"


def remove_leftovers(folder: Path) -> None:
    """Before a first generation: remove what a build that crashed before its manifest left."""
    for leftover in os.listdir(folder):
        if _OWN_FILE.match(leftover):
            (folder / leftover).unlink()


def write_index(folder: Path, codec: Codec, batches: Iterable, device: torch.device,
                compressed: bool = False) -> None:
    """Write generation 1 of a new index into ``folder`` (which holds no manifest).

    ``batches`` yields ``(emb, offsets, ids or None, metadata or None)``: token vectors
    ``(T, dim)`` with int64 ``offsets`` ``(n + 1,)``, compressed with ``codec``; or, with
    ``compressed``, ``((codes, residuals, inv_norms), lengths, ids, metadata)`` copied as they are.
    """
    codec_entries = write_codec(folder, codec)
    gen = 1
    store = IdStore(folder / db_name(gen))
    writer = SegmentWriter(folder, seg_name(gen), codec, device)
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
    F._fsync_file(folder / db_name(gen))
    manifest = {
        "format": F.FORMAT_NAME, "format_version": F.FORMAT_VERSION, "generation": gen,
        "dim": codec.dim, "nbits": codec.nbits, "n_centroids": int(codec.centroids.shape[0]),
        "n_docs": entry["n_docs"], "n_tokens": entry["n_tokens"], "n_deleted": 0,
        "codec": codec_entries, "segments": [entry], "ids_db": db_name(gen),
        "written_by": f"colbert-engine {__version__}",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    F.write_manifest(folder, manifest)


def _begin_write(index) -> None:
    """Undo leftovers of a writer that crashed, remove files no manifest names."""
    index._check_open()
    index._ids.rollback_uncommitted(index.generation)
    collect_garbage(index.path, index._manifest)


def _commit(index, manifest: dict) -> None:
    manifest["generation"] = index.generation + 1
    manifest["written_by"] = f"colbert-engine {__version__}"
    manifest["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    F.write_manifest(index.path, manifest)
    F.crash_point("manifest_committed")
    old_manifest = index._manifest
    index._load()
    if old_manifest["ids_db"] != manifest["ids_db"]:
        collect_garbage(index.path, index._manifest)


def _check_dim(index, emb) -> None:
    if emb.shape[1] != index.codec.dim:
        raise ValueError(f"doc_emb: dim {emb.shape[1]} does not match the index's dim {index.codec.dim}")


def add(index, doc_emb, doc_offsets, ids, metadata) -> list:
    _begin_write(index)
    gen = index.generation + 1
    base = index.n_docs
    writer = SegmentWriter(index.path, seg_name(gen), index.codec, index.device)
    index._ids.begin()
    added = []
    try:
        for emb, offsets, batch_ids, batch_meta in batches_of(doc_emb, doc_offsets, ids, metadata):
            _check_dim(index, emb)
            n = offsets.numel() - 1
            first = base + writer.n_docs
            batch_ids = list(range(first, first + n)) if batch_ids is None else batch_ids
            index._ids.insert(first, batch_ids, batch_meta, gen)
            writer.add(emb, offsets)
            added.extend(batch_ids)
        entry = writer.finish(doc_base=base)
    except BaseException:
        writer.abort()
        index._ids.rollback()
        raise
    F.crash_point("add_segments_written")
    index._ids.commit()
    F.crash_point("add_ids_committed")
    manifest = dict(index._manifest)
    manifest["segments"] = index._manifest["segments"] + [entry]
    manifest["n_docs"] = base + entry["n_docs"]
    manifest["n_tokens"] = index.n_tokens + entry["n_tokens"]
    _commit(index, manifest)
    return added


def delete(index, ids) -> int:
    ids = id_list(ids, "ids")
    _begin_write(index)
    found = index._ids.lookup_live(ids, index.generation)
    if not found:
        return 0
    index._ids.begin()
    try:
        index._ids.mark_deleted(found.values(), index.generation + 1)
    except BaseException:
        index._ids.rollback()
        raise
    F.crash_point("delete_before_commit")
    index._ids.commit()
    F.crash_point("delete_ids_committed")
    manifest = dict(index._manifest)
    manifest["n_deleted"] = index._manifest["n_deleted"] + len(found)
    _commit(index, manifest)
    return len(found)


def compact(index) -> None:
    _begin_write(index)
    gen = index.generation + 1
    writer = SegmentWriter(index.path, seg_name(gen), index.codec, index.device)
    new_db = index.path / db_name(gen)
    new_db.unlink(missing_ok=True)
    try:
        for seg in index.segments:
            offsets = seg.doc_offsets.cpu()
            lengths = torch.diff(offsets)
            live = torch.ones(seg.n_docs, dtype=torch.bool) if index._live is None else \
                index._live[seg.doc_base:seg.doc_base + seg.n_docs].cpu()
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
            index._ids.copy_live_to(store, index.generation, gen)
        finally:
            store.close()
        F._fsync_file(new_db)
        F.fsync_dir(index.path)
    except BaseException:
        writer.abort()
        raise
    F.crash_point("compact_files_written")
    manifest = dict(index._manifest)
    manifest.update(segments=[entry], n_docs=entry["n_docs"], n_tokens=entry["n_tokens"], n_deleted=0,
                    ids_db=new_db.name)
    _commit(index, manifest)


def collect_garbage(folder: Path, manifest: dict) -> None:
    """Delete our own files that the committed manifest does not name (crashed writes,
    generations replaced by compaction)."""
    keep = set(manifest["codec"]) | {manifest["ids_db"], manifest["ids_db"] + "-journal",
                                     manifest["ids_db"] + "-wal", manifest["ids_db"] + "-shm"}
    for seg in manifest["segments"]:
        keep |= set(seg["files"])
    for name in os.listdir(folder):
        if name not in keep and name != F.MANIFEST and _OWN_FILE.match(name):
            (folder / name).unlink(missing_ok=True)
