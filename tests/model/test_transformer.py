"""The transformer against independent implementations: Hugging Face transformers for the
absolute-position layouts (BERT, XLM-R), a straightforward complex-number rotary model for
Jina's layout; and the relative-position property of the rotary embedding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from colbert_engine.model import Encoder
from colbert_engine.model.transformer import apply_rotary, rotary_cos_sin
from tiny_checkpoints import random_tensors, write_checkpoint

transformers = pytest.importorskip("transformers")


def _min_cos(a, b, mask):
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1)
    return float(cos[mask.bool()].min())


def _padded_batch(vocab_size, lengths, pad_id, low, seed=0):
    gen = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.full((len(lengths), L), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(lengths), L), dtype=torch.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(low, vocab_size, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("layout", ["bert", "xlmr"])
def test_absolute_positions_match_transformers(tmp_path, layout):
    write_checkpoint(tmp_path, layout=layout, head_dim=0, layers=3, hidden=48, heads=4, ffn=80)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    cfg = enc.model.config
    if layout == "bert":
        hf_cfg = transformers.BertConfig(vocab_size=cfg.vocab_size, hidden_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, intermediate_size=80, max_position_embeddings=512,
                                         type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12)
        hf = transformers.BertModel(hf_cfg, add_pooling_layer=False)
    else:
        hf_cfg = transformers.XLMRobertaConfig(vocab_size=cfg.vocab_size, hidden_size=48, num_hidden_layers=3,
                                               num_attention_heads=4, intermediate_size=80,
                                               max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                               layer_norm_eps=1e-5)
        hf = transformers.XLMRobertaModel(hf_cfg, add_pooling_layer=False)
    hf_cfg._attn_implementation = "eager"
    tensors = random_tensors(config_of(enc), "hf", seed=0)
    missing, unexpected = hf.load_state_dict(tensors, strict=False)
    assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing)
    hf.eval()
    ids, mask = _padded_batch(cfg.vocab_size, [9, 3, 17, 1, 30], cfg.pad_token_id, low=4)
    with torch.no_grad():
        ours = enc.model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    assert ours.shape == theirs.shape == (5, 30, 48)
    assert _min_cos(ours, theirs, mask) >= 0.99999
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-4, rtol=1e-4)


def config_of(enc):
    c = enc.model.config
    return dict(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, vocab_size=c.vocab_size,
                num_hidden_layers=c.num_hidden_layers, type_vocab_size=c.type_vocab_size,
                position_embedding_type=c.position_embedding_type, max_position_embeddings=c.max_position_embeddings)


# ----------------------------------------------------------------------------- rotary


def _rotate_complex(x, base):
    """x (..., L, d): rotate pair (x_i, x_{i+d/2}) as the complex number x_i + j*x_{i+d/2}
    by angle pos * base^(-2i/d) (NeoX / rotate-half convention)."""
    L, d = x.shape[-2], x.shape[-1]
    half = d // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    angle = torch.arange(L, dtype=torch.float64)[:, None] * theta[None, :]
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1)


def _naive_jina(tensors, cfg, ids, mask):
    """Straightforward float64 Jina-XLM-R forward from the checkpoint tensors (Jina names)."""
    H, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d = H // heads
    t = {k: v.double() for k, v in tensors.items()}
    p = "roberta."
    x = t[p + "embeddings.word_embeddings.weight"][ids] + t[p + "embeddings.token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (H,), t[p + "emb_ln.weight"], t[p + "emb_ln.bias"], cfg["layer_norm_eps"])
    B, L = ids.shape
    key_ok = mask.bool()[:, None, None, :]
    for i in range(cfg["num_hidden_layers"]):
        lp = f"{p}encoder.layers.{i}."
        qkv = x @ t[lp + "mixer.Wqkv.weight"].T + t[lp + "mixer.Wqkv.bias"]
        q, k, v = qkv.split(H, dim=-1)
        q, k, v = (y.view(B, L, heads, d).transpose(1, 2) for y in (q, k, v))
        q, k = _rotate_complex(q, cfg["rotary_emb_base"]), _rotate_complex(k, cfg["rotary_emb_base"])
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(~key_ok, float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H)
        x = F.layer_norm(x + ctx @ t[lp + "mixer.out_proj.weight"].T + t[lp + "mixer.out_proj.bias"], (H,),
                         t[lp + "norm1.weight"], t[lp + "norm1.bias"], cfg["layer_norm_eps"])
        ff = F.gelu(x @ t[lp + "mlp.fc1.weight"].T + t[lp + "mlp.fc1.bias"]) @ t[lp + "mlp.fc2.weight"].T
        x = F.layer_norm(x + ff + t[lp + "mlp.fc2.bias"], (H,), t[lp + "norm2.weight"], t[lp + "norm2.bias"],
                         cfg["layer_norm_eps"])
    return x


def test_rotary_matches_complex_number_implementation(tmp_path):
    import json

    tensors = write_checkpoint(tmp_path, layout="jina", head_dim=128, layers=2, hidden=64, heads=4, ffn=96)
    cfg = json.loads((tmp_path / "config.json").read_text())
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    ids, mask = _padded_batch(cfg["vocab_size"], [12, 5, 40], pad_id=1, low=4, seed=3)
    with torch.no_grad():
        ours = enc.model(ids, mask)
    ref = _naive_jina(tensors, cfg, ids, mask)
    assert _min_cos(ours, ref, mask) >= 0.99999


def test_rotary_base_is_read_from_config(tmp_path):
    import json

    tensors = write_checkpoint(tmp_path, layout="jina", head_dim=128, rotary_emb_base=500.0)
    cfg = json.loads((tmp_path / "config.json").read_text())
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.model.config.rotary_emb_base == 500.0
    ids, mask = _padded_batch(cfg["vocab_size"], [20], pad_id=1, low=4)
    with torch.no_grad():
        ours = enc.model(ids, mask)
    assert _min_cos(ours, _naive_jina(tensors, cfg, ids, mask), mask) >= 0.99999
    cfg_wrong = dict(cfg, rotary_emb_base=10000.0)
    assert _min_cos(ours, _naive_jina(tensors, cfg_wrong, ids, mask), mask) < 0.9999


@pytest.mark.parametrize("head_dim", [16, 64])
def test_rotary_scores_depend_only_on_relative_position(head_dim):
    gen = torch.Generator().manual_seed(1)
    L = 64
    cos, sin = rotary_cos_sin(L, head_dim, 10000.0, "cpu", torch.float64)
    q = torch.randn(head_dim, generator=gen, dtype=torch.float64).expand(1, 1, L, head_dim)
    k = torch.randn(head_dim, generator=gen, dtype=torch.float64).expand(1, 1, L, head_dim)
    scores = (apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2))[0, 0]  # (L, L)
    for offset in (-7, 0, 3, 20):
        diag = torch.diagonal(scores, offset=offset)
        # cos/sin are computed in fp32 like the reference implementation: ~1e-6 angle error
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-5, rtol=1e-5)
    # and not a constant: different offsets give different scores
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 5)[0])
    # the rotation preserves norms
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(dim=-1), q.norm(dim=-1))
