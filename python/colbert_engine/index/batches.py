"""Documents in, batches out: the input forms ``build``/``add`` accept, cut into batches of
whole documents, and the document sample the codec is trained on."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from colbert_engine.index.codec import sample_doc_count
from colbert_engine.ops import _validate as V

# Tokens per batch when a packed collection is cut into batches for compression.
BATCH_TOKENS = 1 << 18
_FINITE_CHUNK_ROWS = 1 << 14


def id_list(ids, name: str) -> list:
    """A collection of external ids as a list. A str or bytes is not a collection of ids (it
    used to be iterated: metadata("d1") looked up "d" and "1", delete(b"d1") ids 100 and 49)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__} {ids!r:.60}; wrap one id in a list")
    if isinstance(ids, (np.ndarray, torch.Tensor)):
        return ids.tolist()
    try:
        return list(ids)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__}") from None


def check_batch(emb, offsets, where: str):
    emb = V.as_tensor(emb, f"{where}doc_emb")
    V.check_dtype(emb, f"{where}doc_emb", V.FLOAT_DTYPES)
    V.check_ndim(emb, f"{where}doc_emb", (2,))
    # before k-means spreads a NaN; chunked: isfinite makes a bool and an fp32 |x| copy of
    # what it checks (50 MB at 2^16 rows of dim 128, a build's largest transient at 1M tokens)
    for start in range(0, emb.shape[0], _FINITE_CHUNK_ROWS):
        V.check_finite(emb[start:start + _FINITE_CHUNK_ROWS], f"{where}doc_emb")
    if offsets is None:
        raise ValueError(f"{where}doc_offsets: required with a packed doc_emb tensor")
    offsets = V.check_offsets(V.as_tensor(offsets, f"{where}doc_offsets"), f"{where}doc_offsets", emb.shape[0])
    return emb, offsets


def _as_list(values, n: int, name: str):
    if values is None:
        return None
    if isinstance(values, (str, bytes, dict)):  # ids="abc" used to store the ids 'a', 'b', 'c'
        raise TypeError(f"{name}: expected one entry per document, got {type(values).__name__} {values!r:.60}")
    if isinstance(values, (np.ndarray, torch.Tensor)):
        values = values.tolist()
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name}: expected one entry per document, got {type(values).__name__}") from None
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} entries for {n} documents")
    return values


def document_runs(offsets: torch.Tensor, max_tokens: int) -> Iterator[tuple[int, int]]:
    """``(first, end)`` document ranges covering ``offsets``' documents in order, each of
    about ``max_tokens`` tokens (at least one document)."""
    n_docs = offsets.numel() - 1
    doc = 0
    while doc < n_docs:
        end = int(torch.searchsorted(offsets, offsets[doc] + max_tokens, right=True)) - 1
        end = min(max(end, doc + 1), n_docs)
        yield doc, end
        doc = end


def _packed_batches(emb, offsets, ids, metadata) -> Iterator[tuple]:
    """Cut a packed collection into batches of whole documents, about BATCH_TOKENS each."""
    for doc, end in document_runs(offsets, BATCH_TOKENS):
        t0, t1 = int(offsets[doc]), int(offsets[end])
        yield (emb[t0:t1], offsets[doc:end + 1] - t0, None if ids is None else ids[doc:end],
               None if metadata is None else metadata[doc:end])


def _stream_batches(batches: Iterable) -> Iterator[tuple]:
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 4:
            raise TypeError(f"doc_emb: batch {i} must be a tuple (emb, offsets[, ids[, metadata]]), "
                            f"got {type(batch).__name__}")
        emb, offsets = check_batch(batch[0], batch[1], f"batch {i}: ")
        n = offsets.numel() - 1
        ids = _as_list(batch[2], n, f"batch {i}: ids") if len(batch) > 2 else None
        metadata = _as_list(batch[3], n, f"batch {i}: metadata") if len(batch) > 3 else None
        yield emb, offsets, ids, metadata


def batches_of(doc_emb, doc_offsets, ids, metadata) -> Iterator[tuple]:
    """``(emb, offsets, ids or None, metadata or None)`` batches of whole documents from a
    packed collection or from an iterable of batches (checked as they arrive)."""
    if isinstance(doc_emb, (torch.Tensor, np.ndarray)):
        emb, offsets = check_batch(doc_emb, doc_offsets, "")
        n = offsets.numel() - 1
        return _packed_batches(emb, offsets, _as_list(ids, n, "ids"), _as_list(metadata, n, "metadata"))
    if doc_offsets is not None or ids is not None or metadata is not None:
        raise ValueError("doc_offsets/ids/metadata: give them inside each batch when doc_emb is an iterable")
    return _stream_batches(doc_emb)


def sample_documents(lengths: torch.Tensor, seed: int, max_tokens: int) -> torch.Tensor:
    """Document indices (int64, ascending) of ColBERT's ``min(1 + 16 sqrt(120 n), n)``
    random documents, taken in random order until ``max_tokens`` tokens are reached."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(lengths.numel(), generator=gen)[:sample_doc_count(lengths.numel())]
    take = int(torch.searchsorted(torch.cumsum(lengths[order], 0), max_tokens)) + 1
    return order[:take].sort().values


def sample_rows(lengths: torch.Tensor, seed: int, max_tokens: int) -> torch.Tensor:
    """Token indices (int64, ascending) of :func:`sample_documents`' documents (what
    k-means and the bucket statistics will use): the sample never grows with the collection
    beyond ``max_tokens``, and is a list of rows, not a copy of the vectors."""
    chosen = torch.zeros(lengths.numel(), dtype=torch.bool)
    chosen[sample_documents(lengths, seed, max_tokens)] = True
    token_mask = torch.repeat_interleave(chosen, lengths, output_size=int(lengths.sum()))
    return torch.nonzero(token_mask).flatten()
