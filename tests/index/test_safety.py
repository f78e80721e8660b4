"""One regression test per defect of the index-folder reliability audit (issue 13): stale
handles, the writer lock, readers across compaction, manifest validation, bounds checks
without verify, named errors, the user's *.tmp files, and the API gaps."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import colbert_engine
from colbert_engine import Index
from colbert_engine.index import IndexLockedError
from colbert_engine.index import format as F
from colbert_engine.index import reader as reader_module
from colbert_engine.index.writer import LOCK_FILE, writer_lock

PACKAGE_PARENT = str(Path(colbert_engine.__file__).resolve().parents[1])
FILTER_DE = ("json_extract(metadata, '$.lang') = ?", ["de"])


def _docs(collection, n=3, first=0):
    t0, t1 = int(collection.doc_offsets[first]), int(collection.doc_offsets[first + n])
    return collection.doc_emb[t0:t1], collection.doc_offsets[first:first + n + 1] - t0


def _all_ids(path: Path) -> set:
    with Index.open(path) as index:
        con = sqlite3.connect(index.path / index._manifest["ids_db"])
        rows = con.execute(f"SELECT id FROM docs WHERE added_gen <= {index.generation} AND "
                           f"(deleted_gen IS NULL OR deleted_gen > {index.generation})").fetchall()
        con.close()
        assert len(rows) == index.n_live
        return {r[0] for r in rows}


def _edit_manifest(path: Path, edit) -> None:
    body = json.loads((path / F.MANIFEST).read_text())
    edit(body)
    body.pop("checksum")
    F.write_manifest(path, body)  # a valid checksum: only the content is wrong


# --------------------------------------------------------------- 1 and 2: stale handles
def test_1_write_through_a_handle_opened_before_another_compact(index_copy, collection):
    """a.delete after another handle's compact failed with "attempt to write a readonly
    database" and left only the codec files and the manifest."""
    a = Index.open(index_copy)
    with Index.open(index_copy) as b:
        b.delete(["doc-1"])
        b.compact()
    assert a.delete(["doc-5"]) == 1
    a.close()
    ids = _all_ids(index_copy)
    assert "doc-1" not in ids and "doc-5" not in ids and len(ids) == collection.n_docs - 2
    with Index.open(index_copy) as index:
        assert index.search(collection.queries[:2], k=5)


def test_2_a_stale_handle_never_undoes_another_handles_write(index_copy, collection):
    """b.add after a.add used to write its manifest on top of the generation it had
    opened: the A documents were gone; a deleted id came back after a stale add."""
    a, b = Index.open(index_copy), Index.open(index_copy)
    emb, offsets = _docs(collection)
    a.add(emb, offsets, ids=["A0", "A1", "A2"])
    b.add(emb, offsets, ids=["B0", "B1", "B2"])
    a.delete(["doc-7"])
    b.add(emb, offsets, ids=["C0", "C1", "C2"])
    a.close(), b.close()
    ids = _all_ids(index_copy)
    assert {"A0", "A2", "B0", "B2", "C0", "C2"} <= ids and "doc-7" not in ids
    assert len(ids) == collection.n_docs + 9 - 1


# --------------------------------------------------------------------- 3: the lock
def test_3_a_second_writer_is_locked_out_with_the_holders_pid(index_copy, collection):
    with writer_lock(index_copy, 0):
        with Index.open(index_copy, lock_timeout=0) as index:
            with pytest.raises(IndexLockedError, match=rf"{index_copy}.*pid {os.getpid()}"):
                index.delete(["doc-1"])
            with pytest.raises(IndexLockedError):
                index.compact()
            index.search(collection.queries[:1], k=3)  # readers never take the lock
    with Index.open(index_copy, lock_timeout=0) as index:  # released
        assert index.delete(["doc-1"]) == 1
    assert isinstance(IndexLockedError("x"), OSError)
    with pytest.raises(ValueError, match="lock_timeout"):
        Index.open(index_copy, lock_timeout=-1)


def test_3_the_lock_dies_with_a_killed_writer(index_copy):
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from colbert_engine.index.writer import writer_lock
        with writer_lock(Path(sys.argv[1]), 0):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(index_copy)], timeout=120,
                          env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT))
    assert proc.returncode == -9
    with Index.open(index_copy, lock_timeout=0) as index:
        assert index.delete(["doc-2"]) == 1


# ------------------------------------------------------------ 4: readers across compact
def test_4_a_long_lived_reader_survives_another_handles_compact(index_copy, collection):
    """SQL-filtered searches through a reader opened before another process's compact
    raised sqlite3.OperationalError: unable to open database file."""
    reader = Index.open(index_copy)
    before = reader.search(collection.queries[:3], k=5, filter=FILTER_DE)
    meta_before = reader.metadata(["doc-3"])
    with Index.open(index_copy) as writer:
        writer.delete(["doc-0"])
        writer.compact()
    assert not (index_copy / reader._manifest["ids_db"]).exists()  # garbage collected
    assert reader.search(collection.queries[:3], k=5, filter=FILTER_DE) == before  # its snapshot
    assert reader.metadata(["doc-3"]) == meta_before
    assert reader.refresh() is True and reader.refresh() is False
    after = reader.search(collection.queries[:3], k=5, filter=FILTER_DE)
    assert all("doc-0" not in [i for i, _ in row] for row in after)
    assert reader.n_docs == collection.n_docs - 1
    reader.close()


def test_4_an_open_racing_a_compaction_retries_at_the_new_generation(index_copy, collection, monkeypatch):
    """Index.open reading the manifest just before a commit removed its files raised a raw
    FileNotFoundError; it now re-reads the manifest and opens the newer generation."""
    stale = F.read_manifest(index_copy)
    with Index.open(index_copy) as writer:
        writer.delete(["doc-0"])
        writer.compact()
    real = reader_module.read_checked_manifest
    calls = []

    def first_stale(folder):
        calls.append(folder)
        return stale if len(calls) == 1 else real(folder)

    monkeypatch.setattr(reader_module, "read_checked_manifest", first_stale)
    with Index.open(index_copy) as index:
        assert index.generation == stale["generation"] + 2 and index.n_docs == collection.n_docs - 1


# ------------------------------------------------------------------ 5: manifests
@pytest.mark.parametrize("edit, match", [
    (lambda b: b["segments"][0].update(name="../other/seg000001"), "name"),
    (lambda b: b.update(ids_db="/tmp/foreign.sqlite"), "ids_db"),
    (lambda b: b.update(ids_db="../ids.000001.sqlite"), "ids_db"),
    (lambda b: b.update(segments=[]), "segments"),
    (lambda b: b.update(n_docs=10 ** 12), "n_docs"),
    (lambda b: b.update(n_deleted=-1), "n_deleted"),
    (lambda b: b["segments"][0].update(doc_base=5), "doc_base"),
    (lambda b: b["segments"][0]["files"]["seg000001.doc_offsets.npy"].update(shape=[10 ** 12 + 1]), "shape"),
    (lambda b: b["codec"].update({"../codec.centroids.npy": b["codec"].pop("codec.centroids.npy")}), "codec"),
    (lambda b: b.update(generation="2"), "generation"),
])
def test_5_manifests_are_validated_at_open(index_copy, tmp_path, edit, match):
    """Crafted names read and wrote files outside the folder; empty segments, a wrong
    doc_base or a huge n_docs opened (wrong results, a 1 TB allocation, raw KeyError)."""
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).close()
    before = foreign.read_bytes()
    _edit_manifest(index_copy, edit)
    for verify in (True, False):
        with pytest.raises(ValueError, match=rf"manifest.json: corrupt manifest .*{match}"):
            Index.open(index_copy, verify=verify)
    assert foreign.read_bytes() == before


def test_5_overlapping_segments_are_rejected(index_copy, collection):
    with Index.open(index_copy) as index:
        index.add(*_docs(collection), ids=["x0", "x1", "x2"])
    _edit_manifest(index_copy, lambda b: b["segments"][1].update(doc_base=0))
    with pytest.raises(ValueError, match="doc_base"):
        Index.open(index_copy, verify=False)


# ------------------------------------------------------- 6: bounds without verify
def _overwrite(path: Path, entry: dict, index: int, value) -> None:
    array = np.memmap(path, dtype=entry["dtype"], mode="r+", offset=entry["data_offset"],
                      shape=tuple(entry["shape"]))
    array[index] = value
    array.flush()
    del array


@pytest.mark.parametrize("array, index, value, match", [
    ("codes", 7, 1 << 20, "codes outside"),
    ("codes", 0, -3, "codes outside"),
    ("ivf", 4, 1 << 30, "doc ids outside"),
    ("doc_offsets", 3, 1 << 40, "offsets not monotone"),
    ("doc_offsets", -1, 5, "offsets not monotone"),
    ("ivf_offsets", 10, -1, "offsets not monotone"),
])
def test_6_verify_false_still_checks_what_the_kernels_index_with(index_copy, collection, array, index, value,
                                                                  match):
    """Out-of-range codes, ivf entries and offsets reached the C++ kernels with
    verify=False: SIGSEGV / "double free or corruption", or silently wrong results."""
    name = f"seg000001.{array}.npy"
    _overwrite(index_copy / name, F.read_manifest(index_copy)["segments"][0]["files"][name], index, value)
    with pytest.raises(ValueError, match=rf"{name}: .*{match}"):
        Index.open(index_copy, verify=False)


# ------------------------------------------------------------------ 7: named errors
def test_7_corrupt_or_empty_id_database_names_the_file(index_copy, collection):
    db = index_copy / "ids.000001.sqlite"
    data = bytearray(db.read_bytes())
    data[:16] = b"garbage garbage!"
    db.write_bytes(bytes(data))
    for verify in (True, False):
        with pytest.raises(ValueError, match="ids.000001.sqlite"):
            Index.open(index_copy, verify=verify)
    db.write_bytes(b"")  # a zero-length file passed verify=True, then failed at search
    for verify in (True, False):
        with pytest.raises(ValueError, match="ids.000001.sqlite: not an id database"):
            Index.open(index_copy, verify=verify)


def test_7_rows_missing_from_the_id_database_name_the_file(index_copy, collection):
    """A search returning a doc whose row was lost raised KeyError: 146."""
    con = sqlite3.connect(index_copy / "ids.000001.sqlite")
    con.execute("DELETE FROM docs WHERE doc_id % 2 = 0 AND doc_id > 0")
    con.commit(), con.close()
    with pytest.raises(ValueError, match="ids.000001.sqlite: documents .* at generation"):
        Index.open(index_copy, verify=True)
    with Index.open(index_copy, verify=False) as index:  # the cheap check sees the id range only
        with pytest.raises(ValueError, match="ids.000001.sqlite: no id stored for internal doc ids"):
            index.search(collection.queries, k=20)


def test_7_corrupt_npy_header_text_is_a_value_error(index_copy):
    """A header dict whose closing brace is gone raised tokenize.TokenError."""
    path = index_copy / "seg000001.ivf.npy"
    data = bytearray(path.read_bytes())
    end = data.index(b"}")
    data[end:end + 1] = b" "
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="seg000001.ivf.npy: not a readable .npy"):
        Index.open(index_copy, verify=False)


def test_7_disk_full_names_the_file_and_cleanup_never_hides_it(index_copy, collection, monkeypatch):
    """numpy's "6798 requested and 5088 written" named no file; at 0 bytes free the
    cleanup's OSError replaced the original one."""
    def full_disk(*args, **kwargs):
        raise OSError("6798 requested and 5088 written")

    def failing_cleanup(self, *args, **kwargs):
        raise OSError(errno.EIO, "cleanup failed too")

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    monkeypatch.setattr(Path, "unlink", failing_cleanup)
    with Index.open(index_copy) as index:
        with pytest.raises(OSError, match=r"seg000002\.doc_offsets\.npy\.tmp: write failed \(6798 requested"):
            index.add(*_docs(collection), ids=["f0", "f1", "f2"])
    monkeypatch.undo()
    with Index.open(index_copy) as index:
        assert index.n_docs == collection.n_docs
        assert index.add(*_docs(collection), ids=["f0", "f1", "f2"]) == ["f0", "f1", "f2"]


def test_7_sqlite_disk_full_is_an_os_error_naming_the_file():
    from colbert_engine.index.ids import _named_error

    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = sqlite3.SQLITE_FULL
    err = _named_error(Path("/x/ids.000001.sqlite"), exc)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and "ids.000001.sqlite" in str(err)


# --------------------------------------------------------------- 8: the user's files
def test_8_the_users_tmp_files_survive_every_write(tmp_path, collection):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "notes.tmp").write_text("mine")
    (folder / "draft.tmp").write_text("mine")
    emb, offsets = _docs(collection, n=40)
    with Index.build(folder, emb, offsets, ids=[f"d{i}" for i in range(40)]) as index:
        index.add(*_docs(collection, first=50), ids=["a0", "a1", "a2"])
        index.delete(["d1"])
        index.compact()
    assert (folder / "notes.tmp").read_text() == "mine" and (folder / "draft.tmp").read_text() == "mine"
    names = set(os.listdir(folder))
    assert not any(n.startswith("seg000001") or n.startswith("ids.000001") for n in names)  # old gens collected
    assert LOCK_FILE in names


# ------------------------------------------------------------------- 9: API gaps
def test_9_api_gaps_are_clear_errors(index_copy, collection):
    emb, offsets = _docs(collection)
    with Index.open(index_copy) as index:
        n_docs = index.n_docs
        with pytest.raises(TypeError, match="ids"):
            index.add(emb, offsets, ids="abc")  # stored ids 'a', 'b', 'c'
        with pytest.raises(TypeError, match="metadata"):
            index.add(emb, offsets, metadata="abc")
        with pytest.raises(TypeError, match="filter: .*pass them as a list"):
            index.search(collection.queries[:1], filter=("doc-0", "doc-2"))  # read as (clause, params)
        assert [i for i, _ in index.search(collection.queries[0], k=5, filter=["doc-0", "doc-2"])] \
            in (["doc-0", "doc-2"], ["doc-2", "doc-0"])
        with pytest.raises(ValueError, match="ids: integer id"):
            index.add(emb, offsets, ids=[2 ** 63, 1, 2])  # OverflowError
        with pytest.raises(ValueError, match="ids: integer id"):
            index.delete([2 ** 64])
        with pytest.raises(ValueError, match="ids: .*surrogate"):
            index.add(emb, offsets, ids=["ok", "\ud800", "x"])  # UnicodeEncodeError
        with pytest.raises(ValueError, match="ids: .*surrogate"):
            index.metadata(["\udfff"])
        nested = []
        for _ in range(100_000):
            nested = [nested]
        with pytest.raises(TypeError, match="ids"):
            index.add(emb, offsets, ids=[nested, 1, 2])  # RecursionError in the message's repr
        with pytest.raises(ValueError, match="metadata: .*nested too deeply"):
            index.add(emb, offsets, ids=["n0", "n1", "n2"], metadata=[nested, None, None])  # RecursionError
        with pytest.raises(TypeError, match="filter"):
            index.search(collection.queries[:1], filter=[nested])
        with pytest.raises(ValueError, match="queries: values too large"):
            index.search(collection.queries[:1] * 1e37)  # silently returned []
        assert index.n_docs == n_docs
        assert index.search(collection.queries[:1] * 1e3, k=3)  # large but representable is fine


def test_4_refresh_after_the_folder_was_rebuilt_in_place(tmp_path, collection):
    """The CLI builds beside the target and renames it into place: a long-lived handle's
    refresh() must then load the new codec and segments, not keep the old ones."""
    emb, offsets = _docs(collection, n=40)
    folder = tmp_path / "idx"
    reader = Index.build(folder, emb, offsets, ids=[f"old-{i}" for i in range(40)])
    Index.build(tmp_path / "next", *_docs(collection, n=30, first=100), ids=[f"new-{i}" for i in range(30)],
                seed=1).close()
    os.rename(folder, tmp_path / "gone")
    os.rename(tmp_path / "next", folder)
    assert reader.refresh() is True
    assert reader.n_docs == 30 and all(i.startswith("new-") for i, _ in reader.search(collection.queries[0], k=5))
    reader.close()
