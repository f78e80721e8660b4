"""Streamed builds: the spill makes a stream's index equal to the packed build's, whatever
the batches; the spill never outlives the build (success, failure, kill)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from colbert_engine import Index
from colbert_engine.index import build as B
from colbert_engine.index.spill import SPILL_NAMES
from colbert_engine.testing import clustered_collection

REPO_PYTHON = str(Path(__file__).resolve().parents[2] / "python")


@pytest.fixture(scope="module")
def data():
    return clustered_collection(n_docs=400, mean_doc_len=30, dim=32, n_queries=4, seed=7)


def _small_sample(monkeypatch):
    """A sample far smaller than the collection (the default holds out 50k tokens, more
    than a test collection has), so that sampling the whole stream is what is tested."""
    monkeypatch.setattr(B, "HELDOUT_TOKENS", 400)
    return dict(n_centroids=64, max_points_per_centroid=8)


def _files(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text())
    return {"codec": manifest["codec"], "segments": [s["files"] for s in manifest["segments"]],
            "n_tokens": manifest["n_tokens"], "n_centroids": manifest["n_centroids"]}


def _no_spill(path: Path) -> bool:
    return not any((path / name).exists() for name in SPILL_NAMES)


def _uneven_batches(data, sizes, dtypes=(torch.float32,), with_docs=False):
    """The collection as batches of ``sizes`` documents (cycled), in ``dtypes`` (cycled)."""
    offsets, n = data.doc_offsets, data.doc_offsets.numel() - 1
    doc, i = 0, 0
    while doc < n:
        end = min(n, doc + sizes[i % len(sizes)])
        t0, t1 = int(offsets[doc]), int(offsets[end])
        batch = (data.doc_emb[t0:t1].to(dtypes[i % len(dtypes)]), offsets[doc:end + 1] - t0)
        if with_docs:
            batch += ([f"d{d}" for d in range(doc, end)], [{"n": d} for d in range(doc, end)])
        yield batch
        doc, i = end, i + 1


def test_streamed_equals_packed_beyond_the_first_buffer(tmp_path, data, monkeypatch):
    settings = _small_sample(monkeypatch)
    monkeypatch.setattr(B, "SPILL_READ_TOKENS", 700)  # spilled batches are read back in pieces
    n = data.doc_offsets.numel() - 1
    ids, meta = [f"d{d}" for d in range(n)], [{"n": d} for d in range(n)]
    packed = Index.build(tmp_path / "packed", data.doc_emb, data.doc_offsets, ids, meta, **settings)
    streamed = Index.build(tmp_path / "stream", _uneven_batches(data, [3, 50, 1, 17], with_docs=True), **settings)
    assert _files(packed.path) == _files(streamed.path)  # same codec, same arrays (crc32s)
    assert streamed.metadata(["d0", "d399"]) == packed.metadata(["d0", "d399"])
    assert streamed.search(data.queries, k=5) == packed.search(data.queries, k=5)
    assert _no_spill(streamed.path)
    assert streamed.stats()["build_s_spill"] >= 0
    # the first-tokens mode trains on the stream's head only: not the packed codec
    head = Index.build(tmp_path / "head", _uneven_batches(data, [20]), train_buffer_tokens=1500,
                       n_tokens_hint=int(data.doc_offsets[-1]), **settings)
    assert not torch.equal(head.codec.centroids, packed.codec.centroids)
    assert head.n_docs == n and _no_spill(head.path)
    for index in (packed, streamed, head):
        index.close()


def test_streamed_half_precision_and_mixed_dtypes(tmp_path, data, monkeypatch):
    settings = _small_sample(monkeypatch)
    half = data.doc_emb.half()
    packed = Index.build(tmp_path / "packed", half, data.doc_offsets, **settings)
    streamed = Index.build(tmp_path / "stream", _uneven_batches(data, [31], (torch.float16,)), **settings)
    assert _files(packed.path) == _files(streamed.path)
    # batches in several dtypes: the packed build of the same values in float32
    exact = Index.build(tmp_path / "exact", data.doc_emb.bfloat16().float(), data.doc_offsets, **settings)
    mixed = ((e.bfloat16() if i % 2 else e.bfloat16().float(), o) for i, (e, o) in enumerate(data.batches(40)))
    mixed = Index.build(tmp_path / "mixed", mixed, **settings)
    assert _files(exact.path) == _files(mixed.path)
    for index in (packed, streamed, exact, mixed):
        index.close()


def test_failed_stream_leaves_no_spill(tmp_path, data):
    def with_nan():
        for i, batch in enumerate(data.batches(50)):
            if i == 3:
                emb = batch[0].clone()
                emb[5, 2] = float("nan")
                batch = (emb, batch[1])
            yield batch

    with pytest.raises(ValueError, match="batch 3"):
        Index.build(tmp_path / "idx", with_nan())
    assert _no_spill(tmp_path / "idx") and not (tmp_path / "idx" / "manifest.json").exists()

    def broken():
        yield from data.batches(100)
        raise RuntimeError("the encoder died")

    with pytest.raises(RuntimeError, match="encoder died"):
        Index.build(tmp_path / "idx", broken())
    assert _no_spill(tmp_path / "idx")

    def other_dim():
        yield data.doc_emb[:30], torch.tensor([0, 30])
        yield torch.nn.functional.normalize(torch.randn(30, 64), dim=1), torch.tensor([0, 30])

    with pytest.raises(ValueError, match="batch 1 has dim 64"):
        Index.build(tmp_path / "idx", other_dim())
    assert _no_spill(tmp_path / "idx")
    # the folder is clean: the same build now succeeds
    with Index.build(tmp_path / "idx", data.batches(100)) as index:
        assert index.n_docs == data.doc_offsets.numel() - 1


def test_empty_stream_rejected(tmp_path):
    with pytest.raises(ValueError, match="doc_emb: the collection has no tokens"):
        Index.build(tmp_path / "a", iter([]))
    no_docs = [(torch.zeros(0, 32), torch.zeros(1, dtype=torch.int64))]
    with pytest.raises(ValueError, match="doc_emb: the collection has no tokens"):
        Index.build(tmp_path / "b", no_docs)
    assert _no_spill(tmp_path / "a") and _no_spill(tmp_path / "b")
    with pytest.raises(ValueError, match="train_buffer_tokens"):
        Index.build(tmp_path / "c", iter([]), train_buffer_tokens=0)


def test_killed_build_spill_is_collected(tmp_path, data):
    """A build killed mid-stream leaves its spill; the next build in the folder removes it,
    and an open index's next write removes one too. A user's files stay."""
    folder = tmp_path / "idx"
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {REPO_PYTHON!r})
        from colbert_engine import Index
        def stream():
            yield torch.nn.functional.normalize(torch.randn(500, 32), dim=1), torch.tensor([0, 200, 500])
            os._exit(17)  # killed mid-stream: no cleanup runs
        Index.build({str(folder)!r}, stream())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 17, done.stderr.decode()[-2000:]
    assert all((folder / name).exists() for name in SPILL_NAMES)
    assert (folder / SPILL_NAMES[0]).stat().st_size == 500 * 32 * 4
    (folder / "notes.tmp").write_text("mine")
    with Index.build(folder, data.batches(100)) as index:
        assert _no_spill(folder) and (folder / "notes.tmp").read_text() == "mine"
        # a spill in a built index (a build killed between its manifest and the cleanup)
        (folder / SPILL_NAMES[0]).write_bytes(b"\0" * 64)
        index.add(data.doc_emb[:10], torch.tensor([0, 10]))
        assert _no_spill(folder)


def test_spill_rows_gather_in_any_order(tmp_path):
    """The spill's row view returns the rows of any index tensor (repeats, any order,
    across batches of different dtypes) as float32, as the packed tensor would."""
    from colbert_engine.index.spill import StreamSpill

    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 16, generator=gen).to(dt) for n, dt in
             ((5, torch.float32), (0, torch.float32), (9, torch.float16), (1, torch.bfloat16), (7, torch.float32))]
    spill = StreamSpill(tmp_path)
    try:
        for i, p in enumerate(parts):
            spill.append(i, p, torch.tensor([0, p.shape[0]]) if p.shape[0] else torch.tensor([0]), None, None)
        whole = torch.cat([p.float() for p in parts])
        rows = spill.rows()
        assert rows.shape == whole.shape
        index = torch.tensor([21, 0, 3, 3, 14, 5, 13, 20, 6, 21, 4])
        assert torch.equal(rows[index], whole[index])
        assert rows[torch.zeros(0, dtype=torch.int64)].shape == (0, 16)
        with pytest.raises(IndexError):
            rows[torch.tensor([22])]
        back = list(spill.batches(max_tokens=4))
        assert torch.equal(torch.cat([b[0].float() for b in back]), whole)
    finally:
        spill.remove()
    assert not any(name in os.listdir(tmp_path) for name in SPILL_NAMES)
