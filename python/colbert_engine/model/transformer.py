"""The transformer: BERT / RoBERTa / XLM-RoBERTa layout, post-LayerNorm, one module tree for
absolute-position checkpoints (BERT, XLM-R, ColBERTv2, answerai-colbert-small) and rotary
ones (Jina-ColBERT-v2's XLM-RoBERTa).

Layer i:  h = norm1(h + out(attn(qkv(h))));  h = norm2(h + fc2(act(fc1(h)))).
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
kernels on GPU) with a key-padding mask; no remote code, no flash-attn dependency.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colbert_engine.model.config import TransformerConfig


def activation(name: str):
    if name == "gelu":
        return lambda x: F.gelu(x)  # exact (erf), as transformers' "gelu"
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"hidden_act: {name!r} is not supported")


def rotary_cos_sin(length: int, head_dim: int, base: float, device, dtype):
    """cos, sin of shape ``(length, head_dim)`` for NeoX-style rotate-half rotary embeddings:
    inverse frequencies ``base^(-2i/head_dim)`` for ``i < head_dim/2``, duplicated over the two
    halves; positions 0..length-1. Computed in float32, returned in ``dtype``."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    positions = torch.arange(length, device=device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x ``(B, heads, L, head_dim)``; cos/sin ``(L, head_dim)``: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Embeddings(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                                    if config.position_embedding_type == "absolute" else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.config.roberta_positions:
            # transformers' create_position_ids_from_input_ids: count non-padding tokens from
            # pad_token_id + 1; padding tokens get pad_token_id.
            pad = self.config.pad_token_id
            keep = input_ids.ne(pad).to(torch.int64)
            return torch.cumsum(keep, dim=1) * keep + pad
        return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            h = h + self.token_type_embeddings.weight[0]  # all token types are 0
        if self.position_embeddings is not None:
            positions = self.position_ids(input_ids)
            if int(positions.max()) >= self.config.max_position_embeddings:
                raise ValueError(f"input_ids: sequence of length {input_ids.shape[1]} needs position "
                                 f"{int(positions.max())}, beyond max_position_embeddings "
                                 f"({self.config.max_position_embeddings})")
            h = h + self.position_embeddings(positions)
        return self.norm(h)


class Layer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)  # rows: q | k | v
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(hidden, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)

    def forward(self, h, attn_mask, rotary):
        batch, length, hidden = h.shape
        qkv = self.qkv(h).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        ctx = ctx.transpose(1, 2).reshape(batch, length, hidden)
        h = self.norm1(h + self.out(ctx))
        return self.norm2(h + self.fc2(self.act(self.fc1(h))))


class Transformer(nn.Module):
    """``forward(input_ids (B, L) int64, attention_mask (B, L) bool/int or None)`` ->
    last hidden states ``(B, L, hidden)`` in the module's dtype.

    Positions where ``attention_mask`` is 0 are not attended as keys; their own outputs are
    computed but meaningless (callers drop them). Parameter names are this project's own;
    :mod:`colbert_engine.model.checkpoint` maps Jina and Hugging Face names onto them.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected a 2-D (batch, length) tensor, got shape {tuple(input_ids.shape)}")
        h = self.embeddings(input_ids)
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            # (B, 1, 1, L) bool: True = attend. Skipped when nothing is padded, so SDPA can
            # take its fastest unmasked path.
            attn_mask = attention_mask.bool()[:, None, None, :]
        rotary = None
        if self.config.position_embedding_type == "rotary":
            rotary = rotary_cos_sin(input_ids.shape[1], self.config.head_dim, self.config.rotary_emb_base,
                                    h.device, h.dtype)
        for layer in self.layers:
            h = layer(h, attn_mask, rotary)
        return h


def init_random_(model: Transformer, seed: int = 0, std: float = 0.02) -> Transformer:
    """Fill a model with small random weights (tests and benchmarks): normal(0, std)
    matrices, LayerNorm weights near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen) * (1.0 if p.dim() > 1 else 5.0))
    return model

