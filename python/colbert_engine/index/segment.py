"""Segments: the immutable array files of one build / add / compact, and their reader.

A segment holds ``n_docs`` documents with local doc ids ``0..n_docs-1``; the index gives
it a ``doc_base`` so that internal doc id = doc_base + local id. Files (``<name>.<array>.npy``):

- codes        int32   (T,)                 centroid of each token
- residuals    uint8   (T, dim*nbits/8)      packed residual buckets
- inv_norms    float16 (T,)                 1 / ||C[code] + r~|| per token
- doc_offsets  int64   (n_docs + 1,)        packed layout of the tokens
- ivf          int32   (P,)                 per centroid, sorted unique local doc ids
- ivf_offsets  int64   (K + 1,)             centroid c's list is ivf[ivf_offsets[c]:ivf_offsets[c+1]]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.codec import Codec

ARRAYS = ("codes", "residuals", "inv_norms", "doc_offsets", "ivf", "ivf_offsets")
# Tokens compressed per kernel call: bounds the transient fp32 copy (and GPU memory).
COMPRESS_CHUNK_TOKENS = 1 << 16
_IVF_CHUNK_TOKENS = 1 << 20  # its int64 temporaries (about 6 per token) are the IVF step's peak


def file_name(segment: str, array: str) -> str:
    return f"{segment}.{array}.npy"


def build_ivf(codes: np.ndarray, doc_offsets: np.ndarray, n_centroids: int):
    """Inverted lists: for each centroid the sorted unique local doc ids having a token there.

    codes int32 (T,), doc_offsets int64 (n_docs + 1,) -> (ivf int32 (P,), ivf_offsets int64 (K+1,)).
    Works through the documents in token chunks, keeping only unique (centroid, doc) pairs.
    """
    n_docs = doc_offsets.shape[0] - 1
    lengths = np.diff(doc_offsets)
    keys = []
    doc = 0
    while doc < n_docs:
        # whole documents, about _IVF_CHUNK_TOKENS tokens at a time
        end = int(np.searchsorted(doc_offsets, doc_offsets[doc] + _IVF_CHUNK_TOKENS, side="right")) - 1
        end = min(max(end, doc + 1), n_docs)
        begin_tok, end_tok = int(doc_offsets[doc]), int(doc_offsets[end])
        owners = np.repeat(np.arange(doc, end, dtype=np.int64), lengths[doc:end])
        chunk_codes = np.asarray(codes[begin_tok:end_tok], dtype=np.int64)
        keys.append(np.unique(chunk_codes * n_docs + owners))
        doc = end
    if keys:
        keys = np.sort(np.concatenate(keys), kind="stable")
    else:
        keys = np.zeros(0, dtype=np.int64)
    ivf = (keys % max(n_docs, 1)).astype(np.int32)
    counts = np.bincount(keys // max(n_docs, 1), minlength=n_centroids)
    ivf_offsets = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=ivf_offsets[1:])
    return ivf, ivf_offsets


class SegmentWriter:
    """Compresses packed batches straight into a segment's files (nothing kept in RAM
    but the document lengths), then writes the offsets and inverted lists."""

    def __init__(self, folder: Path, name: str, codec: Codec, device: torch.device):
        self.folder, self.name, self.codec, self.device = folder, name, codec, device
        packed = codec.dim * codec.nbits // 8
        self.codes = F.NpyAppender(folder, file_name(name, "codes"), np.int32)
        self.residuals = F.NpyAppender(folder, file_name(name, "residuals"), np.uint8, (packed,))
        self.inv_norms = F.NpyAppender(folder, file_name(name, "inv_norms"), np.float16)
        self.lengths: list[np.ndarray] = []

    def add(self, emb: torch.Tensor, offsets: torch.Tensor) -> None:
        """emb ``(T, dim)`` float, offsets int64 ``(n + 1,)`` (already checked)."""
        c = self.codec
        for start in range(0, emb.shape[0], COMPRESS_CHUNK_TOKENS):
            chunk = emb[start:start + COMPRESS_CHUNK_TOKENS].to(self.device)
            codes, residuals, inv_norms = c.compress(chunk)
            self.codes.append(codes.cpu())
            self.residuals.append(residuals.cpu())
            self.inv_norms.append(inv_norms.cpu())
        self.lengths.append(np.diff(offsets.cpu().numpy()))

    def add_compressed(self, codes, residuals, inv_norms, lengths) -> None:
        """Append already-compressed tokens (compaction, imports)."""
        self.codes.append(codes)
        self.residuals.append(residuals)
        self.inv_norms.append(inv_norms)
        self.lengths.append(np.asarray(lengths, dtype=np.int64))

    @property
    def n_docs(self) -> int:
        return int(sum(x.shape[0] for x in self.lengths))

    def finish(self, doc_base: int) -> dict:
        """Close every file (fsync + rename) and return the segment's manifest entry."""
        files = {}
        for array, appender in (("codes", self.codes), ("residuals", self.residuals),
                                ("inv_norms", self.inv_norms)):
            files[array] = appender.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        doc_offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=doc_offsets[1:])
        files["doc_offsets"] = F.write_npy(self.folder, file_name(self.name, "doc_offsets"), doc_offsets)
        codes = np.load(self.folder / file_name(self.name, "codes"), mmap_mode="r")
        ivf, ivf_offsets = build_ivf(codes, doc_offsets, self.codec.centroids.shape[0])
        del codes
        files["ivf"] = F.write_npy(self.folder, file_name(self.name, "ivf"), ivf)
        files["ivf_offsets"] = F.write_npy(self.folder, file_name(self.name, "ivf_offsets"), ivf_offsets)
        return {"name": self.name, "doc_base": doc_base, "n_docs": int(lengths.shape[0]),
                "n_tokens": int(doc_offsets[-1]),
                "files": {file_name(self.name, a): files[a] for a in ARRAYS}}

    def abort(self) -> None:
        for appender in (self.codes, self.residuals, self.inv_norms):
            appender.abort()


@dataclass
class Segment:
    """A segment opened for search: torch views (memory-mapped on CPU, copies on GPU)."""

    name: str
    doc_base: int
    n_docs: int
    n_tokens: int
    codes: torch.Tensor        # int32 (T,)
    residuals: torch.Tensor    # uint8 (T, dim*nbits/8)
    inv_norms: torch.Tensor    # float16 (T,)
    doc_offsets: torch.Tensor  # int64 (n_docs + 1,)
    ivf: torch.Tensor          # int32 (P,)
    ivf_offsets: torch.Tensor  # int64 (K + 1,)
    nbytes: int

    @classmethod
    def open(cls, folder: Path, entry: dict, device: torch.device, verify: bool, n_centroids: int) -> "Segment":
        """Map (or copy to ``device``) a segment's arrays. Their bounds are checked always,
        ``verify`` or not (FORMAT.md, "Reading and checks"): the kernels index with them."""
        arrays = {}
        nbytes = 0
        for array in ARRAYS:
            name = file_name(entry["name"], array)
            meta = entry["files"][name]
            arrays[array] = F.load_npy(folder, name, meta, verify)
            nbytes += meta["bytes"]
        check_bounds(folder, entry, arrays, n_centroids)
        arrays = {a: F.as_torch(x) if device.type == "cpu" else F.as_torch(x).to(device) for a, x in arrays.items()}
        return cls(entry["name"], entry["doc_base"], entry["n_docs"], entry["n_tokens"], nbytes=nbytes, **arrays)


def _monotone_from_zero(offsets: np.ndarray, total: int) -> bool:
    return offsets.size > 0 and int(offsets[0]) == 0 and int(offsets[-1]) == total and \
        not bool((offsets[1:] < offsets[:-1]).any())


def check_bounds(folder: Path, entry: dict, arrays: dict, n_centroids: int) -> None:
    """The invariants the kernels index with and do not re-check per search: codes in
    [0, K), offsets monotone from 0 to the array sizes, ivf ids in [0, n_docs). Vectorised
    numpy over the mapped arrays (reads the codes, offsets and inverted lists once)."""
    name = entry["name"]
    codes, ivf = arrays["codes"], arrays["ivf"]
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= n_centroids):
        raise ValueError(f"{folder / file_name(name, 'codes')}: codes outside [0, {n_centroids}): corrupt segment")
    if arrays["ivf_offsets"].size != n_centroids + 1:
        raise ValueError(f"{folder / file_name(name, 'ivf_offsets')}: {arrays['ivf_offsets'].size} entries, "
                         f"expected {n_centroids + 1}")
    for array, total in (("doc_offsets", codes.size), ("ivf_offsets", ivf.size)):
        if not _monotone_from_zero(arrays[array], total):
            raise ValueError(f"{folder / file_name(name, array)}: offsets not monotone from 0 to {total}: "
                             "corrupt segment")
    if ivf.size and (int(ivf.min()) < 0 or int(ivf.max()) >= entry["n_docs"]):
        raise ValueError(f"{folder / file_name(name, 'ivf')}: doc ids outside [0, {entry['n_docs']}): corrupt segment")
