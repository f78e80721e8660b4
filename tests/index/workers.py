"""Worker processes for the concurrency and fuzz tests (run as scripts, one real process
each): ``python workers.py MODE TAG N_WORKERS FOLDER...`` or ``python workers.py probe CASES``.

Workers of one trial meet at a file barrier in the trial's folder (``ready-<tag>`` files),
so their writes really overlap. Each prints one JSON line per trial (or per fuzz case).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

import torch

from colbert_engine import Index

FILTER = ("json_extract(metadata, '$.lang') = ?", ["de"])
BARRIER_TIMEOUT_S = 120.0


def barrier(folder: Path, tag: str, n_workers: int) -> None:
    (folder / f"ready-{tag}.barrier").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(folder.glob("ready-*.barrier"))) < n_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder}: barrier timed out")
        time.sleep(0.001)


def new_docs(seed: int, n: int = 3, dim: int = 16):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n * 4, dim, generator=gen), dim=1)
    return emb, torch.arange(0, n * 4 + 1, 4)


def own_doc(tag: str) -> str:
    """The base document writer ``w<k>`` deletes."""
    return f"doc-{10 + int(tag[1:])}"


def writer(tag: str, n_workers: int, folders: list[Path]) -> None:
    """Open a handle, meet the other writers, then add / delete / add through it (the
    handle is stale as soon as another writer commits)."""
    seed = zlib.crc32(tag.encode()) % 1000
    for t, folder in enumerate(folders):
        index = Index.open(folder)
        barrier(folder, tag, n_workers)
        added = index.add(*new_docs(t * 1000 + seed), ids=[f"{tag}-a{i}" for i in range(3)])
        deleted = index.delete([own_doc(tag)])  # each writer deletes its own base document
        added += index.add(*new_docs(t * 1000 + seed + 1), ids=[f"{tag}-b{i}" for i in range(3)])
        index.close()
        print(json.dumps({"trial": t, "added": added, "deleted": deleted}), flush=True)


def compactor(tag: str, n_workers: int, folders: list[Path]) -> None:
    for t, folder in enumerate(folders):
        index = Index.open(folder)
        barrier(folder, tag, n_workers)
        index.delete(["doc-0", "doc-1"])
        index.compact()
        index.add(*new_docs(t), ids=["late-0", "late-1", "late-2"])
        index.compact()
        index.close()
        (folder / "compacted.barrier").touch()
        print(json.dumps({"trial": t}), flush=True)


def reader(tag: str, n_workers: int, folders: list[Path]) -> None:
    """A long-lived handle searches (SQL filter, metadata) while another process compacts:
    it must keep answering from its generation; fresh opens must succeed at any moment."""
    queries = new_docs(7, n=2)[0].reshape(2, 4, 16)
    for t, folder in enumerate(folders):
        index = Index.open(folder)
        before = (index.search(queries, k=5, filter=FILTER), index.search(queries, k=5), index.metadata(["doc-3"]))
        barrier(folder, tag, n_workers)
        rounds = fresh_opens = 0
        while True:
            done = (folder / "compacted.barrier").exists()
            now = (index.search(queries, k=5, filter=FILTER), index.search(queries, k=5), index.metadata(["doc-3"]))
            if now != before:
                raise AssertionError(f"{folder}: a stale reader's results changed: {before} -> {now}")
            with Index.open(folder) as fresh:
                fresh.search(queries, k=5, filter=FILTER)
                fresh.metadata(["doc-3"])
            rounds, fresh_opens = rounds + 1, fresh_opens + 1
            if done:
                break
        index.refresh()
        refreshed = index.search(queries, k=5, filter=FILTER)
        index.close()
        print(json.dumps({"trial": t, "rounds": rounds, "fresh_opens": fresh_opens,
                          "refreshed_ids": sorted({i for row in refreshed for i, _ in row})}), flush=True)


def probe(cases_file: Path) -> None:
    """Open each (corrupted) folder and use it; report the outcome of every case. A case
    that kills the process leaves a "start" line without its "result"."""
    spec = json.loads(cases_file.read_text())
    queries = torch.tensor(spec["queries"])
    for case in spec["cases"][spec.get("first", 0):]:
        print(json.dumps({"start": case["id"]}), flush=True)
        outcome = {"result": case["id"]}
        try:
            with Index.open(case["folder"], verify=case["verify"]) as index:
                got = [index.search(queries, k=5), index.search(queries, k=5, filter=FILTER),
                       index.search(queries, k=5, filter=["doc-1", "doc-2", "doc-3"]), index.metadata(["doc-3"])]
            got = json.loads(json.dumps(got))
            outcome["status"] = "correct" if _same(got, spec["expected"]) else "wrong"
        except (ValueError, TypeError, OSError) as exc:
            outcome["status"] = "error"
            outcome["detail"] = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 - the fuzz test reports these as failures
            outcome["status"] = "bad-error"
            outcome["detail"] = f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps(outcome), flush=True)


def _same(got, expected) -> bool:
    """Same ids in the same order and scores equal to float rounding."""
    def flat(x):
        if isinstance(x, list):
            return [y for item in x for y in flat(item)]
        return [x]
    a, b = flat(got), flat(expected)
    return len(a) == len(b) and all(
        abs(x - y) <= 1e-4 * max(1.0, abs(y)) if isinstance(x, float) and isinstance(y, float) else x == y
        for x, y in zip(a, b))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "probe":
        probe(Path(sys.argv[2]))
    else:
        {"writer": writer, "compactor": compactor, "reader": reader}[mode](
            sys.argv[2], int(sys.argv[3]), [Path(p) for p in sys.argv[4:]])
