"""ModernBERT against transformers' own ModernBertModel on tiny random checkpoints: local
(sliding-window) and global layers, separate rotary bases, GeGLU, padded batches; config
variants and checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from colbert_engine.model import CheckpointError, Encoder
from colbert_engine.model.modernbert import ModernBertConfig
from tiny_checkpoints import modernbert_tensors, write_modernbert_checkpoint

transformers = pytest.importorskip("transformers")


def _hf_model(cfg: dict, tensors: dict):
    hf_cfg = transformers.ModernBertConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    hf_cfg._attn_implementation = "sdpa"
    hf = transformers.ModernBertModel(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(tensors, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return hf


def _batch(vocab_size, lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(7, vocab_size, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("lengths", [[37, 5, 20, 1, 9], [4, 4], [30]])
def test_matches_transformers(tmp_path, legacy, lengths):
    # local_attention 8: windows of +-4 tokens, so sequences of 5..37 exercise the band mask
    cfg = write_modernbert_checkpoint(tmp_path, layers=4, local_attention=8, legacy=legacy, prefix="model.")
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.model.config.layer_types == ("full_attention", "sliding_attention", "sliding_attention",
                                            "full_attention")
    hf = _hf_model(cfg, modernbert_tensors(cfg))
    ids, mask = _batch(cfg["vocab_size"], lengths)
    with torch.no_grad():
        ours = enc.model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    assert torch.isfinite(ours).all()  # padding rows too: they must not poison later layers
    cos = F.cosine_similarity(ours[keep].double(), theirs[keep].double(), dim=-1)
    assert float(cos.min()) >= 0.99999
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-4, rtol=1e-4)


def test_padding_does_not_change_vectors(tmp_path):
    write_modernbert_checkpoint(tmp_path, layers=3, local_attention=4)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    ids, mask = _batch(enc.model.config.vocab_size, [23, 7, 15])
    with torch.no_grad():
        batched = enc.model(ids, mask)
        for row, n in enumerate([23, 7, 15]):
            alone = enc.model(ids[row:row + 1, :n], None)
            torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_encoder_documents_and_queries(tmp_path):
    write_modernbert_checkpoint(tmp_path, head_dim=16)
    enc = Encoder.from_pretrained(tmp_path, device="cpu", query_marker="[unused0]", document_marker="[unused1]")
    docs = ["hello world, physics.", "the electron field theory of light " * 6, "data"]
    emb, offsets = enc.encode_documents(docs, batch_size=2)
    assert emb.shape[1] == 16 and offsets.numel() == 4
    for i, doc in enumerate(docs):  # batching and sorting leave each document's vectors unchanged
        alone, _ = enc.encode_documents([doc])
        torch.testing.assert_close(emb[offsets[i]:offsets[i + 1]], alone, atol=1e-5, rtol=1e-5)
    q = enc.encode_queries(["hello world"])
    assert q.shape == (1, 32, 16)


def test_config_errors(tmp_path):
    cfg = write_modernbert_checkpoint(tmp_path)
    path = tmp_path / "config.json"
    for bad, match in [(dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
                       (dict(layer_types=["full_attention"]), "layer_types"),
                       (dict(hidden_activation="swiglu"), "hidden_activation 'swiglu'"),
                       (dict(global_attn_every_n_layers=0), "global_attn_every_n_layers")]:
        path.write_text(json.dumps(dict(cfg, **bad)))
        with pytest.raises(CheckpointError, match=match):
            Encoder.from_pretrained(tmp_path, device="cpu")


def test_unknown_and_missing_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    write_modernbert_checkpoint(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    save_file(dict(tensors, **{"layers.0.attn.Wq.weight": torch.zeros(2)}), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unrecognised tensors: layers.0.attn.Wq.weight"):
        Encoder.from_pretrained(tmp_path, device="cpu")
    del tensors["layers.1.mlp.Wi.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensors.*layers.1.fc1.weight"):
        Encoder.from_pretrained(tmp_path, device="cpu")


def test_mlm_head_is_ignored(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = write_modernbert_checkpoint(tmp_path, prefix="model.", head_dim=0)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors.update({"head.dense.weight": torch.zeros(cfg["hidden_size"], cfg["hidden_size"]),
                    "head.norm.weight": torch.ones(cfg["hidden_size"]), "decoder.bias": torch.zeros(cfg["vocab_size"])})
    save_file(tensors, str(tmp_path / "model.safetensors"))
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.head_weight is None and enc.dim == cfg["hidden_size"]


def test_config_defaults():
    c = ModernBertConfig.from_dict(dict(hidden_size=64, num_hidden_layers=7, num_attention_heads=4,
                                        intermediate_size=96, vocab_size=100))
    assert c.layer_types == tuple("full_attention" if i % 3 == 0 else "sliding_attention" for i in range(7))
    assert (c.global_rope_theta, c.local_rope_theta, c.local_attention) == (160000.0, 10000.0, 128)


def test_unattended_rows_match_transformers(tmp_path):
    """Query expansion tokens that are not attended are still outputs (ColBERT keeps them):
    far from the real tokens their sliding window holds no attended key, and they must come
    out as transformers computes them (no attention contribution), not NaN or anything else."""
    cfg = write_modernbert_checkpoint(tmp_path, layers=4, local_attention=8)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    hf = _hf_model(cfg, modernbert_tensors(cfg))
    ids, mask = _batch(cfg["vocab_size"], [5, 2, 12])
    ids = torch.nn.functional.pad(ids, (0, 20), value=6)  # [MASK] filling, not attended
    mask = torch.nn.functional.pad(mask, (0, 20), value=0)
    with torch.no_grad():
        ours = enc.model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.isfinite(ours).all()
    cos = F.cosine_similarity(ours.flatten(0, 1).double(), theirs.flatten(0, 1).double(), dim=-1)
    assert float(cos.min()) >= 0.99999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_transformers(tmp_path):
    """On the GPU: fp32 against transformers' ModernBertModel on the same device; bf16 (the
    encoder's GPU default) close to fp32, padding and unattended filling included."""
    cfg = write_modernbert_checkpoint(tmp_path, hidden=64, layers=4, local_attention=8)
    hf = _hf_model(cfg, modernbert_tensors(cfg)).cuda()
    ids, mask = _batch(cfg["vocab_size"], [37, 5, 20, 1, 9])
    ids = torch.nn.functional.pad(ids, (0, 12), value=6)
    mask = torch.nn.functional.pad(mask, (0, 12), value=0)
    ids, mask = ids.cuda(), mask.cuda()
    fp32 = Encoder.from_pretrained(tmp_path, device="cuda", dtype=torch.float32)
    bf16 = Encoder.from_pretrained(tmp_path, device="cuda")
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = fp32.model(ids, mask)
        low = bf16.model(ids, mask).float()
    assert torch.isfinite(ours).all() and torch.isfinite(low).all()
    keep = mask.bool()
    cos = F.cosine_similarity(ours[keep].double(), theirs[keep].double(), dim=-1)
    assert float(cos.min()) >= 0.99999
    assert float(F.cosine_similarity(low[keep], ours[keep], dim=-1).min()) >= 0.99
    emb, offsets = bf16.encode_documents(["hello world, physics.", "the electron field theory " * 30])
    assert emb.is_cuda and emb.dtype == torch.float16 and int(offsets[-1]) == emb.shape[0]


_PROPERTY_DIR = {}


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=4), window=st.sampled_from([2, 4, 6, 16, 128]),
       every=st.integers(1, 3))
def test_batched_equals_alone_property(tmp_path_factory, lengths, window, every):
    """Any lengths, window and global/local pattern: a sequence's vectors do not depend on
    what else is in its padded batch."""
    key = (window, every)
    if key not in _PROPERTY_DIR:
        folder = tmp_path_factory.mktemp("mb")
        write_modernbert_checkpoint(folder, layers=3, local_attention=window, global_attn_every_n_layers=every)
        _PROPERTY_DIR[key] = Encoder.from_pretrained(folder, device="cpu").model
    model = _PROPERTY_DIR[key]
    ids, mask = _batch(model.config.vocab_size, lengths, seed=sum(lengths))
    with torch.no_grad():
        batched = model(ids, mask)
        for row, n in enumerate(lengths):
            torch.testing.assert_close(batched[row, :n], model(ids[row:row + 1, :n], None)[0], atol=2e-5, rtol=2e-5)
