"""``Index.build``: train the codec on a document sample of the (possibly streamed)
collection, then write the first generation with :func:`writer.write_index`."""

from __future__ import annotations

import itertools
import numbers
from pathlib import Path

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.batches import batches_of, check_batch, sample_rows
from colbert_engine.index.codec import HELDOUT_TOKENS, BuildClock, Codec, RowParts, num_centroids, train_codec
from colbert_engine.index.writer import DEFAULT_LOCK_TIMEOUT_S, remove_leftovers, write_index, writer_lock
from colbert_engine.search import check_count

# Streaming builds train the codec on the documents of the first this-many tokens.
DEFAULT_TRAIN_BUFFER_TOKENS = 1 << 19


def build_index(folder: Path, doc_emb, doc_offsets, ids, metadata, nbits: int, device: torch.device, *,
                n_centroids: int | None, kmeans_niters: int, seed: int, train_buffer_tokens: int,
                n_tokens_hint: int | None, max_points_per_centroid: int, codec: Codec | None = None) -> None:
    """Write a new index into ``folder`` (arguments: :meth:`colbert_engine.Index.build`).
    With ``codec`` (a trained :class:`Codec`, e.g. the one the shards of a sharded index
    share) training is skipped and the collection may be empty."""
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits: must be 1, 2 or 4, got {nbits}")
    if codec is not None:
        if not isinstance(codec, Codec):
            raise TypeError(f"codec: expected a Codec, got {type(codec).__name__}")
        if codec.nbits != nbits:
            raise ValueError(f"codec: its nbits {codec.nbits} differ from nbits={nbits}")
    if n_centroids is not None:
        n_centroids = check_count(n_centroids, "n_centroids")
    if isinstance(kmeans_niters, bool) or not isinstance(kmeans_niters, numbers.Integral) or kmeans_niters < 0:
        raise ValueError(f"kmeans_niters: expected an int >= 0, got {kmeans_niters!r}")
    folder.mkdir(parents=True, exist_ok=True)
    with writer_lock(folder, DEFAULT_LOCK_TIMEOUT_S):
        if (folder / F.MANIFEST).exists():
            raise ValueError(f"{folder}: already holds an index (open it and add, or remove it first)")
        remove_leftovers(folder)
        if codec is not None:
            write_index(folder, codec.to(device), batches_of(doc_emb, doc_offsets, ids, metadata), device)
            return
        _train_and_write(folder, doc_emb, doc_offsets, ids, metadata, nbits, device, n_centroids, kmeans_niters,
                         seed, train_buffer_tokens, n_tokens_hint, max_points_per_centroid)


def _train_and_write(folder: Path, doc_emb, doc_offsets, ids, metadata, nbits: int, device: torch.device,
                     n_centroids, kmeans_niters, seed, train_buffer_tokens, n_tokens_hint,
                     max_points_per_centroid) -> None:
    clock = BuildClock()
    batches = batches_of(doc_emb, doc_offsets, ids, metadata)
    buffered, buffered_tokens = [], 0
    for batch in batches:
        buffered.append(batch)
        buffered_tokens += batch[0].shape[0]
        if buffered_tokens >= train_buffer_tokens:
            break
    if buffered_tokens == 0:
        raise ValueError("doc_emb: the collection has no tokens; nothing to train the codec on")
    dims = {b[0].shape[1] for b in buffered}
    if len(dims) != 1:
        raise ValueError(f"doc_emb: batches have different dims {sorted(dims)}")
    packed = isinstance(doc_emb, (torch.Tensor, np.ndarray))
    if packed:
        points, offsets = check_batch(doc_emb, doc_offsets, "")
        lengths, n_tokens = torch.diff(offsets), points.shape[0]
    else:  # sample the buffered stream's documents
        lengths = torch.cat([torch.diff(b[1]) for b in buffered])
        n_tokens = n_tokens_hint or buffered_tokens
    k = n_centroids or num_centroids(n_tokens, n_tokens)
    rows = sample_rows(lengths, seed, max_points_per_centroid * k + HELDOUT_TOKENS)
    if not packed:  # the sample is rows of the buffered batches, gathered chunk by chunk, never copied whole
        points = RowParts([b[0] for b in buffered])
    clock.lap("sampling")
    codec = train_codec(points, n_tokens, nbits, seed=seed, niters=kmeans_niters, n_centroids=n_centroids,
                        max_points_per_centroid=max_points_per_centroid, rows=rows, device=device,
                        timings=clock.seconds)
    clock.restart()
    del points, rows
    # hand the buffered batches over one by one so each is freed once compressed
    buffered_stream = (buffered.pop(0) for _ in range(len(buffered)))
    write_index(folder, codec, itertools.chain(buffered_stream, batches), device, clock=clock)
