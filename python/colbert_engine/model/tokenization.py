"""Texts -> token ids with ColBERT's query / document conventions, on a fast
``tokenizers.Tokenizer``.

Query:    ``<s> [QueryMarker] text </s> <mask> <mask> ...`` exactly ``query_length`` ids.
Document: ``<s> [DocumentMarker] text </s>`` at most ``document_length`` ids.
(``[CLS]`` / ``[SEP]`` / ``[MASK]`` for BERT vocabularies; no marker when the settings say so.)
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from colbert_engine.model.config import CheckpointError, ColBERTSettings, read_json

_CANDIDATES = {
    "cls": ("<s>", "[CLS]"),
    "sep": ("</s>", "[SEP]"),
    "pad": ("<pad>", "[PAD]"),
    "mask": ("<mask>", "[MASK]"),
}
_SUBWORD_MARKS = ("▁", "Ġ", "##")


def load_tokenizer(folder: str, model_type: str):
    """``tokenizer.json`` of a checkpoint folder (or, for BERT folders with only
    ``vocab.txt``, a WordPiece tokenizer built from it), with truncation and padding turned
    off: this module truncates and pads itself."""
    from tokenizers import Tokenizer

    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        try:
            tok = Tokenizer.from_file(path)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read by the tokenizers library ({exc})") from None
    elif model_type == "bert" and os.path.isfile(os.path.join(folder, "vocab.txt")):
        from tokenizers.implementations import BertWordPieceTokenizer

        cfg_path = os.path.join(folder, "tokenizer_config.json")
        lower = read_json(cfg_path).get("do_lower_case", True) if os.path.isfile(cfg_path) else True
        tok = BertWordPieceTokenizer(os.path.join(folder, "vocab.txt"), lowercase=bool(lower))._tokenizer
    else:
        raise CheckpointError(f"{folder}: no tokenizer.json (a fast tokenizer file is required"
                              f"{'; or vocab.txt for BERT' if model_type == 'bert' else ''})")
    tok.no_truncation()
    tok.no_padding()
    return tok


def _special_names(folder: str) -> dict:
    names = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, fname)
        if not os.path.isfile(path):
            continue
        data = read_json(path)
        for role in ("cls", "sep", "pad", "mask", "bos", "eos"):
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and role not in names:
                names[role] = value
    return names


class ColBERTTokenizer:
    """Token ids for queries and documents; see the module docstring for the layouts.

    Attributes: ``tokenizer`` (``tokenizers.Tokenizer``), ``settings``
    (:class:`~colbert_engine.model.config.ColBERTSettings`), ``cls_id``, ``sep_id``,
    ``pad_id``, ``mask_id``, ``query_marker_id`` / ``document_marker_id`` (None when no
    marker), ``skiplist_ids`` (sorted list of ints).
    """

    def __init__(self, tokenizer, settings: ColBERTSettings, folder: Optional[str] = None,
                 pad_token_id: Optional[int] = None):
        self.tokenizer = tokenizer
        self.settings = settings
        names = _special_names(folder) if folder else {}
        self.cls_id = self._special("cls", names.get("cls") or names.get("bos"))
        self.sep_id = self._special("sep", names.get("sep") or names.get("eos"))
        self.pad_id = pad_token_id if pad_token_id is not None else self._special("pad", names.get("pad"))
        self.mask_id = self._special("mask", names.get("mask"))
        self.query_marker_id = self._marker(settings.query_marker, "query_marker")
        self.document_marker_id = self._marker(settings.document_marker, "document_marker")
        self.skiplist_ids = self._skiplist(settings.skiplist_words, settings.skiplist_spellings)

    def _special(self, role: str, name: Optional[str]) -> int:
        for candidate in ((name,) if name else ()) + _CANDIDATES[role]:
            token_id = self.tokenizer.token_to_id(candidate)
            if token_id is not None:
                return token_id
        raise CheckpointError(f"tokenizer: no {role} token (looked for {', '.join(_CANDIDATES[role])})")

    def _marker(self, marker: Optional[str], what: str) -> Optional[int]:
        if marker is None:
            return None
        token_id = self.tokenizer.token_to_id(marker)
        if token_id is None:
            raise CheckpointError(f"{what}: {marker!r} is not a token of this tokenizer; pass {what}=None "
                                  "for no marker or name a token the vocabulary has")
        return token_id

    def _skiplist(self, words: Sequence[str], spellings: bool = True) -> List[int]:
        """Ids of every skiplist word as a vocabulary entry, plus (``spellings``) every token
        of the word's own tokenization that spells the word (``"▁."`` for SentencePiece)."""
        unk = {self.tokenizer.token_to_id(t) for t in ("<unk>", "[UNK]")}
        specials = {self.cls_id, self.sep_id, self.pad_id, self.mask_id}
        ids = set()
        for word in words:
            token_id = self.tokenizer.token_to_id(word)
            if token_id is not None:
                ids.add(token_id)
            if not spellings:
                continue
            enc = self.tokenizer.encode(word, add_special_tokens=False)
            for token_id, token in zip(enc.ids, enc.tokens):
                stripped = token
                for mark in _SUBWORD_MARKS:
                    stripped = stripped.replace(mark, "")
                if stripped.strip() == word:
                    ids.add(token_id)
        return sorted(ids - unk - specials - {None})

    # ------------------------------------------------------------------ encoding

    def _body_ids(self, texts: Sequence[str]) -> List[List[int]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def _wrap(self, body: List[int], marker: Optional[int], max_length: int) -> List[int]:
        head = [self.cls_id] if marker is None else [self.cls_id, marker]
        return head + body[: max_length - len(head) - 1] + [self.sep_id]

    def queries(self, texts: Sequence[str]):
        """``(input_ids (n, Lq) int64, attention_mask (n, Lq) bool, valid (n, Lq) bool)``:
        ``valid`` marks rows that carry a token vector (all True with query expansion)."""
        s = self.settings
        length = s.query_length
        n = len(texts)
        ids = np.full((n, length), self.mask_id if s.query_expansion else self.pad_id, dtype=np.int64)
        attention = np.zeros((n, length), dtype=bool)
        valid = np.zeros((n, length), dtype=bool)
        for row, body in enumerate(self._body_ids(texts)):
            seq = self._wrap(body, self.query_marker_id, length)
            ids[row, : len(seq)] = seq
            attention[row, : len(seq)] = True
            valid[row, : len(seq)] = True
        if s.query_expansion:
            valid[:] = True
            if s.attend_to_expansion_tokens:
                attention[:] = True
        return ids, attention, valid

    def documents(self, texts: Sequence[str]) -> List[List[int]]:
        """One id list per document, markers included, at most ``document_length`` ids."""
        length = self.settings.document_length
        return [self._wrap(body, self.document_marker_id, length) for body in self._body_ids(texts)]
