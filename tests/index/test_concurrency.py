"""Many handles and processes on one folder, with real processes: two writers whose
handles go stale under each other, and readers during another process's compaction.
A few trials by default; 50 each with ``pytest -m slow tests/index``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import colbert_engine
from colbert_engine import Index

from . import workers

PACKAGE_PARENT = str(Path(colbert_engine.__file__).resolve().parents[1])
WORKERS = str(Path(workers.__file__).resolve())
from .conftest import TINY_DOCS as N_DOCS


def _trial_folders(base: Path, tmp_path: Path, n: int) -> list[Path]:
    folders = []
    for t in range(n):
        folder = tmp_path / f"trial{t:03d}"
        shutil.copytree(base, folder)
        folders.append(folder)
    return folders


def _run(roles: list[tuple[str, str]], folders: list[Path], timeout: float) -> dict:
    """Start one process per (mode, tag), all on the same trial folders; their JSON lines."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    procs = {tag: subprocess.Popen([sys.executable, WORKERS, mode, tag, str(len(roles))] + [str(f) for f in folders],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for mode, tag in roles}
    out = {}
    for tag, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            raise
        assert proc.returncode == 0, f"worker {tag} exited {proc.returncode}:\n{stderr[-3000:]}"
        out[tag] = [json.loads(line) for line in stdout.splitlines()]
        assert len(out[tag]) == len(folders)
    return out


def _live_ids(folder: Path) -> list:
    with Index.open(folder) as index:  # verify=True: every file's crc and the id database
        con = sqlite3.connect(index.path / index._manifest["ids_db"])
        rows = con.execute(f"SELECT id FROM docs WHERE added_gen <= {index.generation} AND "
                           f"(deleted_gen IS NULL OR deleted_gen > {index.generation})").fetchall()
        con.close()
        assert index.n_live == len(rows)
        return sorted(r[0] for r in rows)


def _two_writers(tiny_index, tmp_path, trials):
    folders = _trial_folders(tiny_index, tmp_path, trials)
    roles = [("writer", "w0"), ("writer", "w1")]
    out = _run(roles, folders, timeout=60 + 10 * trials)
    for t, folder in enumerate(folders):
        expected = {f"doc-{i}" for i in range(N_DOCS)}
        for _, tag in roles:
            report = out[tag][t]
            assert report["deleted"] == 1
            expected |= set(report["added"])
            expected.discard(workers.own_doc(tag))
        assert _live_ids(folder) == sorted(expected), f"trial {t}: committed writes lost"


def _reader_during_compact(tiny_index, tmp_path, trials):
    folders = _trial_folders(tiny_index, tmp_path, trials)
    out = _run([("reader", "r0"), ("compactor", "c0")], folders, timeout=60 + 10 * trials)
    for t, folder in enumerate(folders):
        report = out["r0"][t]
        assert report["rounds"] >= 1
        assert not {"doc-0", "doc-1"} & set(report["refreshed_ids"])  # refresh() sees the compaction
        assert _live_ids(folder) == sorted({f"doc-{i}" for i in range(2, N_DOCS)} | {"late-0", "late-1", "late-2"})


def test_two_writer_processes_lose_nothing(tiny_index, tmp_path):
    _two_writers(tiny_index, tmp_path, trials=3)


def test_reader_process_during_compaction(tiny_index, tmp_path):
    _reader_during_compact(tiny_index, tmp_path, trials=3)


@pytest.mark.slow
def test_two_writer_processes_lose_nothing_50_trials(tiny_index, tmp_path, long_run):
    _two_writers(tiny_index, tmp_path, trials=50)


@pytest.mark.slow
def test_reader_process_during_compaction_50_trials(tiny_index, tmp_path, long_run):
    _reader_during_compact(tiny_index, tmp_path, trials=50)


def _stale_handles(tiny_index, tmp_path, trials):
    """Three handles on one folder, each written through in random order (add, delete,
    compact), every handle stale after the others' commits: the result is exactly the
    sequence of all writes, whichever handle made them."""
    import random

    rng = random.Random(11)
    for t in range(trials):
        folder = tmp_path / f"stale{t:03d}"
        shutil.copytree(tiny_index, folder)
        handles = [Index.open(folder) for _ in range(3)]
        expected = {f"doc-{i}" for i in range(N_DOCS)}
        for step in range(6):
            index = rng.choice(handles)
            op = rng.choice(("add", "add", "delete", "compact"))
            if op == "add":
                ids = [f"t{t}-s{step}-{i}" for i in range(3)]
                index.add(*workers.new_docs(t * 10 + step), ids=ids)
                expected |= set(ids)
            elif op == "delete":
                victim = rng.choice(sorted(expected))
                assert index.delete([victim]) == 1
                expected.discard(victim)
            else:
                index.compact()
        for index in handles:
            index.close()
        assert _live_ids(folder) == sorted(expected), f"trial {t}: a stale handle lost or revived documents"


def test_stale_handles_lose_nothing(tiny_index, tmp_path):
    _stale_handles(tiny_index, tmp_path, trials=4)


@pytest.mark.slow
def test_stale_handles_lose_nothing_50_trials(tiny_index, tmp_path, long_run):
    _stale_handles(tiny_index, tmp_path, trials=50)
