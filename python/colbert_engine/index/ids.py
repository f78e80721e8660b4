"""External ids and metadata: a SQLite table beside the arrays.

One row per internal document: ``doc_id`` (internal int32, dense, never reused within a
database), ``id`` (the user's id: SQLite INTEGER or TEXT), ``metadata`` (JSON text or
NULL), ``added_gen`` (manifest generation that committed the row) and ``deleted_gen``
(generation that deleted it, NULL while live).

Consistency with the manifest (the commit point): a writer commits its SQLite
transaction *before* writing the manifest of generation G+1, tagging rows with G+1. A
reader at generation G sees a row only if ``added_gen <= G`` and it is not deleted at G,
so rows of a write that crashed before its manifest are invisible, and the next writer
removes them (:meth:`IdStore.rollback_uncommitted`) before doing anything else.
"""

from __future__ import annotations

import errno
import functools
import json
import reprlib
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

# A user filter runs at most this long (a recursive CTE never ends; search hung), and no
# string or blob it builds may exceed FILTER_MAX_BYTES (randomblob(1e9) allocated 1 GB).
FILTER_TIMEOUT_S = 30.0
FILTER_MAX_BYTES = 256 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    doc_id INTEGER PRIMARY KEY,
    id NOT NULL,  -- no declared type: BLOB affinity keeps ints as ints and '123' as text
    metadata TEXT,
    added_gen INTEGER NOT NULL,
    deleted_gen INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS docs_live_id ON docs(id) WHERE deleted_gen IS NULL;
"""

_LOOKUP_CHUNK = 900  # bound parameters per IN (...) query


def _rows_in(conn, select: str, column: str, values: list, where: str = "1"):
    """Rows of ``SELECT {select} FROM docs WHERE {column} IN (values) AND {where}``, querying
    in chunks of _LOOKUP_CHUNK bound parameters (SQLite's limit on variables per statement)."""
    for start in range(0, len(values), _LOOKUP_CHUNK):
        part = values[start:start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(part))
        yield from conn.execute(f"SELECT {select} FROM docs WHERE {column} IN ({marks}) AND {where}", part)


def _visible(gen: int) -> str:
    return f"added_gen <= {int(gen)} AND (deleted_gen IS NULL OR deleted_gen > {int(gen)})"


_INT64 = (-(1 << 63), (1 << 63) - 1)  # SQLite INTEGER
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def short_repr(value) -> str:
    """repr for error messages, bounded in length and depth (the plain repr of a list nested
    1000 deep raised RecursionError instead of the intended error)."""
    return _REPR.repr(value)


def normalize_id(value, name: str = "ids"):
    """User id -> int (64-bit) or str (valid Unicode); anything else TypeError, an int
    SQLite cannot store or a str with lone surrogates ValueError."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: booleans are not ids, got {value!r}")
    if isinstance(value, (int, np.integer)) or \
            (isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point()):
        value = int(value)
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{name}: integer id {value} does not fit in 64 bits (SQLite INTEGER)")
        return value
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{name}: id {short_repr(value)} is not valid Unicode (lone surrogate)") from None
        return value
    raise TypeError(f"{name}: each id must be an int or a str, got {type(value).__name__} {short_repr(value)}")


def _metadata_json(value, ext) -> str:
    """Strict JSON: NaN/inf would be stored as the non-JSON tokens NaN/Infinity, and SQLite's
    json_extract then fails with "malformed JSON" on every filter over the whole index."""
    try:
        return json.dumps(value, allow_nan=False)
    except RecursionError:
        raise ValueError(f"metadata: the metadata of id {short_repr(ext)} is nested too deeply to store") from None
    except UnicodeEncodeError:
        raise ValueError(f"metadata: the metadata of id {short_repr(ext)} holds invalid Unicode") from None
    except ValueError:
        raise ValueError(f"metadata: the metadata of id {short_repr(ext)} holds NaN or infinity, which JSON cannot store") from None
    except TypeError as err:
        raise TypeError(f"metadata: the metadata of id {short_repr(ext)} is not JSON serialisable: {err}") from None


def _named_error(path: Path, exc: sqlite3.Error) -> Exception:
    """A sqlite3 error as a ValueError naming the database file (an OSError for a full
    disk): a corrupt file used to surface as a bare sqlite3.DatabaseError."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        err = OSError(errno.ENOSPC, f"{path}: write failed ({exc})")
        err.filename = str(path)
        return err
    return ValueError(f"{path}: id database error ({type(exc).__name__}: {exc})")


def _sqlite_errors(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _named_error(self.path, exc) from exc
    return wrapper


class IdStore:
    """The SQLite database of one index generation range (see module docstring).

    Holds two connections for its lifetime: read-write for lookups and writes, read-only
    (``query_only``) for user filters. Both keep working on the file they opened even after
    a compaction in another process replaced and removed it.
    """

    @_sqlite_errors
    def __init__(self, path: Path, create: bool = False):
        self.path = Path(path)
        self.conn = self.ro = None
        mode = "rwc" if create else "rw"  # opening must never create a missing database
        self.conn = sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA synchronous=FULL")
        if create:
            self.conn.executescript(SCHEMA)
        else:
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(docs)")}
            if not {"doc_id", "id", "metadata", "added_gen", "deleted_gen"} <= columns:
                self.conn.close()
                raise ValueError(f"{self.path}: not an id database of this format (no docs table)")
        self.ro = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                  check_same_thread=False)
        self.ro.execute("PRAGMA query_only = ON")
        self.ro.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, FILTER_MAX_BYTES)

    def close(self) -> None:
        for conn in (self.conn, self.ro):
            if conn is not None:
                conn.close()

    @_sqlite_errors
    def check(self, gen: int, n_docs: int, full: bool) -> None:
        """The rows of generation ``gen`` span doc ids ``0..n_docs-1`` (two primary-key
        lookups: doc ids grow with the generation that added them); with ``full`` also that
        every one of them is there (one scan) and SQLite's ``PRAGMA quick_check``."""
        if full:
            result = self.conn.execute("PRAGMA quick_check").fetchall()
            if result != [("ok",)]:
                raise ValueError(f"{self.path}: corrupt id database (quick_check: {result[:3]})")
            count = self.conn.execute("SELECT count(*) FROM docs WHERE added_gen <= ?", (gen,)).fetchone()[0]
        else:
            count = n_docs
        low = self.conn.execute("SELECT doc_id FROM docs WHERE added_gen <= ? ORDER BY doc_id LIMIT 1",
                                (gen,)).fetchone()
        high = self.conn.execute("SELECT doc_id FROM docs WHERE added_gen <= ? ORDER BY doc_id DESC LIMIT 1",
                                 (gen,)).fetchone()
        span = (low[0], high[0]) if low else None
        if count != n_docs or span != ((0, n_docs - 1) if n_docs else None):
            raise ValueError(f"{self.path}: documents {span} ({count}) at generation {gen}, the manifest says "
                             f"{n_docs}: the id database does not belong to this manifest")

    # -------------------------------------------------------------------- writes
    @_sqlite_errors
    def rollback_uncommitted(self, gen: int) -> None:
        """Undo what a writer that crashed before committing generation ``gen + 1`` left."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM docs WHERE added_gen > ?", (gen,))
            self.conn.execute("UPDATE docs SET deleted_gen = NULL WHERE deleted_gen > ?", (gen,))

    def insert(self, first_doc_id: int, ids: Sequence, metadata: Sequence | None, gen: int) -> None:
        """Insert rows for doc ids ``first_doc_id ..`` inside the open transaction."""
        rows = []
        for i, ext in enumerate(ids):
            meta = None if metadata is None or metadata[i] is None else _metadata_json(metadata[i], ext)
            rows.append((first_doc_id + i, normalize_id(ext), meta, gen))
        try:
            self.conn.executemany("INSERT INTO docs(doc_id, id, metadata, added_gen) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError:
            dup = self._first_duplicate([r[1] for r in rows])
            raise ValueError(f"ids: id {short_repr(dup)} is already in the index (ids must be unique among live "
                             "documents; delete it first to replace it)") from None
        except sqlite3.Error as exc:
            raise _named_error(self.path, exc) from exc

    @_sqlite_errors
    def _first_duplicate(self, ids: list):
        seen = set()
        for ext in ids:
            if ext in seen:
                return ext
            seen.add(ext)
        for ext in ids:
            if self.conn.execute("SELECT 1 FROM docs WHERE id = ? AND deleted_gen IS NULL", (ext,)).fetchone():
                return ext
        return None

    @_sqlite_errors
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    @_sqlite_errors
    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Best effort, on a failure path: an error here must not replace the one raised."""
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @_sqlite_errors
    def mark_deleted(self, doc_ids: Iterable[int], gen: int) -> None:
        self.conn.executemany("UPDATE docs SET deleted_gen = ? WHERE doc_id = ?", [(gen, int(d)) for d in doc_ids])

    # --------------------------------------------------------------------- reads
    @_sqlite_errors
    def lookup_live(self, ids: Iterable, gen: int, name: str = "ids") -> dict:
        """external id -> internal doc id, for those of ``ids`` (the argument ``name``) live at ``gen``."""
        ids = [normalize_id(i, name) for i in ids]
        return {ext: doc_id for doc_id, ext in _rows_in(self.conn, "doc_id, id", "id", ids, _visible(gen))}

    @_sqlite_errors
    def external_ids(self, doc_ids: Sequence[int]) -> dict:
        """internal doc id -> external id."""
        doc_ids = [int(d) for d in doc_ids]
        return dict(_rows_in(self.conn, "doc_id, id", "doc_id", doc_ids))

    @_sqlite_errors
    def deleted_doc_ids(self, gen: int) -> np.ndarray:
        rows = self.conn.execute("SELECT doc_id FROM docs WHERE added_gen <= ? AND deleted_gen <= ?", (gen, gen))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def where(self, clause: str, params: Sequence, gen: int) -> np.ndarray:
        """Internal doc ids of live documents matching a user SQL WHERE clause.

        The clause may use the columns ``id``, ``metadata`` (JSON text, e.g.
        ``json_extract(metadata, '$.lang') = ?``) and ``doc_id``; values are bound
        parameters. It runs on a read-only connection, so it cannot change the index.
        """
        if params is None:
            params = ()
        elif isinstance(params, (str, bytes)) or not isinstance(params, (dict, list, tuple)):
            # a bare "de" used to be bound letter by letter ("2 supplied"); None failed in tuple()
            # ("d0", "d2") is a (clause, params) pair, not two ids: say how to pass ids
            raise TypeError(f"filter: parameters must be a list/tuple (for ?) or a dict (for :name), "
                            f"got {type(params).__name__} {short_repr(params)} (a tuple (clause, params) is a SQL "
                            "filter; to filter by ids pass them as a list)")
        sql = f"SELECT doc_id FROM docs WHERE ({_visible(gen)}) AND ({clause})"
        deadline = time.monotonic() + FILTER_TIMEOUT_S
        # the connection opened with the store: a compaction elsewhere may have removed the file
        self.ro.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            rows = self.ro.execute(sql, params if isinstance(params, dict) else tuple(params))  # :name or ?
            return np.fromiter((r[0] for r in rows), dtype=np.int64)
        except sqlite3.Error as exc:
            if time.monotonic() > deadline:
                raise ValueError(f"filter: WHERE clause {clause!r:.200} ran longer than {FILTER_TIMEOUT_S:g} s "
                                 "and was interrupted") from None
            raise ValueError(f"filter: SQL error in WHERE clause {clause!r:.200} ({self.path}): {exc}") from None
        finally:
            self.ro.set_progress_handler(None, 0)

    @_sqlite_errors
    def metadata(self, doc_ids: Sequence[int]) -> dict:
        doc_ids = [int(d) for d in doc_ids]
        out = {}
        for doc_id, meta in _rows_in(self.conn, "doc_id, metadata", "doc_id", doc_ids):
            try:
                out[doc_id] = None if meta is None else json.loads(meta)
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"{self.path}: metadata of doc {doc_id} is not readable JSON ({exc})") from None
        return out

    @_sqlite_errors
    def copy_live_to(self, other: "IdStore", gen: int, new_gen: int) -> None:
        """Copy rows live at ``gen`` into ``other``, renumbered densely in doc_id order."""
        rows = self.conn.execute(f"SELECT id, metadata FROM docs WHERE {_visible(gen)} ORDER BY doc_id")
        other.conn.execute("BEGIN IMMEDIATE")
        other.conn.executemany(
            "INSERT INTO docs(doc_id, id, metadata, added_gen) VALUES (?, ?, ?, ?)",
            ((i, ext, meta, new_gen) for i, (ext, meta) in enumerate(rows)))
        other.conn.execute("COMMIT")
