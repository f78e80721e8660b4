"""Fuzzed index folders: random byte flips, word overwrites and truncations of every file
type, opened and searched in worker processes with and without verify. Asserts "a clean
error (ValueError/TypeError/OSError) or correct results, never a crash": a case that kills
its worker (SIGSEGV, abort) fails the test. A short run by default, a long one under
``-m slow``."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import colbert_engine
from colbert_engine import Index
from colbert_engine.index import format as F

from . import workers

PACKAGE_PARENT = str(Path(colbert_engine.__file__).resolve().parents[1])
WORKERS = str(Path(workers.__file__).resolve())
MUTATIONS = ("flip", "word", "truncate", "empty")


def _int_fields(node, trail=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _int_fields(value, trail + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _int_fields(value, trail + (i,))
    elif isinstance(node, int) and not isinstance(node, bool) and trail[-1] != "checksum":
        yield trail


def _edit_manifest_field(path: Path, rng: random.Random) -> str:
    """A crafted manifest: one integer field changed, the checksum recomputed (so only the
    manifest validation and the files' real sizes stand in the way)."""
    body = json.loads(path.read_text())
    trail = rng.choice(list(_int_fields(body)))
    node = body
    for key in trail[:-1]:
        node = node[key]
    value = node[trail[-1]]
    node[trail[-1]] = rng.choice([0, -1, value + 1, value - 1, 2 ** 31, 2 ** 40, rng.randrange(1 << 20)])
    body.pop("checksum")
    F.write_manifest(path.parent, body)
    return "field " + "/".join(map(str, trail))


def _mutate(path: Path, kind: str, rng: random.Random) -> str:
    if kind == "word" and path.name == F.MANIFEST:
        return _edit_manifest_field(path, rng)
    data = bytearray(path.read_bytes())
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "word":  # an aligned 4- or 8-byte value overwritten: out-of-range ids and offsets
        width = rng.choice((4, 8))
        at = rng.randrange(0, max(1, len(data) - width)) // width * width
        data[at:at + width] = rng.getrandbits(8 * width).to_bytes(width, "little")
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    return kind


def _expected(folder: Path, queries) -> list:
    with Index.open(folder) as index:
        got = [index.search(queries, k=5), index.search(queries, k=5, filter=workers.FILTER),
               index.search(queries, k=5, filter=["doc-1", "doc-2", "doc-3"]), index.metadata(["doc-3"])]
    return json.loads(json.dumps(got))


def _fuzz(tiny_index: Path, tmp_path: Path, n_cases: int, seed: int) -> None:
    rng = random.Random(seed)
    base = tmp_path / "base"  # two segments and tombstones: every field of the format in use
    shutil.copytree(tiny_index, base)
    with Index.open(base) as index:
        index.add(*workers.new_docs(3, n=5), ids=[f"extra-{i}" for i in range(5)])
        index.delete(["doc-4", "extra-1"])
    files = sorted(os.listdir(base))
    files = [f for f in files if f.endswith((".npy", ".sqlite", ".json"))]
    queries = workers.new_docs(7, n=2)[0].reshape(2, 4, 16)
    cases = []
    for i in range(n_cases):
        folder = tmp_path / f"case{i:04d}"
        shutil.copytree(base, folder)
        target, kind = files[i % len(files)], MUTATIONS[(i // len(files)) % len(MUTATIONS)]
        if i % 8 == 7:  # every eighth case a crafted manifest (valid checksum)
            target, kind = F.MANIFEST, "word"
        kind = _mutate(folder / target, kind, rng)
        cases.append({"id": i, "folder": str(folder), "verify": bool(i % 2), "file": target, "kind": kind})
    spec = {"queries": queries.tolist(), "expected": _expected(base, queries), "cases": cases}
    results, crashes, first = {}, [], 0
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    while first < n_cases:
        spec["first"] = first
        spec_file = tmp_path / "cases.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, WORKERS, "probe", str(spec_file)], capture_output=True, text=True,
                              env=env, timeout=120 + 2 * n_cases)
        started = None
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            if "start" in record:
                started = record["start"]
            else:
                results[record["result"]] = record
                started = None
        if proc.returncode != 0:  # the worker died inside case `started`
            assert started is not None, f"probe worker failed outside a case:\n{proc.stderr[-2000:]}"
            crashes.append((cases[started], proc.returncode, proc.stderr[-500:]))
            first = started + 1
        else:
            first = n_cases
    assert not crashes, f"{len(crashes)} fuzzed indexes crashed the process: {crashes[:5]}"
    bad = [(cases[i], r) for i, r in results.items() if r["status"] == "bad-error"]
    assert not bad, f"{len(bad)} cases raised something other than ValueError/TypeError/OSError: {bad[:5]}"
    # With verify, every array and manifest change is caught (crc32) or harmless. The SQLite
    # file is updated in place and has no checksum: a changed id or metadata byte that keeps
    # the file well-formed gives other answers, which quick_check cannot see.
    wrong = [(cases[i], r) for i, r in results.items() if r["status"] == "wrong" and cases[i]["verify"]
             and not cases[i]["file"].endswith(".sqlite")]
    assert not wrong, f"verify=True opened {len(wrong)} corrupted indexes and answered wrongly: {wrong[:5]}"
    assert len(results) + len(crashes) == n_cases
    counts = {}
    for i, r in results.items():
        key = (cases[i]["verify"], r["status"])
        counts[key] = counts.get(key, 0) + 1
    print(f"fuzz: {n_cases} cases, (verify, outcome) counts {sorted(counts.items())}")


def test_fuzzed_files_never_crash(tiny_index, tmp_path):
    _fuzz(tiny_index, tmp_path, n_cases=88, seed=1)


@pytest.mark.slow
def test_fuzzed_files_never_crash_long(tiny_index, tmp_path, long_run):
    _fuzz(tiny_index, tmp_path, n_cases=440, seed=2)
