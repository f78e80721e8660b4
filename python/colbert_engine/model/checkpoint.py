"""Finding and reading checkpoints: a local folder or a Hugging Face hub id, safetensors or
``pytorch_model.bin``, Jina / Hugging Face BERT / XLM-R tensor names mapped onto
:class:`colbert_engine.model.transformer.Transformer`, and the ColBERT head (a top-level
``linear.weight`` as Stanford ColBERT and Jina store it, or sentence-transformers ``Dense``
modules as PyLate stores it, e.g. ``1_Dense/``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

import torch

from colbert_engine.model.config import CheckpointError, read_json

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SMALL_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.txt", "artifact.metadata", "config_sentence_transformers.json", "modules.json",
               "*_Dense/config.json"]


@dataclasses.dataclass
class CheckpointFiles:
    folder: str            # config.json, tokenizer.json, ... live here
    weights: str           # model.safetensors or pytorch_model.bin
    source: str            # what the user passed, for messages


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a path."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or os.path.exists(name)


def _find_weights(folder: str) -> Optional[str]:
    for fname in WEIGHT_FILES:
        path = os.path.join(folder, fname)
        if os.path.isfile(path):
            return path
    return None


def resolve(name_or_path) -> CheckpointFiles:
    """A local checkpoint folder, or a hub id fetched (or found in the cache) through
    ``huggingface_hub``. Raises :class:`CheckpointError` naming what is missing."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path: expected a folder path or a hub id string, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        folder = name
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise CheckpointError(f"{folder}: no config.json; a checkpoint folder needs config.json, "
                                  f"tokenizer.json and {' or '.join(WEIGHT_FILES)}")
        weights = _find_weights(folder)
        if weights is None:
            raise CheckpointError(f"{folder}: no weights; expected {' or '.join(WEIGHT_FILES)}")
        return CheckpointFiles(folder, weights, name)
    if _looks_like_path(name) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise CheckpointError(f"{name}: no such checkpoint folder (and not a Hugging Face hub id)")
    return _from_hub(name)


def _from_hub(repo_id: str) -> CheckpointFiles:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(f"{repo_id}: not a local folder, and huggingface_hub is not installed") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    need = f"config.json, tokenizer.json and {' or '.join(WEIGHT_FILES)}"
    try:
        folder = snapshot_download(repo_id, allow_patterns=SMALL_FILES + ["*_Dense/*.safetensors",
                                                                          "*_Dense/pytorch_model.bin"])
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors ...
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub or cache"
        raise CheckpointError(f"{repo_id}: not a local folder, and its files ({need}) could not be found in "
                              f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    weights = _find_weights(folder)
    if weights is None:
        errors = []
        for fname in WEIGHT_FILES:
            try:
                weights = hf_hub_download(repo_id, fname)
                break
            except Exception as exc:
                errors.append(f"{fname}: {type(exc).__name__}")
        if weights is None:
            raise CheckpointError(f"{repo_id}: weights not found ({'; '.join(errors)})")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{repo_id}: the repository has no config.json")
    return CheckpointFiles(folder, weights, repo_id)


def read_tensors(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a safetensors file or a ``pytorch_model.bin`` (``weights_only=True``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read PyTorch weights ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


# Tensors that inference does not use and may appear in real checkpoints.
_IGNORED = re.compile(
    r"^(pooler\..*|lm_head\..*|cls\..*|embeddings\.position_ids|embeddings\.token_type_ids"
    r"|.*rotary_emb\.inv_freq|.*\.attention\.self\.rotary_emb\..*)$")
_PREFIXES = ("roberta.", "bert.", "model.", "encoder_model.")

_RULES = [
    (re.compile(r"^embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$"),
     r"embeddings.\1.weight"),
    (re.compile(r"^(?:emb_ln|embeddings\.LayerNorm|embeddings\.emb_ln)\.(weight|bias|gamma|beta)$"), r"embeddings.norm.\1"),
    # Jina (xlm-roberta-flash-implementation)
    (re.compile(r"^encoder\.layers\.(\d+)\.mixer\.Wqkv\.(weight|bias)$"), r"layers.\1.qkv.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mixer\.out_proj\.(weight|bias)$"), r"layers.\1.out.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.norm([12])\.(weight|bias)$"), r"layers.\1.norm\2.\3"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.fc([12])\.(weight|bias)$"), r"layers.\1.fc\2.\3"),
    # Hugging Face BERT / RoBERTa / XLM-R
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$"), r"layers.\1.\2.\3"),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$"), r"layers.\1.out.\2"),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias|gamma|beta)$"), r"layers.\1.norm1.\2"),
    (re.compile(r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$"), r"layers.\1.fc1.\2"),
    (re.compile(r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$"), r"layers.\1.fc2.\2"),
    (re.compile(r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias|gamma|beta)$"), r"layers.\1.norm2.\2"),
]


# ModernBERT (transformers' ModernBertModel names; ModernBertForMaskedLM adds the prefix
# "model." and an MLM head that inference does not use).
_MODERNBERT_IGNORED = re.compile(r"^(head\..*|decoder\..*|classifier\..*|.*rotary_emb\..*)$")
_MODERNBERT_RULES = [
    (re.compile(r"^embeddings\.tok_embeddings\.weight$"), r"embeddings.word_embeddings.weight"),
    (re.compile(r"^embeddings\.norm\.(weight|bias)$"), r"embeddings.norm.\1"),
    (re.compile(r"^layers\.(\d+)\.attn_norm\.(weight|bias)$"), r"layers.\1.norm1.\2"),
    (re.compile(r"^layers\.(\d+)\.attn\.Wqkv\.(weight|bias)$"), r"layers.\1.qkv.\2"),
    (re.compile(r"^layers\.(\d+)\.attn\.Wo\.(weight|bias)$"), r"layers.\1.out.\2"),
    (re.compile(r"^layers\.(\d+)\.mlp_norm\.(weight|bias)$"), r"layers.\1.norm2.\2"),
    (re.compile(r"^layers\.(\d+)\.mlp\.Wi\.(weight|bias)$"), r"layers.\1.fc1.\2"),
    (re.compile(r"^layers\.(\d+)\.mlp\.Wo\.(weight|bias)$"), r"layers.\1.fc2.\2"),
    (re.compile(r"^final_norm\.(weight|bias)$"), r"final_norm.\1"),
]


def map_state_dict(raw: Dict[str, torch.Tensor], expected: Dict[str, torch.Size], source: str,
                   model_type: str = "bert") -> Tuple[Dict[str, torch.Tensor], Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]]:
    """Rename checkpoint tensors onto the Transformer's parameter names.

    Args:
        raw: the checkpoint's tensors by their stored names.
        expected: ``name -> shape`` of the Transformer's parameters.
        source: file name for messages.
        model_type: ``config.json``'s; ``"modernbert"`` selects ModernBERT's names.

    Returns:
        ``(state_dict, head)``: tensors for ``Transformer.load_state_dict`` and the ColBERT
        head ``(weight (dim, hidden), bias (dim,) or None)`` when the file has a top-level
        ``linear.weight``, else None. Unknown, missing or mis-shaped tensors raise
        :class:`CheckpointError` listing them.
    """
    out: Dict[str, torch.Tensor] = {}
    split_qkv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    unknown = []
    head_weight = head_bias = None
    ignored, rules = (_MODERNBERT_IGNORED, _MODERNBERT_RULES) if model_type == "modernbert" else (_IGNORED, _RULES)
    for name, tensor in raw.items():
        if name == "linear.weight":
            head_weight = tensor
            continue
        if name == "linear.bias":
            head_bias = tensor
            continue
        short = name
        for prefix in _PREFIXES:
            if short.startswith(prefix):
                short = short[len(prefix):]
                break
        if ignored.match(short):
            continue
        for pattern, repl in rules:
            if pattern.match(short):
                target = pattern.sub(repl, short).replace(".gamma", ".weight").replace(".beta", ".bias")
                break
        else:
            unknown.append(name)
            continue
        parts = target.split(".")
        if parts[0] == "layers" and parts[2] in ("query", "key", "value"):
            split_qkv.setdefault((parts[1], parts[3]), {})[parts[2]] = tensor
            continue
        if target in out:
            raise CheckpointError(f"{source}: two tensors map onto {target} (one of them is {name})")
        out[target] = tensor
    for (layer, kind), parts in split_qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{source}: layer {layer} has {sorted(parts)} {kind} but not all of query/key/value")
        out[f"layers.{layer}.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise CheckpointError(f"{source}: unrecognised tensors: {shown}")
    missing = sorted(set(expected) - set(out))
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise CheckpointError(f"{source}: missing tensors (our names): {shown}")
    extra = sorted(set(out) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: tensors the config does not call for (our names): {', '.join(extra[:10])} "
                              "(is config.json's num_hidden_layers / position_embedding_type right?)")
    for target, tensor in out.items():
        if tuple(tensor.shape) != tuple(expected[target]):
            raise CheckpointError(f"{source}: tensor for {target} has shape {tuple(tensor.shape)}, config.json implies "
                                  f"{tuple(expected[target])}")
    head = None
    if head_weight is not None:
        if head_weight.dim() != 2:
            raise CheckpointError(f"{source}: linear.weight must be 2-D (dim, hidden), got {tuple(head_weight.shape)}")
        head = (head_weight, head_bias)
    elif head_bias is not None:
        raise CheckpointError(f"{source}: linear.bias without linear.weight")
    return out, head


def read_dense_modules(folder: str) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The projection of a sentence-transformers / PyLate checkpoint: the ``Dense`` modules
    listed in ``modules.json`` (e.g. ``1_Dense``), composed into one affine map when there
    are several. Only identity activations are accepted (PyLate's). None when there are none."""
    modules_path = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_path):
        return None
    import json

    with open(modules_path, encoding="utf-8") as f:
        modules = json.load(f)
    weight = bias = None
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        if not str(module.get("type", "")).endswith("Dense"):
            continue
        sub = os.path.join(folder, module.get("path", ""))
        cfg = read_json(os.path.join(sub, "config.json")) if os.path.isfile(os.path.join(sub, "config.json")) else {}
        act = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
        if not act.endswith("Identity"):
            raise CheckpointError(f"{sub}: Dense activation_function {act!r} is not supported (only Identity, "
                                  "as PyLate writes)")
        path = _find_weights(sub)
        if path is None:
            raise CheckpointError(f"{sub}: Dense module without weights ({' or '.join(WEIGHT_FILES)})")
        tensors = read_tensors(path)
        w = tensors.get("linear.weight")
        if w is None:
            raise CheckpointError(f"{path}: no linear.weight (has {sorted(tensors)[:5]})")
        b = tensors.get("linear.bias")
        w = w.float()
        b = None if b is None else b.float()
        if cfg.get("out_features") is not None and int(cfg["out_features"]) != w.shape[0]:
            raise CheckpointError(f"{sub}: config.json says out_features {cfg['out_features']}, linear.weight has "
                                  f"{w.shape[0]} rows")
        if cfg.get("use_residual"):
            # PyLate's Dense: y = W x + b + x (or + R x when the sizes differ): still affine.
            residual = tensors.get("residual.weight")
            if residual is not None:
                w = w + residual.float()
            elif w.shape[0] == w.shape[1]:
                w = w + torch.eye(w.shape[0])
            else:
                raise CheckpointError(f"{path}: use_residual with in_features != out_features needs "
                                      "residual.weight")
        if weight is None:
            weight, bias = w, b
        else:  # compose y = W2 (W1 x + b1) + b2
            if w.shape[1] != weight.shape[0]:
                raise CheckpointError(f"{sub}: Dense in_features {w.shape[1]} does not follow the previous "
                                      f"out_features {weight.shape[0]}")
            bias = (w @ bias if bias is not None else None)
            bias = b if bias is None else (bias + b if b is not None else bias)
            weight = w @ weight
    return None if weight is None else (weight, bias)
