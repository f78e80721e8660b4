"""ModernBERT (answerdotai/ModernBERT and the ColBERT models built on it, e.g.
GTE-ModernColBERT-v1): pre-LayerNorm layers without biases, rotary positions with one base
for global and another for local layers, local layers attending within a sliding window,
a GeGLU MLP, and a final LayerNorm.

Layer i:  h = h + out(attn(qkv(norm1(h))));  h = h + fc2(act(a) * g), (a, g) = fc1(norm2(h)).
(``norm1`` is the identity in layer 0: the embeddings are already normalised.)
Layer i is global when ``layer_types[i] == "full_attention"`` (by default every third layer
from layer 0), else it attends to keys at distance <= ``local_attention // 2``.
Same ``forward(input_ids, attention_mask)`` contract as
:class:`colbert_engine.model.transformer.Transformer`, so the encoder's length-sorted,
padded-to-own-longest batches work unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from colbert_engine.model.config import CheckpointError
from colbert_engine.model.transformer import activation, apply_rotary, rotary_cos_sin

LAYER_TYPES = ("full_attention", "sliding_attention")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """ModernBERT's shape, read from ``config.json`` (``model_type: "modernbert"``)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    layer_types: Tuple[str, ...]
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    local_attention: int = 128
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    pad_token_id: int = 50283
    model_type: str = "modernbert"
    position_embedding_type: str = "rotary"  # for the encoder's length checks: no position table
    roberta_positions: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "ModernBertConfig":
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                               "vocab_size") if k not in raw]
        if missing:
            raise CheckpointError(f"{source}: missing required keys {missing}")
        layers = int(raw["num_hidden_layers"])
        heads = int(raw["num_attention_heads"])
        if int(raw["hidden_size"]) % heads:
            raise CheckpointError(f"{source}: hidden_size {raw['hidden_size']} is not a multiple of "
                                  f"num_attention_heads {heads}")
        types = raw.get("layer_types")
        if types is None:  # the older form still on the hub: one global layer every n
            every = raw.get("global_attn_every_n_layers", 3)
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise CheckpointError(f"{source}: global_attn_every_n_layers: expected an int >= 1, got {every!r}")
            types = ["sliding_attention" if i % every else "full_attention" for i in range(layers)]
        if not isinstance(types, list) or len(types) != layers or any(t not in LAYER_TYPES for t in types):
            raise CheckpointError(f"{source}: layer_types: expected {layers} entries of {' / '.join(LAYER_TYPES)}, "
                                  f"got {types!r}")
        act = raw.get("hidden_activation", raw.get("hidden_act", "gelu"))
        if act not in _ACTIVATIONS:
            raise CheckpointError(f"{source}: hidden_activation {act!r} is not supported; expected one of "
                                  f"{', '.join(_ACTIVATIONS)}")
        global_theta = float(raw.get("global_rope_theta", 160000.0))
        local_theta = float(raw.get("local_rope_theta", 10000.0))
        if raw.get("rope_scaling"):
            raise CheckpointError(f"{source}: rope_scaling {raw['rope_scaling']!r} is not supported (plain rotary only)")
        rope = raw.get("rope_parameters")
        if rope is not None:
            if not isinstance(rope, dict):
                raise CheckpointError(f"{source}: rope_parameters: expected an object, got {rope!r}")
            for kind, params in rope.items():
                if params is None:
                    continue
                if params.get("rope_type", "default") != "default":
                    raise CheckpointError(f"{source}: rope_parameters.{kind}.rope_type {params['rope_type']!r} is "
                                          "not supported (only default rotary)")
                if "rope_theta" in params and kind == "full_attention":
                    global_theta = float(params["rope_theta"])
                elif "rope_theta" in params and kind == "sliding_attention":
                    local_theta = float(params["rope_theta"])
        window = raw.get("local_attention", 128)
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise CheckpointError(f"{source}: local_attention: expected an int >= 0, got {window!r}")
        pad = raw.get("pad_token_id")
        return cls(
            hidden_size=int(raw["hidden_size"]), num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=int(raw["intermediate_size"]), vocab_size=int(raw["vocab_size"]),
            layer_types=tuple(types), hidden_act=act, norm_eps=float(raw.get("norm_eps", 1e-5)),
            norm_bias=bool(raw.get("norm_bias", False)), attention_bias=bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)), local_attention=window, global_rope_theta=global_theta,
            local_rope_theta=local_theta, max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
            pad_token_id=int(pad) if pad is not None else 50283)


class Embeddings(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.word_embeddings(input_ids))


class Layer(nn.Module):
    def __init__(self, config: ModernBertConfig, index: int):
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.is_global = config.layer_types[index] == "full_attention"
        self.norm1 = (nn.LayerNorm(hidden, eps=config.norm_eps, bias=config.norm_bias) if index else None)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=config.attention_bias)  # rows: q | k | v
        self.out = nn.Linear(hidden, hidden, bias=config.attention_bias)
        self.norm2 = nn.LayerNorm(hidden, eps=config.norm_eps, bias=config.norm_bias)
        self.fc1 = nn.Linear(hidden, 2 * config.intermediate_size, bias=config.mlp_bias)  # rows: input | gate
        self.fc2 = nn.Linear(config.intermediate_size, hidden, bias=config.mlp_bias)
        self.act = activation(config.hidden_act)

    def forward(self, h, attn_mask, rotary, dead_rows=None):
        batch, length, hidden = h.shape
        x = h if self.norm1 is None else self.norm1(h)
        qkv = self.qkv(x).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
        q = apply_rotary(q, *rotary)
        k = apply_rotary(k, *rotary)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        if dead_rows is not None:
            ctx = ctx.masked_fill(dead_rows, 0.0)
        h = h + self.out(ctx.transpose(1, 2).reshape(batch, length, hidden))
        a, gate = self.fc1(self.norm2(h)).chunk(2, dim=-1)
        return h + self.fc2(self.act(a) * gate)


class ModernBert(nn.Module):
    """``forward(input_ids (B, L) int64, attention_mask (B, L) bool/int or None)`` ->
    last hidden states ``(B, L, hidden)`` (after the final norm) in the module's dtype.

    Positions are 0..L-1 in every row (right padding). Positions where ``attention_mask``
    is 0 are not attended as keys; their own outputs are computed but meaningless.
    """

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def _masks(self, length: int, attention_mask: Optional[torch.Tensor], device):
        """(global mask, local mask, local rows with no key) for SDPA: bool masks (True =
        attend) or None for "all"; the last is None when every local row has a key."""
        key = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            key = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        half = self.config.local_attention // 2
        if length - 1 <= half or all(layer.is_global for layer in self.layers):
            return key, key, None  # every pair is within the window
        pos = torch.arange(length, device=device)
        band = (pos[:, None] - pos[None, :]).abs() <= half  # (L, L)
        if key is None:
            return None, band, None
        local = band & key
        # A row whose window holds only unattended keys (padding, or query expansion tokens
        # that are not attended) gets no attention output: zero, as torch >= 2.5's SDPA and
        # transformers give. Older kernels give NaN there, which would reach real rows in
        # the next layer (0 * NaN), so such rows are zeroed explicitly.
        dead = ~local.any(dim=-1, keepdim=True)  # (B, 1, L, 1)
        return key, local, (dead if bool(dead.any()) else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected a 2-D (batch, length) tensor, got shape {tuple(input_ids.shape)}")
        h = self.embeddings(input_ids)
        length = input_ids.shape[1]
        global_mask, local_mask, dead_rows = self._masks(length, attention_mask, h.device)
        c = self.config
        rotary_global = rotary_cos_sin(length, c.head_dim, c.global_rope_theta, h.device, h.dtype)
        rotary_local = rotary_cos_sin(length, c.head_dim, c.local_rope_theta, h.device, h.dtype)
        for layer in self.layers:
            if layer.is_global:
                h = layer(h, global_mask, rotary_global)
            else:
                h = layer(h, local_mask, rotary_local, dead_rows)
        return self.final_norm(h)
