"""Helpers shared by the sharded-index tests (a module, not conftest: the test folders'
conftest files would clash under one module name)."""

from __future__ import annotations

import json
from pathlib import Path


def doc_ids(n: int) -> list:
    return [f"doc-{i}" for i in range(n)]


def doc_metadata(n: int) -> list:
    return [{"lang": "de" if i % 3 == 0 else "en", "n": i} for i in range(n)]


def same_files(a: Path, b: Path, ignore: tuple = ()) -> list:
    """Relative paths whose bytes differ between two index folders (manifests compared
    without their write time, build timings and checksum; the writer lock file, which holds
    the last writer's pid, and files named in ``ignore`` skipped)."""
    ignore = tuple(ignore) + ("writer.lock",)
    differ = []
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ignore)
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name not in ignore)
    if files_a != files_b:
        return [f"file lists differ: {set(files_a) ^ set(files_b)}"]
    for rel in files_a:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.suffix == ".json":
            x, y = json.loads(x), json.loads(y)
            for body in (x, y):
                for key in ("written_at", "checksum", "written_by", "build_seconds"):
                    body.pop(key, None)
        if x != y:
            differ.append(str(rel))
    return differ
