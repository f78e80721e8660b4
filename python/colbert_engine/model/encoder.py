"""``Encoder``: texts -> ColBERT token vectors (queries dense, documents packed).

Speed: documents are sorted by token count and cut into batches under a token budget, so a
batch is padded only to its own longest member; SDPA attention; ``torch.inference_mode``;
the head (projection + normalisation + drop of padding / punctuation) is one fused op
(:func:`colbert_engine.ops.project`). Outputs come back in input order.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from colbert_engine import ops
from colbert_engine.model import checkpoint as ckpt
from colbert_engine.model.config import (MAX_DOCUMENT_LENGTH, CheckpointError, ColBERTSettings,
                                         TransformerConfig, read_json, read_pylate_config, settings_from_files)
from colbert_engine.model.modernbert import ModernBert, ModernBertConfig
from colbert_engine.model.tokenization import ColBERTTokenizer, load_tokenizer
from colbert_engine.model.transformer import Transformer

_SETTING_NAMES = {f.name for f in dataclasses.fields(ColBERTSettings)}


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _check_texts(texts, name: str = "texts") -> List[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name}: expected a list of strings, got a single str (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name}: expected a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}]: expected str, got {type(t).__name__}")
        if not t.isascii():
            try:  # a lone surrogate ("\ud800") made the tokenizer fail with an opaque TypeError
                t.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"{name}[{i}]: not valid Unicode text ({err.reason} at position {err.start})") from None
    return texts


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    return int(batch_size)


class Encoder:
    """A ColBERT encoder.

    Attributes:
        model: the transformer alone (:class:`~colbert_engine.model.transformer.Transformer`,
            or :class:`~colbert_engine.model.modernbert.ModernBert`):
            ``encoder.model(input_ids (B, L) int64, attention_mask (B, L))`` -> last hidden
            states ``(B, L, hidden)``.
        tokenizer: the ``tokenizers.Tokenizer``.
        colbert_tokenizer: query/document id layouts
            (:class:`~colbert_engine.model.tokenization.ColBERTTokenizer`).
        settings: markers, lengths, skiplist (:class:`~colbert_engine.model.config.ColBERTSettings`).
        head_weight, head_bias: the ColBERT projection ``(D0, hidden)`` / ``(D0,)``, or None for
            a plain encoder with no ColBERT head (then vectors are the L2-normalised last hidden
            states, ``dim == hidden``).
        dim: output size (the first ``dim`` coordinates of the projection, renormalised).
        device, dtype: where and in what precision the transformer runs.
        max_tokens_per_batch: document batches hold at most this many (padded) tokens.
    """

    def __init__(self, model: Transformer, tokenizer, colbert_tokenizer: ColBERTTokenizer,
                 head: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]], dim: Optional[int] = None,
                 device=None, dtype: Optional[torch.dtype] = None, matryoshka_dims: Sequence[int] = ()):
        try:
            self.device = torch.device(device) if device is not None else (
                torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: {device!r} is not a device: {err}") from None
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: {dtype} is not supported; expected float32, float16 or bfloat16")
        self.dtype = dtype or _default_dtype(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.colbert_tokenizer = colbert_tokenizer
        self.settings = colbert_tokenizer.settings
        hidden = model.config.hidden_size
        if head is not None:
            weight, bias = head
            if weight.shape[1] != hidden:
                raise CheckpointError(f"head: linear.weight has {weight.shape[1]} input features, the transformer's "
                                      f"hidden size is {hidden}")
            self.head_weight = weight.to(device=self.device, dtype=self.dtype)
            self.head_bias = None if bias is None else bias.to(device=self.device, dtype=torch.float32)
            full = weight.shape[0]
        else:
            self.head_weight = self.head_bias = None
            full = hidden
        if dim is None:
            dim = full
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full:
            raise ValueError(f"dim: expected an int in [1, {full}] (the head's output size), got {dim!r}")
        if head is None and dim != hidden:
            raise ValueError(f"dim: this checkpoint has no ColBERT projection head; its vectors are the "
                             f"{hidden}-dim hidden states, got dim={dim}")
        if matryoshka_dims and dim != full and dim not in matryoshka_dims:
            raise ValueError(f"dim: {dim} is not one of the checkpoint's matryoshka_dimensions {sorted(matryoshka_dims)}")
        self.dim = dim
        self.max_tokens_per_batch = 16384 if self.device.type == "cuda" else 8192
        self._skiplist = torch.tensor(colbert_tokenizer.skiplist_ids, dtype=torch.int64)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, name_or_path, device=None, dtype=None, dim=None, query_length=None,
                        document_length=None, **settings) -> "Encoder":
        """Load a checkpoint: a local folder (``config.json``, ``model.safetensors`` or
        ``pytorch_model.bin``, ``tokenizer.json``) or a Hugging Face hub id (downloaded or
        found in the cache; offline without a cache raises a :class:`CheckpointError`
        naming the files it needs).

        Supported: Jina-ColBERT-v2 (rotary XLM-RoBERTa, ``linear.weight`` head), Stanford
        ColBERT (``HF_ColBERT``, ``artifact.metadata``), PyLate checkpoints as PyLate saves
        them (``*_Dense`` modules, ``config_sentence_transformers.json``, markers such as
        ``"[Q] "`` used exactly as stored), ModernBERT-based ones (``model_type:
        "modernbert"``), and plain Hugging Face BERT / XLM-R / ModernBERT encoders with no head (vectors = L2-normalised last hidden
        states; no markers by default).

        Args:
            device: ``"cpu"``, ``"cuda"``, ... (default: cuda when available).
            dtype: transformer precision (default fp32 on CPU, bf16 (else fp16) on GPU).
            dim: output size; with a head of 128, 96 or 64 take the first coordinates and
                renormalise (Matryoshka).
            query_length, document_length: override the checkpoint's lengths.
            **settings: any other :class:`~colbert_engine.model.config.ColBERTSettings`
                field (``query_marker``, ``document_marker``, ``query_expansion``,
                ``attend_to_expansion_tokens``, ``skiplist_words``); a marker of None means
                none.
        """
        unknown = set(settings) - _SETTING_NAMES
        if unknown:
            raise TypeError(f"from_pretrained: unknown arguments {sorted(unknown)}; ColBERT settings are "
                            f"{sorted(_SETTING_NAMES)}")
        files = ckpt.resolve(name_or_path)
        raw_config = read_json(os.path.join(files.folder, "config.json"))
        config_path = os.path.join(files.folder, "config.json")
        if raw_config.get("model_type") == "modernbert":
            config, model_class = ModernBertConfig.from_dict(raw_config, source=config_path), ModernBert
        else:
            config, model_class = TransformerConfig.from_dict(raw_config, source=config_path), Transformer
        tokenizer = load_tokenizer(files.folder, config.model_type)

        raw_tensors = ckpt.read_tensors(files.weights)
        rows = next((t.shape[0] for k, t in raw_tensors.items()
                     if k.endswith(("embeddings.word_embeddings.weight", "embeddings.tok_embeddings.weight"))), None)
        if rows is not None and rows != config.vocab_size:
            # The table's size is the truth (a published loader of Jina-ColBERT-v2 uses 250,004
            # rows where the config may say 250,002); ids only need to fall inside it.
            config = dataclasses.replace(config, vocab_size=int(rows))
        if tokenizer.get_vocab_size() > config.vocab_size:
            raise CheckpointError(f"{files.source}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the "
                                  f"embedding table only {config.vocab_size} rows")
        with torch.device("meta"):  # no random init of ~560M parameters just to overwrite them
            model = model_class(config)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        state, head = ckpt.map_state_dict(raw_tensors, expected, files.weights, model_type=config.model_type)
        del raw_tensors
        model.load_state_dict(state, strict=True, assign=True)
        dense = ckpt.read_dense_modules(files.folder)
        if dense is not None:
            if head is not None:
                raise CheckpointError(f"{files.source}: both a top-level linear.weight and sentence-transformers "
                                      "Dense modules; cannot tell which is the ColBERT head")
            head = dense

        architectures = raw_config.get("architectures") or []
        if read_pylate_config(files.folder) is not None:
            family = "pylate"
        elif tokenizer.token_to_id("[QueryMarker]") is not None:
            family = "jina"
        elif "HF_ColBERT" in architectures or os.path.isfile(os.path.join(files.folder, "artifact.metadata")):
            family = "stanford"
        elif head is not None and tokenizer.token_to_id("[unused0]") is not None:
            family = "stanford"
        else:
            family = "plain"
        colbert_settings = settings_from_files(files.folder, family)
        if query_length is not None:
            colbert_settings.query_length = query_length
        if document_length is not None:
            colbert_settings.document_length = document_length
        for key, value in settings.items():
            if key == "skiplist_words" and value is not None:
                value = tuple(value)
            setattr(colbert_settings, key, value)
        colbert_settings.validate()
        longest = config.max_position_embeddings - (config.pad_token_id + 1 if config.roberta_positions else 0)
        if config.position_embedding_type == "absolute" and colbert_settings.document_length > longest:
            if document_length is not None:
                raise ValueError(f"document_length: {document_length} exceeds what the checkpoint's position table "
                                 f"covers ({longest})")
            colbert_settings.document_length = min(longest, MAX_DOCUMENT_LENGTH)
        if config.position_embedding_type == "absolute" and colbert_settings.query_length > longest:
            raise ValueError(f"query_length: {colbert_settings.query_length} exceeds what the checkpoint's position "
                             f"table covers ({longest})")
        colbert_tokenizer = ColBERTTokenizer(tokenizer, colbert_settings, files.folder,
                                             pad_token_id=raw_config.get("pad_token_id"))
        matryoshka = tuple(raw_config.get("matryoshka_dimensions") or ())
        if dim is None and isinstance(raw_config.get("truncate_dim"), int) and head is not None:
            dim = raw_config["truncate_dim"]  # the checkpoint's own default output size
        encoder = cls(model, tokenizer, colbert_tokenizer, head, dim=dim, device=device, dtype=dtype,
                      matryoshka_dims=matryoshka)
        encoder.family = family
        encoder.source = files.source
        return encoder

    # ------------------------------------------------------------------ encoding

    def _project(self, hidden, mask, out_dtype):
        return ops.project(hidden, self.head_weight, self.head_bias, mask=mask,
                           dim=self.dim if self.head_weight is not None else None, out_dtype=out_dtype)

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Queries -> ``(nq, query_length, dim)`` float32 on the encoder's device.

        Each query is ``<s> [QueryMarker] text </s>`` filled to ``query_length`` with the mask
        token (attended or not per ``settings.attend_to_expansion_tokens``); every row is
        kept. Without query expansion, rows past the query's end are zero vectors.
        """
        texts = _check_texts(texts)
        batch_size = _check_batch_size(batch_size)
        length = self.settings.query_length
        if not texts:
            return torch.empty((0, length, self.dim), dtype=torch.float32, device=self.device)
        ids, attention, valid = self.colbert_tokenizer.queries(texts)
        out = torch.empty((len(texts), length, self.dim), dtype=torch.float32, device=self.device)
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            input_ids = torch.from_numpy(ids[start:stop]).to(self.device)
            mask = torch.from_numpy(attention[start:stop]).to(self.device)
            hidden = self.model(input_ids, mask)
            out[start:stop] = self._project(hidden, None, torch.float32)
        if not valid.all():
            out *= torch.from_numpy(valid).to(self.device).unsqueeze(-1)
        return out

    def _batches(self, lengths: np.ndarray, batch_size: int) -> List[np.ndarray]:
        """Indices sorted by decreasing length, cut so that a batch holds at most
        ``batch_size`` texts and ``len(batch) * longest <= max_tokens_per_batch`` (one text
        always fits)."""
        order = np.argsort(-lengths, kind="stable")
        batches, start = [], 0
        budget = max(1, int(self.max_tokens_per_batch))
        while start < len(order):
            longest = int(lengths[order[start]])
            size = max(1, min(batch_size, budget // max(longest, 1)))
            batches.append(order[start:start + size])
            start += size
        return batches

    @torch.inference_mode()
    def encode_documents(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Documents -> packed token vectors (DESIGN.md section 1).

        Each document is ``<s> [DocumentMarker] text </s>`` truncated to
        ``settings.document_length`` tokens; the vectors of padding and skiplist
        (punctuation) tokens are dropped.

        Returns:
            ``doc_emb (T, dim)`` (float32 on CPU, float16 on GPU) and ``doc_offsets (n + 1,)``
            int64 (``doc_offsets[i + 1] - doc_offsets[i]`` = document i's kept tokens), both on
            the encoder's device, documents in input order.
        """
        texts = _check_texts(texts)
        batch_size = _check_batch_size(batch_size)
        out_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if not texts:
            return (torch.empty((0, self.dim), dtype=out_dtype, device=self.device),
                    torch.zeros(1, dtype=torch.int64, device=self.device))
        seqs = self.colbert_tokenizer.documents(texts)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        batches = self._batches(lengths, batch_size)
        iterator = batches
        if show_progress:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc="encoding documents", unit="batch")
        pad = self.colbert_tokenizer.pad_id
        skiplist = self._skiplist.to(self.device)
        chunks, counts = [], []
        for batch in iterator:
            longest = int(lengths[batch[0]])
            ids = np.full((len(batch), longest), pad, dtype=np.int64)
            attention = np.zeros((len(batch), longest), dtype=bool)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = seqs[i]
                attention[row, : lengths[i]] = True
            input_ids = torch.from_numpy(ids).to(self.device)
            mask = torch.from_numpy(attention).to(self.device)
            hidden = self.model(input_ids, mask)
            keep = mask & ~torch.isin(input_ids, skiplist) if skiplist.numel() else mask
            emb, offsets = self._project(hidden, keep, out_dtype)
            chunks.append(emb)
            counts.append(offsets.diff())
        return _restore_order(chunks, counts, np.concatenate(batches), self.device)


def _restore_order(chunks, counts, sorted_order: np.ndarray, device):
    """Packed outputs in sorted order -> packed outputs in input order."""
    emb_sorted = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    counts_sorted = torch.cat(counts).to(torch.int64)
    n = counts_sorted.numel()
    starts_sorted = torch.cumsum(counts_sorted, 0) - counts_sorted
    position = torch.empty(n, dtype=torch.int64)  # position[input index] = sorted index
    position[torch.from_numpy(sorted_order)] = torch.arange(n)
    position = position.to(counts_sorted.device)
    counts_in = counts_sorted[position]
    starts_in = starts_sorted[position]
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=counts_sorted.device)
    torch.cumsum(counts_in, 0, out=offsets[1:])
    total = int(offsets[-1])
    # gather index: for token t of input document i, starts_in[i] + (t - offsets[i])
    shift = torch.repeat_interleave(starts_in - offsets[:-1], counts_in, output_size=total)
    gather = torch.arange(total, device=shift.device) + shift
    return emb_sorted.index_select(0, gather), offsets.to(device)
