"""The README's "Coming from PyLate / colbert-ai" snippets run as written, on a tiny PyLate
checkpoint and a colbert-ai index folder made here (the third needs pylate)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from colbert_engine import ops
from colbert_engine.index.codec import train_codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from tiny_checkpoints import write_pylate_checkpoint  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippets() -> list:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Coming from PyLate / colbert-ai"):]
    section = section[:section.index("\n## ", 4)]
    return re.findall(r"^```py\n(.*?)^```", section, flags=re.S | re.M)


def _write_colbert_index(folder: Path, dim: int, n_docs: int = 40, nbits: int = 2):
    """A colbert-ai PLAID folder (one chunk, raw storage) of random clustered vectors."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 12, (n_docs,), generator=gen)
    emb = torch.nn.functional.normalize(torch.randn(int(lengths.sum()), dim, generator=gen), dim=-1)
    codec = train_codec(emb, emb.shape[0], nbits, n_centroids=8, bucket_layout="pooled")  # ColBERT's tables
    codes, residuals, _ = ops.compress_residuals(emb, codec.centroids, codec.bucket_cutoffs, codec.bucket_weights, nbits)
    folder.mkdir(parents=True)
    torch.save(codec.centroids.half(), folder / "centroids.pt")
    torch.save((codec.bucket_cutoffs, codec.bucket_weights), folder / "buckets.pt")
    torch.save(torch.tensor([0.05]), folder / "avg_residual.pt")
    codes.to(torch.int32).numpy().tofile(folder / "0.codes.pt")
    residuals.numpy().tofile(folder / "0.residuals.pt")
    (folder / "doclens.0.json").write_text(json.dumps(lengths.tolist()))
    (folder / "0.metadata.json").write_text(json.dumps({"passage_offset": 0, "num_passages": n_docs,
                                                        "num_embeddings": codes.numel(), "codes_size": codes.numel()}))
    (folder / "metadata.json").write_text(json.dumps({"config": {"dim": dim, "nbits": nbits}, "num_chunks": 1,
                                                      "num_embeddings": codes.numel()}))


def _run(code: str, cwd: Path, monkeypatch, capsys) -> str:
    """Run a snippet in this process (its imports are already loaded) from ``cwd``."""
    monkeypatch.chdir(cwd)
    # Offline: nothing here needs the hub, and sentence-transformers otherwise spends ~25 s
    # trying to reach it for a local folder.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    capsys.readouterr()
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    return capsys.readouterr().out


def test_three_snippets():
    assert len(_snippets()) == 3


def test_checkpoint_and_colbert_index_snippets(tmp_path, monkeypatch, capsys):
    write_pylate_checkpoint(tmp_path / "my-pylate-model", dim=16)
    _write_colbert_index(tmp_path / "experiments" / "default" / "indexes" / "my.nbits=2", dim=16)
    load, index = _snippets()[:2]
    out = _run(load + index, tmp_path, monkeypatch, capsys).splitlines()
    assert out[0] == "pylate '[Q] ' 16"
    assert out[1].startswith("[[(") and len(eval(out[1])[0]) == 3


def test_pylate_index_snippet(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pylate", reason="pylate is not installed (optional test dependency)")
    import sentence_transformers

    if not sentence_transformers.__version__.startswith("5."):
        pytest.skip(f"pylate 1.6 needs sentence-transformers 5.x, found {sentence_transformers.__version__}")
    write_pylate_checkpoint(tmp_path / "my-pylate-model", dim=16)
    out = _run(_snippets()[2], tmp_path, monkeypatch, capsys)
    results = eval(out.strip().splitlines()[-1])
    assert len(results) == 1 and len(results[0]) == 2 and {r["id"] for r in results[0]} <= {"d1", "d2", "d3"}
