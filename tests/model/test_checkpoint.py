"""Checkpoint loading failures are clear: wrong folder, missing files, unknown architecture,
unknown / missing / mis-shaped tensors, hub ids offline with no cache."""

from __future__ import annotations

import json
import os

import pytest
import torch

from colbert_engine.model import CheckpointError, Encoder
from tiny_checkpoints import write_checkpoint


def test_wrong_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        Encoder.from_pretrained(tmp_path / "does-not-exist" / "x")
    with pytest.raises(CheckpointError, match="no config.json"):
        Encoder.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="name_or_path"):
        Encoder.from_pretrained(42)


def test_missing_weights(tmp_path):
    write_checkpoint(tmp_path, layout="jina")
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no weights"):
        Encoder.from_pretrained(tmp_path)


def test_missing_tokenizer(tmp_path):
    write_checkpoint(tmp_path, layout="jina")
    os.remove(tmp_path / "tokenizer.json")
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        Encoder.from_pretrained(tmp_path)


def test_unknown_architecture(tmp_path):
    write_checkpoint(tmp_path, layout="bert")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt2")))
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, position_embedding_type="alibi")))
    with pytest.raises(CheckpointError, match="position_embedding_type 'alibi'"):
        Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, hidden_act="swiglu")))
    with pytest.raises(CheckpointError, match="hidden_act 'swiglu'"):
        Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Encoder.from_pretrained(tmp_path)


def test_unknown_tensor(tmp_path):
    write_checkpoint(tmp_path, layout="jina", extra_tensors={"roberta.encoder.layers.0.mixer.lora_A": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unrecognised tensors: roberta.encoder.layers.0.mixer.lora_A"):
        Encoder.from_pretrained(tmp_path)


def test_missing_tensor(tmp_path):
    write_checkpoint(tmp_path, layout="jina", drop=("roberta.encoder.layers.1.norm2.weight",))
    with pytest.raises(CheckpointError, match="missing tensors.*layers.1.norm2.weight"):
        Encoder.from_pretrained(tmp_path)


def test_incomplete_split_qkv(tmp_path):
    write_checkpoint(tmp_path, layout="bert", drop=("encoder.layer.0.attention.self.key.weight",))
    with pytest.raises(CheckpointError, match="query/key/value"):
        Encoder.from_pretrained(tmp_path)


def test_config_disagrees_with_weights(tmp_path):
    write_checkpoint(tmp_path, layout="jina", layers=2)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=1)))
    with pytest.raises(CheckpointError, match="does not call for"):
        Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=50)))
    with pytest.raises(CheckpointError, match="shape"):
        Encoder.from_pretrained(tmp_path)


def test_ignored_tensors_are_accepted(tmp_path):
    write_checkpoint(tmp_path, layout="bert", head_dim=0, hidden=32, extra_tensors={
        "pooler.dense.weight": torch.zeros(32, 32), "pooler.dense.bias": torch.zeros(32),
        "embeddings.position_ids": torch.arange(512)[None]})
    assert Encoder.from_pretrained(tmp_path).head_weight is None


def test_offline_hub_id_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    with pytest.raises(CheckpointError) as info:
        Encoder.from_pretrained("no-such-org/no-such-colbert-model")
    message = str(info.value)
    assert "no-such-org/no-such-colbert-model" in message
    assert "config.json" in message and "tokenizer.json" in message and "model.safetensors" in message
    assert "HF_HUB_OFFLINE" in message


def test_vocab_size_follows_the_embedding_table(tmp_path):
    """config.json's vocab_size may disagree with the table (Jina: 250,002 vs 250,004 rows)."""
    tensors = write_checkpoint(tmp_path, layout="jina")
    rows = tensors["roberta.embeddings.word_embeddings.weight"].shape[0]
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, vocab_size=rows - 2)))
    enc = Encoder.from_pretrained(tmp_path)
    assert enc.model.config.vocab_size == rows
    assert enc.encode_queries(["hello"]).shape == (1, 32, 128)
