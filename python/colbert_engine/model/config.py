"""Configuration read from a checkpoint folder: the transformer's shape (``config.json``) and
the ColBERT settings (markers, lengths, skiplist) from whichever file the checkpoint carries.

Where each ColBERT setting comes from, first match wins:

1. an explicit argument to :meth:`colbert_engine.Encoder.from_pretrained`;
2. ``config_sentence_transformers.json`` written by PyLate (``query_prefix``,
   ``document_prefix``, ``query_length``, ``document_length``, ``attend_to_expansion_tokens``,
   ``do_query_expansion``, ``skiplist_words``);
3. ``artifact.metadata`` written by Stanford's colbert-ai (``query_token_id``,
   ``doc_token_id``, ``query_maxlen``, ``doc_maxlen``, ``attend_to_mask_tokens``,
   ``mask_punctuation``);
4. ``query_length`` / ``query_maxlen`` / ``document_length`` / ``doc_maxlen`` in
   ``config.json``, when a checkpoint keeps them there;
5. defaults by checkpoint family (see :func:`default_settings`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from typing import Optional

SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "camembert")
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
MAX_DOCUMENT_LENGTH = 8192


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded: missing files, an unknown architecture,
    unknown or missing tensors. The message names the file or tensor at fault."""


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The transformer's shape, read from ``config.json`` (never hard-coded).

    ``position_embedding_type`` is ``"absolute"`` (a learned position table; BERT counts
    positions from 0, RoBERTa/XLM-R from ``pad_token_id + 1`` with padding at
    ``pad_token_id``) or ``"rotary"`` (Jina's XLM-RoBERTa: NeoX rotate-half on queries and
    keys, positions 0..L-1, base ``rotary_emb_base``).
    """

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    rotary_emb_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def roberta_positions(self) -> bool:
        """Absolute positions start at pad_token_id + 1 (fairseq convention)."""
        return self.model_type in ("xlm-roberta", "roberta", "camembert")

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "TransformerConfig":
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{source}: model_type {model_type!r} is not supported; expected one of "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}, modernbert (BERT / RoBERTa / XLM-RoBERTa / ModernBERT layouts)")
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "vocab_size") if k not in raw]
        if missing:
            raise CheckpointError(f"{source}: missing required keys {missing}")
        pos = raw.get("position_embedding_type", "absolute") or "absolute"
        if pos not in ("absolute", "rotary"):
            raise CheckpointError(f"{source}: position_embedding_type {pos!r} is not supported "
                                  "(absolute or rotary)")
        act = raw.get("hidden_act", "gelu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(f"{source}: hidden_act {act!r} is not supported; expected one of "
                                  f"{', '.join(SUPPORTED_ACTIVATIONS)}")
        if raw["hidden_size"] % raw["num_attention_heads"]:
            raise CheckpointError(f"{source}: hidden_size {raw['hidden_size']} is not a multiple of "
                                  f"num_attention_heads {raw['num_attention_heads']}")
        pad = raw.get("pad_token_id")
        if pad is None:
            pad = 1 if model_type != "bert" else 0
        return cls(
            model_type=model_type,
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            vocab_size=int(raw["vocab_size"]),
            hidden_act=act,
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
            type_vocab_size=int(raw.get("type_vocab_size", 2) or 0),
            pad_token_id=int(pad),
            position_embedding_type=pos,
            rotary_emb_base=float(raw.get("rotary_emb_base", 10000.0)),
        )

    @classmethod
    def from_file(cls, path: str) -> "TransformerConfig":
        return cls.from_dict(read_json(path), source=path)


@dataclasses.dataclass
class ColBERTSettings:
    """How texts become token sequences and which output vectors are kept.

    Attributes:
        query_marker: token inserted right after the start token of every query
            (``"[QueryMarker]"`` for Jina-ColBERT-v2, ``"[unused0]"`` for Stanford ColBERT);
            ``None`` inserts nothing.
        document_marker: same for documents (``"[DocumentMarker]"``, ``"[unused1]"``).
        query_length: every query is truncated / filled to this many tokens (32).
        document_length: documents are truncated to this many tokens, markers included.
        query_expansion: fill short queries with the mask token (ColBERT's query
            augmentation). When False they are filled with padding, not attended, and those
            output rows are zero vectors (they add nothing to a MaxSim score).
        attend_to_expansion_tokens: whether the filling mask tokens are attended as keys
            (True for Jina-ColBERT-v2, False for Stanford ColBERT and PyLate's default).
        skiplist_words: strings whose tokens are dropped from document outputs (Python's
            ``string.punctuation``, one character each, by default).
        skiplist_spellings: also drop the tokens of a skiplist word's own tokenization that
            spell it (``"▁."``, ``"Ġ."``); False drops vocabulary entries equal to the words
            only, as PyLate does (the ``"pylate"`` family's default).
    """

    query_marker: Optional[str] = "[QueryMarker]"
    document_marker: Optional[str] = "[DocumentMarker]"
    query_length: int = 32
    document_length: int = 512
    query_expansion: bool = True
    attend_to_expansion_tokens: bool = True
    skiplist_words: tuple = tuple(string.punctuation)
    skiplist_spellings: bool = True

    def validate(self) -> None:
        # Bounded like document_length: query_length=100000 ran a 100k-token attention per query.
        if not isinstance(self.query_length, int) or not 3 <= self.query_length <= MAX_DOCUMENT_LENGTH:
            raise ValueError(f"query_length: expected an int in [3, {MAX_DOCUMENT_LENGTH}], got {self.query_length!r}")
        if not isinstance(self.document_length, int) or not 3 <= self.document_length <= MAX_DOCUMENT_LENGTH:
            raise ValueError(f"document_length: expected an int in [3, {MAX_DOCUMENT_LENGTH}], "
                             f"got {self.document_length!r}")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _marker(value, where: str) -> Optional[str]:
    """A marker token exactly as stored: PyLate's ``"[Q] "`` keeps its trailing space (it is
    an added token of its own, e.g. id 30522 after BERT's vocabulary). ``""`` or None: none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    return value


# Every key PyLate 1.x writes into config_sentence_transformers.json (ColBERT.save), plus the
# sentence-transformers bookkeeping it copies through. Anything else is refused by name.
PYLATE_KEYS = frozenset({
    "model_type", "__version__", "prompts", "default_prompt_name", "similarity_fn_name", "query_prefix",
    "document_prefix", "query_length", "document_length", "attend_to_expansion_tokens", "skiplist_words",
    "do_query_expansion"})
_PYLATE_SETTING_KEYS = PYLATE_KEYS - {"model_type", "__version__", "prompts", "default_prompt_name",
                                      "similarity_fn_name"}


def is_pylate_config(st: dict) -> bool:
    """A ``config_sentence_transformers.json`` written by PyLate (a plain sentence-transformers
    model's file, e.g. all-MiniLM-L6-v2's, has none of PyLate's keys)."""
    return st.get("model_type") == "ColBERT" or any(k in st for k in _PYLATE_SETTING_KEYS)


def _check_pylate_config(st: dict, path: str) -> None:
    unknown = sorted(set(st) - PYLATE_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: field {unknown[0]!r} is not supported (known PyLate fields: "
                              f"{', '.join(sorted(PYLATE_KEYS))})")
    similarity = st.get("similarity_fn_name")
    if similarity not in (None, "MaxSim", "maxsim"):
        raise CheckpointError(f"{path}: similarity_fn_name {similarity!r} is not supported (only MaxSim, "
                              "late interaction)")
    prompts = st.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise CheckpointError(f"{path}: prompts: expected an object, got {type(prompts).__name__}")
    default = st.get("default_prompt_name")
    if default is not None and prompts.get(default):
        # PyLate would prepend this text to every query and document.
        raise CheckpointError(f"{path}: default_prompt_name {default!r} (a text prompt {prompts[default]!r} "
                              "prepended to every input) is not supported")
    for key in ("query_length", "document_length"):
        value = st.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 3):
            raise CheckpointError(f"{path}: {key}: expected an int >= 3, got {value!r}")
    for key in ("attend_to_expansion_tokens", "do_query_expansion"):
        if st.get(key) is not None and not isinstance(st[key], bool):
            raise CheckpointError(f"{path}: {key}: expected true or false, got {st[key]!r}")
    words = st.get("skiplist_words")
    if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) for w in words)):
        raise CheckpointError(f"{path}: skiplist_words: expected a list of strings")


def default_settings(family: str) -> ColBERTSettings:
    """Defaults by checkpoint family.

    - ``"jina"``: Jina-ColBERT-v2 (the tokenizer has ``[QueryMarker]``): 32 / 512, mask
      tokens attended.
    - ``"stanford"``: colbert-ai checkpoints (``HF_ColBERT``): ``[unused0]`` / ``[unused1]``,
      32 / 180, mask tokens not attended (colbert-ai's defaults).
    - ``"pylate"``: a ``config_sentence_transformers.json`` written by PyLate: PyLate's
      defaults for the fields it lacks (``"[Q] "`` / ``"[D] "``, 32 / 180, mask tokens not
      attended).
    - ``"plain"``: a Hugging Face encoder with no ColBERT head (e.g. all-MiniLM-L6-v2): no
      markers and no query expansion (the model was never trained with either): a query's
      vectors are the encoder's own token vectors and its rows past the end are zero, which
      add nothing to a MaxSim score. Measured on Vaswani (30 queries, 1,163 documents,
      exhaustive MaxSim, nDCG@10): no expansion 0.794; mask tokens not attended 0.712;
      attended 0.627.
    """
    if family == "jina":
        return ColBERTSettings()
    if family == "stanford":
        return ColBERTSettings(query_marker="[unused0]", document_marker="[unused1]", query_length=32,
                               document_length=180, attend_to_expansion_tokens=False)
    if family == "pylate":  # PyLate's own defaults for a field its file lacks
        return ColBERTSettings(query_marker="[Q] ", document_marker="[D] ", query_length=32, document_length=180,
                               attend_to_expansion_tokens=False, skiplist_spellings=False)
    if family == "plain":
        return ColBERTSettings(query_marker=None, document_marker=None, query_length=32,
                               document_length=512, query_expansion=False, attend_to_expansion_tokens=False)
    raise ValueError(f"family: unknown {family!r}")


def settings_from_files(folder: str, family: str) -> ColBERTSettings:
    """Defaults of ``family`` overridden by ``artifact.metadata`` then by PyLate's
    ``config_sentence_transformers.json`` (PyLate's own precedence)."""
    settings = default_settings(family)
    cfg_path = os.path.join(folder, "config.json")
    if os.path.isfile(cfg_path):  # lengths some checkpoints keep in config.json itself
        cfg = read_json(cfg_path)
        for key in ("query_length", "query_maxlen"):
            if isinstance(cfg.get(key), int):
                settings.query_length = cfg[key]
        for key in ("document_length", "doc_maxlen"):
            if isinstance(cfg.get(key), int):
                settings.document_length = cfg[key]
    meta_path = os.path.join(folder, "artifact.metadata")
    if os.path.isfile(meta_path):
        meta = read_json(meta_path)
        if "query_token_id" in meta:
            settings.query_marker = _marker(meta["query_token_id"], f"{meta_path}: query_token_id")
        if "doc_token_id" in meta:
            settings.document_marker = _marker(meta["doc_token_id"], f"{meta_path}: doc_token_id")
        if meta.get("query_maxlen"):
            settings.query_length = int(meta["query_maxlen"])
        if meta.get("doc_maxlen"):
            settings.document_length = int(meta["doc_maxlen"])
        if meta.get("attend_to_mask_tokens") is not None:
            settings.attend_to_expansion_tokens = bool(meta["attend_to_mask_tokens"])
        if meta.get("mask_punctuation") is False:
            settings.skiplist_words = ()
    st = read_pylate_config(folder)
    if st is not None:
        if "query_prefix" in st:
            settings.query_marker = _marker(st["query_prefix"], "config_sentence_transformers.json: query_prefix")
        if "document_prefix" in st:
            settings.document_marker = _marker(st["document_prefix"],
                                               "config_sentence_transformers.json: document_prefix")
        if st.get("query_length") is not None:
            settings.query_length = int(st["query_length"])
        if st.get("document_length") is not None:
            settings.document_length = int(st["document_length"])
        if st.get("do_query_expansion") is not None:
            settings.query_expansion = bool(st["do_query_expansion"])
        if st.get("attend_to_expansion_tokens") is not None:
            settings.attend_to_expansion_tokens = bool(st["attend_to_expansion_tokens"])
        if not settings.query_expansion:  # PyLate: no expansion, nothing to attend
            settings.attend_to_expansion_tokens = False
        if st.get("skiplist_words") is not None:
            settings.skiplist_words = tuple(st["skiplist_words"])
    return settings


def read_pylate_config(folder: str) -> Optional[dict]:
    """PyLate's ``config_sentence_transformers.json`` of ``folder``, checked (every field
    known, MaxSim similarity, no default text prompt, typed values); None when the folder
    has no such file or it is a plain sentence-transformers one."""
    path = os.path.join(folder, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return None
    st = read_json(path)
    if not is_pylate_config(st):
        return None
    _check_pylate_config(st, path)
    return st
