"""Tiny random checkpoints and tokenizers written to temp folders (no downloads).

``write_checkpoint(folder, layout=...)`` writes config.json, tokenizer.json and weights under
the tensor names of one real checkpoint family:

- ``"jina"``: Jina-ColBERT-v2 names (``roberta.encoder.layers.N.mixer.Wqkv``...), rotary,
  ``[QueryMarker]`` / ``[DocumentMarker]`` added tokens, ``linear.weight`` head.
- ``"xlmr"``: Hugging Face XLM-R names (no prefix), absolute positions from pad+1.
- ``"bert"``: Hugging Face BERT names, optional ``bert.`` prefix and ColBERT head.
"""

from __future__ import annotations

import json
import os
import string

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers

WORDS = ("the a of and to in is was for on physics computer memory data system electron "
         "field theory wave energy light speed time space hello world query document "
         "привет мир данные 日本語 テキスト 中文 عربي हिन्दी ελληνικά").split()


def make_tokenizer(style: str) -> Tokenizer:
    """A WordLevel tokenizer with BERT-style pre-tokenization (every punctuation character is
    its own token). ``style``: ``"xlmr"`` (``<s>``, ``</s>``, ``<pad>`` = 1, ``<mask>``, the
    Jina markers) or ``"bert"`` (``[PAD]`` = 0, ``[CLS]``, ``[SEP]``, ``[MASK]``,
    ``[unused0]``, ``[unused1]``)."""
    if style == "xlmr":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        unk = "<unk>"
    else:
        specials = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        unk = "[UNK]"
    vocab = {}
    for token in specials + list(string.punctuation) + list(WORDS):
        vocab.setdefault(token, len(vocab))
    if style == "xlmr":
        vocab["<mask>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials + (["<mask>"] if style == "xlmr" else [])])
    if style == "xlmr":
        tok.add_special_tokens([AddedToken("[QueryMarker]", special=True), AddedToken("[DocumentMarker]", special=True)])
    return tok


def config_dict(layout: str, hidden=32, layers=2, heads=4, ffn=48, vocab_size=None, max_pos=None, **extra):
    if layout == "jina":
        cfg = dict(model_type="xlm-roberta", architectures=["XLMRobertaModel"], position_embedding_type="rotary",
                   rotary_emb_base=20000.0, layer_norm_eps=1e-5, pad_token_id=1, type_vocab_size=1,
                   max_position_embeddings=max_pos or 8194, matryoshka_dimensions=[128, 96, 64])
    elif layout == "xlmr":
        cfg = dict(model_type="xlm-roberta", architectures=["XLMRobertaModel"], position_embedding_type="absolute",
                   layer_norm_eps=1e-5, pad_token_id=1, type_vocab_size=1, max_position_embeddings=max_pos or 514)
    else:
        cfg = dict(model_type="bert", architectures=["BertModel"], position_embedding_type="absolute",
                   layer_norm_eps=1e-12, pad_token_id=0, type_vocab_size=2, max_position_embeddings=max_pos or 512)
    cfg.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
               hidden_act="gelu", vocab_size=vocab_size)
    cfg.update(extra)
    return cfg


def random_tensors(cfg: dict, names: str, seed: int = 0, prefix: str = "") -> dict:
    """Random weights for ``cfg`` under ``names`` = ``"jina"`` or ``"hf"``."""
    gen = torch.Generator().manual_seed(seed)
    H, F_, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def rnd(*shape, std=0.2):
        return std * torch.randn(*shape, generator=gen)

    def ln():
        return 1.0 + 0.1 * torch.randn(H, generator=gen), 0.1 * torch.randn(H, generator=gen)

    t = {}
    p = prefix
    t[f"{p}embeddings.word_embeddings.weight"] = rnd(V, H, std=1.0)
    if cfg.get("type_vocab_size", 0):
        t[f"{p}embeddings.token_type_embeddings.weight"] = rnd(cfg["type_vocab_size"], H, std=0.5)
    if cfg["position_embedding_type"] == "absolute":
        t[f"{p}embeddings.position_embeddings.weight"] = rnd(cfg["max_position_embeddings"], H, std=0.5)
    w, b = ln()
    if names == "jina":
        t[f"{p}emb_ln.weight"], t[f"{p}emb_ln.bias"] = w, b
    else:
        t[f"{p}embeddings.LayerNorm.weight"], t[f"{p}embeddings.LayerNorm.bias"] = w, b
    for i in range(cfg["num_hidden_layers"]):
        if names == "jina":
            L = f"{p}encoder.layers.{i}."
            t[L + "mixer.Wqkv.weight"], t[L + "mixer.Wqkv.bias"] = rnd(3 * H, H), rnd(3 * H, std=0.05)
            t[L + "mixer.out_proj.weight"], t[L + "mixer.out_proj.bias"] = rnd(H, H), rnd(H, std=0.05)
            t[L + "norm1.weight"], t[L + "norm1.bias"] = ln()
            t[L + "mlp.fc1.weight"], t[L + "mlp.fc1.bias"] = rnd(F_, H), rnd(F_, std=0.05)
            t[L + "mlp.fc2.weight"], t[L + "mlp.fc2.bias"] = rnd(H, F_), rnd(H, std=0.05)
            t[L + "norm2.weight"], t[L + "norm2.bias"] = ln()
        else:
            L = f"{p}encoder.layer.{i}."
            for kind in ("query", "key", "value"):
                t[L + f"attention.self.{kind}.weight"] = rnd(H, H)
                t[L + f"attention.self.{kind}.bias"] = rnd(H, std=0.05)
            t[L + "attention.output.dense.weight"], t[L + "attention.output.dense.bias"] = rnd(H, H), rnd(H, std=0.05)
            t[L + "attention.output.LayerNorm.weight"], t[L + "attention.output.LayerNorm.bias"] = ln()
            t[L + "intermediate.dense.weight"], t[L + "intermediate.dense.bias"] = rnd(F_, H), rnd(F_, std=0.05)
            t[L + "output.dense.weight"], t[L + "output.dense.bias"] = rnd(H, F_), rnd(H, std=0.05)
            t[L + "output.LayerNorm.weight"], t[L + "output.LayerNorm.bias"] = ln()
    return t


def write_checkpoint(folder, layout: str = "jina", head_dim: int = 128, weights: str = "safetensors",
                     prefix: str = None, seed: int = 0, extra_tensors: dict = None, drop: tuple = (),
                     **cfg_extra) -> dict:
    """Write a complete tiny checkpoint to ``folder``; returns the tensors written."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    tok = make_tokenizer("xlmr" if layout in ("jina", "xlmr") else "bert")
    tok.save(os.path.join(str(folder), "tokenizer.json"))
    cfg = config_dict(layout, vocab_size=tok.get_vocab_size(), **cfg_extra)
    with open(os.path.join(str(folder), "config.json"), "w") as f:
        json.dump(cfg, f)
    if prefix is None:
        prefix = "roberta." if layout == "jina" else ""
    tensors = random_tensors(cfg, "jina" if layout == "jina" else "hf", seed=seed, prefix=prefix)
    if head_dim:
        gen = torch.Generator().manual_seed(seed + 1)
        tensors["linear.weight"] = 0.3 * torch.randn(head_dim, cfg["hidden_size"], generator=gen)
    tensors.update(extra_tensors or {})
    for name in drop:
        tensors.pop(name)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if weights == "safetensors":
        save_file(tensors, os.path.join(str(folder), "model.safetensors"))
    else:
        torch.save(tensors, os.path.join(str(folder), "pytorch_model.bin"))
    return tensors


def modernbert_config(vocab_size: int, hidden=32, layers=4, heads=4, ffn=40, local_attention=8, legacy=True,
                      **extra) -> dict:
    """A ModernBERT config.json as the hub holds it: ``legacy`` uses the older keys
    (``global_attn_every_n_layers``, ``global_rope_theta``, ``local_rope_theta``), else the
    ``layer_types`` / ``rope_parameters`` form newer transformers versions write."""
    cfg = dict(model_type="modernbert", architectures=["ModernBertModel"], hidden_size=hidden,
               num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn, vocab_size=vocab_size,
               hidden_activation="gelu", norm_eps=1e-5, norm_bias=False, attention_bias=False, mlp_bias=False,
               local_attention=local_attention, max_position_embeddings=8192, pad_token_id=0, cls_token_id=4,
               sep_token_id=5)
    if legacy:
        cfg.update(global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0)
    else:
        cfg.update(layer_types=["sliding_attention" if i % 3 else "full_attention" for i in range(layers)],
                   rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    cfg.update(extra)
    return cfg


def modernbert_tensors(cfg: dict, seed: int = 0, prefix: str = "") -> dict:
    """Random weights under transformers' ModernBertModel names (no biases, layer 0 without
    attn_norm)."""
    gen = torch.Generator().manual_seed(seed)
    H, F_, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def rnd(*shape, std=0.2):
        return std * torch.randn(*shape, generator=gen)

    def ln():
        return 1.0 + 0.1 * torch.randn(H, generator=gen)

    p = prefix
    t = {f"{p}embeddings.tok_embeddings.weight": rnd(V, H, std=1.0), f"{p}embeddings.norm.weight": ln()}
    for i in range(cfg["num_hidden_layers"]):
        L = f"{p}layers.{i}."
        if i:
            t[L + "attn_norm.weight"] = ln()
        t[L + "attn.Wqkv.weight"] = rnd(3 * H, H)
        t[L + "attn.Wo.weight"] = rnd(H, H)
        t[L + "mlp_norm.weight"] = ln()
        t[L + "mlp.Wi.weight"] = rnd(2 * F_, H)
        t[L + "mlp.Wo.weight"] = rnd(H, F_)
    t[f"{p}final_norm.weight"] = ln()
    return t


def write_modernbert_checkpoint(folder, head_dim: int = 16, seed: int = 0, prefix: str = "", **cfg_extra) -> dict:
    """A tiny ModernBERT checkpoint: BERT-style special tokens (ModernBERT's tokenizer names
    them ``[CLS]`` / ``[SEP]`` / ``[MASK]`` / ``[PAD]`` too), HF tensor names, optional
    ``linear.weight`` head. Returns the config dict."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    tok = make_tokenizer("bert")
    tok.save(os.path.join(str(folder), "tokenizer.json"))
    cfg = modernbert_config(tok.get_vocab_size(), **cfg_extra)
    with open(os.path.join(str(folder), "config.json"), "w") as f:
        json.dump(cfg, f)
    tensors = modernbert_tensors(cfg, seed=seed, prefix=prefix)
    if head_dim:
        tensors["linear.weight"] = 0.3 * torch.randn(head_dim, cfg["hidden_size"],
                                                     generator=torch.Generator().manual_seed(seed + 1))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(str(folder), "model.safetensors"))
    return cfg


PYLATE_FIELDS = {
    "model_type": "ColBERT",
    "__version__": {"sentence_transformers": "5.3.0", "transformers": "5.24.0", "pytorch": "2.13.0"},
    "prompts": {"query": "", "document": ""},
    "default_prompt_name": None,
    "similarity_fn_name": "MaxSim",
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
    "do_query_expansion": True,
}


def write_pylate_checkpoint(folder, fields: dict = None, drop_fields=(), dim: int = 16, bias: bool = False,
                            use_residual: bool = False, seed: int = 0) -> dict:
    """A tiny checkpoint in the layout ``pylate.models.ColBERT.save`` writes (PyLate 1.6.0):
    the BERT transformer at the top (config.json, model.safetensors, tokenizer.json whose
    added tokens end with the markers ``"[Q] "`` / ``"[D] "``, tokenizer_config.json with
    ``pad_token`` = ``[MASK]``, sentence_bert_config.json), modules.json, ``1_Dense/``
    (config.json + model.safetensors, no bias) and config_sentence_transformers.json with
    every field PyLate writes (``fields`` overrides, ``drop_fields`` removes). Returns the
    config_sentence_transformers.json dict."""
    from safetensors.torch import save_file
    from tokenizers import processors

    folder = str(folder)
    os.makedirs(os.path.join(folder, "1_Dense"), exist_ok=True)
    tok = make_tokenizer("bert")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.add_tokens([AddedToken("[Q] ", normalized=True), AddedToken("[D] ", normalized=True)])
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = config_dict("bert", vocab_size=tok.get_vocab_size())
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    tensors = random_tensors(cfg, "hf", seed=seed)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[MASK]", "sep_token": "[SEP]",
                   "unk_token": "[UNK]", "tokenizer_class": "TokenizersBackend"}, f)
    with open(os.path.join(folder, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 179, "do_lower_case": False}, f)
    with open(os.path.join(folder, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}], f)
    hidden = cfg["hidden_size"]
    with open(os.path.join(folder, "1_Dense", "config.json"), "w") as f:
        json.dump({"in_features": hidden, "out_features": dim, "bias": bias,
                   "activation_function": "torch.nn.modules.linear.Identity", "use_residual": use_residual}, f)
    gen = torch.Generator().manual_seed(seed + 1)
    dense = {"linear.weight": 0.3 * torch.randn(dim, hidden, generator=gen)}
    if bias:
        dense["linear.bias"] = 0.1 * torch.randn(dim, generator=gen)
    if use_residual and dim != hidden:
        dense["residual.weight"] = 0.3 * torch.randn(dim, hidden, generator=gen)
    save_file(dense, os.path.join(folder, "1_Dense", "model.safetensors"))
    st = dict(PYLATE_FIELDS, **(fields or {}))
    for key in drop_fields:
        st.pop(key)
    with open(os.path.join(folder, "config_sentence_transformers.json"), "w") as f:
        json.dump(st, f, indent=2)
    return st
