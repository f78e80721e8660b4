"""Reading a document collection from disk: JSONL, TSV, or a folder of ``.txt`` files.

Every record has a user id (kept as a string), its text and optional metadata (a JSON
object). A malformed record is never dropped silently: by default it raises
:class:`InputError` naming the file and line; with ``skip_bad=True`` it is skipped and
counted in a :class:`BadRecords` report that the caller prints.

Formats (chosen by the path):

- ``*.jsonl`` / ``*.ndjson`` / ``*.json``: one JSON object per line with ``"id"`` (string
  or integer) and ``"text"`` (non-empty string); an optional ``"metadata"`` object; every
  other field is added to the metadata. Blank lines are ignored.
- ``*.tsv`` / ``*.tab``: ``id<TAB>text`` per line; a first line ``id<TAB>text`` is a header.
- a folder: every ``*.txt`` file in it (sorted by name, not recursive), id = file stem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TSV_SUFFIXES = (".tsv", ".tab")


class InputError(ValueError):
    """A collection file that cannot be read as documented; the message names file and line."""


@dataclass
class Record:
    id: str
    text: str
    metadata: dict | None
    where: str  # "file:line" (or the file for a folder of .txt), for messages


@dataclass
class BadRecords:
    """What ``skip_bad=True`` skipped: a count and the first few reasons."""

    count: int = 0
    examples: list = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")


def read_records(path, *, skip_bad: bool = False, bad: BadRecords | None = None,
                 seen_ids: set | None = None) -> Iterator[Record]:
    """Yields the records of ``path`` in file order.

    Args:
        path: a ``.jsonl``/``.tsv`` file or a folder of ``.txt`` files.
        skip_bad: skip malformed records (counted in ``bad``) instead of raising.
        bad: where skipped records are counted (required with ``skip_bad``).
        seen_ids: ids already present (for example in an index being extended); a record
            repeating one of them, or an earlier record of this input, is malformed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: a malformed record (without ``skip_bad``) or an unknown format.
    """
    path = Path(path)
    if skip_bad and bad is None:
        raise ValueError("bad: required with skip_bad=True")
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    seen: dict[str, str] = {}
    if seen_ids:
        seen.update({str(i): "the index" for i in seen_ids})
    if path.is_dir():
        raw = _read_folder(path)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        raw = _read_jsonl(path)
    elif path.suffix.lower() in TSV_SUFFIXES:
        raw = _read_tsv(path)
    else:
        raise InputError(f"{path}: unknown input format {path.suffix!r}; use .jsonl, .tsv or a folder of .txt files")
    for where, record, error in raw:
        if error is None and record.id in seen:
            error = f"duplicate id {record.id!r} (already in {seen[record.id]})"
        if error is not None:
            if not skip_bad:
                raise InputError(f"{where}: {error}")
            bad.add(where, error)
            continue
        seen[record.id] = where
        yield record


def _numbered_lines(path: Path):
    """(where "file:line", line number, line without its newline, error) for each line; a
    line that is not UTF-8 ends the file with an error naming it."""
    with open(path, encoding="utf-8", errors="strict") as f:
        line_no = 0
        while True:
            where = f"{path}:{line_no + 1}"
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                yield where, line_no + 1, None, f"not UTF-8 ({e.reason})"
                return
            if not line:
                return
            line_no += 1
            yield where, line_no, line.rstrip("\r\n"), None


def _read_jsonl(path: Path):
    for where, _, line, error in _numbered_lines(path):
        if error is not None:
            yield where, None, error
            return
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield where, None, f"not valid JSON ({e.msg} at column {e.colno})"
            continue
        if not isinstance(obj, dict):
            yield where, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        record, error = _record_from_object(obj, where)
        yield where, record, error


def _record_from_object(obj: dict, where: str):
    doc_id = obj.get("id")
    if doc_id is None:
        return None, 'missing "id"'
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        return None, f'"id" must be a non-empty string or an integer, got {doc_id!r}'
    text = obj.get("text")
    if not isinstance(text, str):
        return None, f'"text" must be a string, got {type(text).__name__}' if "text" in obj else 'missing "text"'
    if not text.strip():
        return None, '"text" is empty'
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return None, f'"metadata" must be a JSON object, got {type(metadata).__name__}'
    metadata = dict(metadata or {})
    for key, value in obj.items():
        if key in ("id", "text", "metadata"):
            continue
        if key in metadata:
            return None, f'field {key!r} is both a top-level field and in "metadata"'
        metadata[key] = value
    return Record(str(doc_id), text, metadata or None, where), None


def _read_tsv(path: Path):
    for where, line_no, line, error in _numbered_lines(path):
        if error is not None:
            yield where, None, error
            return
        if not line.strip():
            continue
        if line_no == 1 and line.lower() == "id\ttext":
            continue
        doc_id, tab, text = line.partition("\t")
        if not tab:
            yield where, None, "expected id<TAB>text, found no tab"
        elif not doc_id.strip():
            yield where, None, "empty id"
        elif not text.strip():
            yield where, None, "empty text"
        else:
            yield where, Record(doc_id, text, None, where), None


def _read_folder(path: Path):
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
    if not files:
        yield str(path), None, "no .txt files in this folder"
        return
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            yield str(file), None, f"not UTF-8 ({e.reason})"
            continue
        if not text.strip():
            yield str(file), None, "empty file"
            continue
        yield str(file), Record(file.stem, text, None, str(file)), None
