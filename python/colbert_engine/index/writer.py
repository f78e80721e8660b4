"""The write side of an index folder: a new index's first generation (build, imports) and
the add / delete / compact generations of an open one. Crash-safety rules: FORMAT.md."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Iterable

import torch

from colbert_engine._version import __version__
from colbert_engine.index import format as F
from colbert_engine.index.batches import batches_of, id_list
from colbert_engine.index.codec import BuildClock, Codec
from colbert_engine.index.codec_files import write_codec
from colbert_engine.index.ids import IdStore
from colbert_engine.index.memory import release_freed_memory
from colbert_engine.index.segment import SegmentWriter

# The files this package writes (and their temporaries); garbage collection never touches
# anything else in the folder (a user's notes.tmp used to vanish on build and delete).
_OWN_FILE = re.compile(r"^(?:seg(?P<seg_gen>\d{6,})\.(?:codes|residuals|inv_norms|doc_offsets|ivf|ivf_offsets)\.npy"
                       r"|ids\.(?P<db_gen>\d{6,})\.sqlite(?:-journal|-wal|-shm)?"
                       r"|codec\.(?:centroids|bucket_cutoffs|bucket_weights|residual_codebook)\.npy"
                       r"|manifest\.json)(?P<tmp>\.tmp)?$"
                       r"|^(?P<spill>build\.spill\.(?:vectors|docs))$")  # spill.SPILL_NAMES
LOCK_FILE = "writer.lock"
# How long a write waits for another writer's lock by default (seconds).
DEFAULT_LOCK_TIMEOUT_S = 60.0
_LOCK_POLL_S = 0.02


class IndexLockedError(TimeoutError):
    """Another writer holds the folder's lock (one writer per folder)."""


@contextlib.contextmanager
def writer_lock(folder: Path, timeout: float):
    """Hold the folder's advisory writer lock (``fcntl.flock`` on ``writer.lock``) for the
    duration of one write. Waits up to ``timeout`` seconds (0: fail at once), then raises
    :class:`IndexLockedError` naming the folder and the holder's pid. The lock dies with
    its process (kill -9 included), so a crashed writer never leaves the folder locked.
    Readers never take it."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise F.named_os_error(path, exc) from exc
    try:
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    raise IndexLockedError(f"{folder}: another writer (pid {holder}) is writing to this index; "
                                           f"waited {timeout:g} s for its lock ({path})") from None
                time.sleep(_LOCK_POLL_S)
        with contextlib.suppress(OSError):  # the pid is informational only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def seg_name(gen: int) -> str:
    return f"seg{gen:06d}"


def db_name(gen: int) -> str:
    return f"ids.{gen:06d}.sqlite"


def remove_leftovers(folder: Path) -> None:
    """Before a first generation (lock held, no manifest): remove what a build that crashed
    before its manifest left (its files, temporaries and the spill of a streamed build)."""
    for leftover in os.listdir(folder):
        if _OWN_FILE.match(leftover):
            (folder / leftover).unlink(missing_ok=True)


def write_index(folder: Path, codec: Codec, batches: Iterable, device: torch.device,
                compressed: bool = False, clock: BuildClock | None = None) -> None:
    """Write generation 1 of a new index into ``folder`` (which holds no manifest).

    ``batches`` yields ``(emb, offsets, ids or None, metadata or None)``: token vectors
    ``(T, dim)`` with int64 ``offsets`` ``(n + 1,)``, compressed with ``codec``; or, with
    ``compressed``, ``((codes, residuals, inv_norms), lengths, ids, metadata)`` copied as they are.
    ``clock``: the build's stage timer; its split is recorded in the manifest (``build_seconds``).
    """
    codec_entries = write_codec(folder, codec)
    gen = 1
    store = IdStore(folder / db_name(gen), create=True)
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
        emb = None  # the last batch read back from a spill
        release_freed_memory()  # before the IVF's temporaries
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
        "format": F.FORMAT_NAME, "format_version": F.format_version_for(codec.bucket_layout), "generation": gen,
        "dim": codec.dim, "nbits": codec.nbits, "n_centroids": int(codec.centroids.shape[0]),
        "n_docs": entry["n_docs"], "n_tokens": entry["n_tokens"], "n_deleted": 0,
        "codec": codec_entries, "bucket_layout": codec.bucket_layout, "segments": [entry], "ids_db": db_name(gen),
        "written_by": f"colbert-engine {__version__}",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if clock is not None:
        manifest["build_seconds"] = clock.finish(codec.compress_seconds)
    F.write_manifest(folder, manifest)


@contextlib.contextmanager
def _writing(index):
    """One write through ``index``: take the folder's lock, move the handle to the current
    generation (a write through a handle opened before another handle's commit then builds
    on that commit, never rolls it back), undo what a crashed writer left, remove garbage."""
    index._check_open()
    with writer_lock(index.path, index.lock_timeout):
        index.refresh()
        index._ids.rollback_uncommitted(index.generation)
        collect_garbage(index.path, index._manifest)
        yield


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


def add(index, doc_emb, doc_offsets, ids, metadata) -> list:
    with _writing(index):
        return _add(index, doc_emb, doc_offsets, ids, metadata)


def delete(index, ids) -> int:
    ids = id_list(ids, "ids")
    with _writing(index):
        return _delete(index, ids)


def compact(index) -> None:
    with _writing(index):
        _compact(index)


def _check_dim(index, emb) -> None:
    if emb.shape[1] != index.codec.dim:
        raise ValueError(f"doc_emb: dim {emb.shape[1]} does not match the index's dim {index.codec.dim}")


def _add(index, doc_emb, doc_offsets, ids, metadata) -> list:
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


def _delete(index, ids: list) -> int:
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


def _compact(index) -> None:
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
        store = IdStore(new_db, create=True)
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
    """With the lock held: delete this package's files that the current manifest does not
    name and that belong to older generations (replaced by compaction, or left by a writer
    that crashed), and its temporaries. Nothing else in the folder is touched."""
    keep = set(manifest["codec"]) | {manifest["ids_db"], manifest["ids_db"] + "-journal",
                                     manifest["ids_db"] + "-wal", manifest["ids_db"] + "-shm", F.MANIFEST}
    for seg in manifest["segments"]:
        keep |= set(seg["files"])
    for name in os.listdir(folder):
        match = _OWN_FILE.match(name)
        if not match or name in keep:
            continue
        gen = match["seg_gen"] or match["db_gen"]
        if match["tmp"] or match["spill"] or (gen is not None and int(gen) < manifest["generation"]):
            (folder / name).unlink(missing_ok=True)
