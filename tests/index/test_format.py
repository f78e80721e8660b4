"""On-disk format: crash safety (kill -9 between durable steps), corrupt / truncated /
newer-version files give clear errors, the files are what FORMAT.md says."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import colbert_engine
from colbert_engine import Index
from colbert_engine.index import format as F

ROOT = Path(__file__).resolve().parents[2]
# The package this process imported (installed, or python/ with an in-place build).
PACKAGE_PARENT = str(Path(colbert_engine.__file__).resolve().parents[1])



def _write(index, action: str) -> None:
    """The write under test; also run by the writer subprocess (source shared below)."""
    if action == "add":
        from colbert_engine.testing import clustered_collection

        new = clustered_collection(n_docs=20, mean_doc_len=40, dim=64, n_queries=1, seed=9)
        index.add(new.doc_emb, new.doc_offsets, ids=[f"new-{i}" for i in range(20)])
    elif action == "delete":
        index.delete(["doc-0", "doc-3", "doc-9"])
    elif action == "compact":
        index.compact()


_WRITER = textwrap.dedent(inspect.getsource(_write)) + textwrap.dedent("""
    import sys
    from colbert_engine import Index
    _write(Index.open(sys.argv[1]), sys.argv[2])
    print("finished")
""")

CRASH_POINTS = {
    "add": ["add_segments_written", "add_ids_committed", "manifest_committed"],
    "delete": ["delete_ids_committed"],
    "compact": ["compact_files_written"],
}


def _run_writer(path: Path, action: str, crash_at: str | None):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    if crash_at:
        env["COLBERT_ENGINE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", _WRITER, str(path), action], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("action,crash_at", [(a, p) for a, points in CRASH_POINTS.items() for p in points])
def test_kill_during_write_leaves_a_working_index(index_copy, collection, action, crash_at):
    with Index.open(index_copy) as index:
        if action == "compact":
            index.delete(["doc-0", "doc-3", "doc-9"])
        before = index.search(collection.queries, k=10)
        generation, n_live = index.generation, index.n_live
    proc = _run_writer(index_copy, action, crash_at)
    assert proc.returncode == -9, proc.stderr  # SIGKILL, like a power cut
    with Index.open(index_copy) as index:
        if crash_at == "manifest_committed":  # killed after the commit point: the add is in
            assert index.generation == generation + 1 and index.n_docs == collection.n_docs + 20
        else:  # killed before it: the previous generation, intact
            assert index.generation == generation
            assert index.search(collection.queries, k=10) == before
            assert index.n_docs == collection.n_docs and index.n_live == n_live
    # and the next writer cleans up and succeeds
    if crash_at != "manifest_committed":
        with Index.open(index_copy) as index:
            _write(index, action)
    with Index.open(index_copy) as index:
        results = index.search(collection.queries, k=10, exact=True)
        if action != "add":
            assert not {"doc-0", "doc-3", "doc-9"} & {i for r in results for i, _ in r}
        assert not [p for p in os.listdir(index_copy) if p.endswith(".tmp")]


def test_kill_during_first_build_leaves_no_index_then_build_works(tmp_path, collection):
    script = textwrap.dedent("""
        import sys
        from colbert_engine import Index
        from colbert_engine.testing import clustered_collection
        data = clustered_collection(n_docs=50, mean_doc_len=20, dim=64, n_queries=1, seed=2)
        Index.build(sys.argv[1], data.doc_emb, data.doc_offsets)
    """)
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, COLBERT_ENGINE_CRASH_AT="manifest_tmp_written")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "i")], env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -9
    with pytest.raises(ValueError, match="no index manifest"):
        Index.open(tmp_path / "i")
    end = int(collection.doc_offsets[10])
    index = Index.build(tmp_path / "i", collection.doc_emb[:end], collection.doc_offsets[:11])
    assert index.n_docs == 10
    index.close()


def _manifest(path: Path) -> dict:
    return json.loads((path / F.MANIFEST).read_text())


def test_corrupt_manifest(index_copy):
    (index_copy / F.MANIFEST).write_text('{"format": "colbert-engine-index", "format_vers')
    with pytest.raises(ValueError, match=r"manifest.json: corrupt manifest"):
        Index.open(index_copy)


def test_manifest_edited_without_checksum(index_copy):
    body = _manifest(index_copy)
    body["n_docs"] += 1
    (index_copy / F.MANIFEST).write_text(json.dumps(body))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Index.open(index_copy)


def test_newer_format_version(index_copy):
    body = _manifest(index_copy)
    body["format_version"] = F.FORMAT_VERSION + 1
    F.write_manifest(index_copy, body)  # a valid manifest of a future version
    with pytest.raises(ValueError, match="newer than this colbert-engine reads"):
        Index.open(index_copy)


def test_not_an_index(tmp_path):
    with pytest.raises(ValueError, match="no index manifest"):
        Index.open(tmp_path)


def test_truncated_npy(index_copy):
    path = index_copy / "seg000001.residuals.npy"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(ValueError, match=r"seg000001.residuals.npy: size .* \(truncated"):
        Index.open(index_copy)


def test_corrupt_npy_data(index_copy):
    path = index_copy / "seg000001.codes.npy"
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01  # the last code moves by one, still a valid centroid id
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"seg000001.codes.npy: checksum mismatch"):
        Index.open(index_copy)
    Index.open(index_copy, verify=False).close()  # sizes, headers and bounds still fine


def test_corrupt_npy_header(index_copy):
    path = index_copy / "codec.centroids.npy"
    data = bytearray(path.read_bytes())
    data[0:6] = b"NOTNPY"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"codec.centroids.npy: not a readable .npy"):
        Index.open(index_copy, verify=False)


def test_missing_files(index_copy):
    os.remove(index_copy / "seg000001.ivf.npy")
    with pytest.raises(ValueError, match=r"seg000001.ivf.npy: missing"):
        Index.open(index_copy)


def test_id_database_from_another_generation(index_copy):
    body = _manifest(index_copy)
    body["n_deleted"] = 5
    F.write_manifest(index_copy, body)
    with pytest.raises(ValueError, match="does not belong to this manifest"):
        Index.open(index_copy)


def test_files_match_format_md(built_index):
    """Every file in a fresh index is one FORMAT.md documents, with the dtype it says."""
    doc = (ROOT / "python" / "colbert_engine" / "index" / "FORMAT.md").read_text()
    body = _manifest(built_index)
    for key in ("format", "format_version", "generation", "dim", "nbits", "n_centroids", "n_docs", "n_tokens",
                "n_deleted", "codec", "segments", "ids_db", "checksum"):
        assert f"`{key}`" in doc, key
    dtypes = {"codes": "<i4", "residuals": "|u1", "inv_norms": "<f2", "doc_offsets": "<i8", "ivf": "<i4",
              "ivf_offsets": "<i8"}
    for name, entry in body["segments"][0]["files"].items():
        array = name.split(".")[1]
        assert entry["dtype"] == dtypes[array] and f"`<seg>.{array}.npy`" in doc
        loaded = np.load(built_index / name, mmap_mode="r")
        assert loaded.dtype.str == entry["dtype"] and list(loaded.shape) == entry["shape"]
    for name in body["codec"]:
        assert f"`{name}`" in doc


def test_reads_the_committed_version_1_folder(tmp_path):
    """A small index written by format version 1 (tests/index/data/v1, with one deletion):
    later readers must open it and answer exactly as it did when written. The exact scores
    are the format check; the default and filtered lists are re-recorded only when the search
    algorithm changes (last: small allowed sets are scored exhaustively)."""
    import shutil

    data = ROOT / "tests" / "index" / "data"
    expected = json.loads((data / "v1_expected.json").read_text())
    shutil.copytree(data / "v1", tmp_path / "v1")
    with Index.open(tmp_path / "v1") as index:
        assert index.stats()["format_version"] == 1 and index.n_live == 19
        queries = np.asarray(expected["queries"], dtype=np.float32)
        as_lists = lambda results: [[list(x) for x in r] for r in results]  # noqa: E731
        exact = as_lists(index.search(queries, k=5, exact=True))
        for got, want in zip(exact, expected["exact"]):
            assert [i for i, _ in got] == [i for i, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)
        assert [[i for i, _ in r] for r in index.search(queries, k=5)] == \
            [[i for i, _ in r] for r in expected["default"]]
        filtered = index.search(queries, k=5, filter=("json_extract(metadata, '$.even') = ?", [1]))
        assert [[i for i, _ in r] for r in filtered] == [[i for i, _ in r] for r in expected["filtered"]]
        # 10 matching documents are fewer than stage 4's budget: scored exhaustively.
        exact_filtered = index.search(queries, k=5, exact=True, filter=("json_extract(metadata, '$.even') = ?", [1]))
        assert [[i for i, _ in r] for r in filtered] == [[i for i, _ in r] for r in exact_filtered]
