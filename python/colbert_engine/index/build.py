"""``Index.build``: train the codec on a document sample of the (possibly streamed)
collection, then write the first generation with :func:`writer.write_index`.

A streamed collection is spilled to a temporary file in the index folder as it arrives
(:mod:`colbert_engine.index.spill`), then sampled and compressed from there: the index is
the one a packed build of the same documents writes (same sample rows, same K, same
codec, same files), and peak memory does not grow with the collection. With an explicit
``train_buffer_tokens`` the older mode trains on the documents of the stream's first
tokens only (no disk for a spill; K from ``n_tokens_hint``)."""

from __future__ import annotations

import itertools
import numbers
from pathlib import Path

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.batches import BATCH_TOKENS, batches_of, check_batch, sample_rows
from colbert_engine.index.codec import (HELDOUT_TOKENS, BuildClock, Codec, RowParts, check_bucket_layout, num_centroids,
                                        train_codec)
from colbert_engine.index.memory import release_freed_memory
from colbert_engine.index.spill import StreamSpill
from colbert_engine.index.writer import (DEFAULT_LOCK_TIMEOUT_S, remove_leftovers, write_index,
                                         writer_lock)
from colbert_engine.search import check_count

# None: a streamed build spills the stream and trains on a sample of all of it. An int:
# it trains on the documents of the stream's first this-many tokens (no spill).
DEFAULT_TRAIN_BUFFER_TOKENS = None
# Tokens read back from the spill at a time for compression (16 MB of fp32 at dim 128).
SPILL_READ_TOKENS = 1 << 15


def build_index(folder: Path, doc_emb, doc_offsets, ids, metadata, nbits: int, device: torch.device, *,
                n_centroids: int | None, kmeans_niters: int, seed: int, train_buffer_tokens: int,
                n_tokens_hint: int | None, max_points_per_centroid: int, codec: Codec | None = None,
                bucket_layout: str | None = None) -> None:
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
    check_bucket_layout(bucket_layout)  # before a stream is spilled
    if codec is not None and bucket_layout is not None and bucket_layout != codec.bucket_layout:
        raise ValueError(f"bucket_layout: {bucket_layout!r} differs from the given codec's {codec.bucket_layout!r}")
    if isinstance(kmeans_niters, bool) or not isinstance(kmeans_niters, numbers.Integral) or kmeans_niters < 0:
        raise ValueError(f"kmeans_niters: expected an int >= 0, got {kmeans_niters!r}")
    if train_buffer_tokens is not None:
        train_buffer_tokens = check_count(train_buffer_tokens, "train_buffer_tokens")
    if n_tokens_hint is not None:
        n_tokens_hint = check_count(n_tokens_hint, "n_tokens_hint")
    folder.mkdir(parents=True, exist_ok=True)
    with writer_lock(folder, DEFAULT_LOCK_TIMEOUT_S):
        if (folder / F.MANIFEST).exists():
            raise ValueError(f"{folder}: already holds an index (open it and add, or remove it first)")
        remove_leftovers(folder)
        if codec is not None:
            write_index(folder, codec.to(device), batches_of(doc_emb, doc_offsets, ids, metadata), device)
            return
        settings = dict(nbits=nbits, device=device, n_centroids=n_centroids, kmeans_niters=kmeans_niters, seed=seed,
                        max_points_per_centroid=max_points_per_centroid, bucket_layout=bucket_layout)
        if isinstance(doc_emb, (torch.Tensor, np.ndarray)) or train_buffer_tokens is not None:
            _train_and_write(folder, doc_emb, doc_offsets, ids, metadata, train_buffer_tokens=train_buffer_tokens,
                             n_tokens_hint=n_tokens_hint, **settings)
        else:
            _spill_train_and_write(folder, batches_of(doc_emb, doc_offsets, ids, metadata), **settings)


def _spill_train_and_write(folder: Path, batches, nbits: int, device: torch.device, n_centroids, kmeans_niters,
                           seed, max_points_per_centroid, bucket_layout) -> None:
    """Spill the stream, train on ColBERT's sample of all of it (what a packed build of the
    same documents samples), compress it back from the spill; the spill never outlives
    the build."""
    clock = BuildClock()
    spill = StreamSpill(folder)
    try:
        for i, (emb, offsets, batch_ids, batch_meta) in enumerate(batches):
            spill.append(i, emb, offsets, batch_ids, batch_meta)
            del emb  # the caller's batch can go while the next one is made
        clock.lap("spill")
        release_freed_memory()
        if spill.n_tokens == 0:
            raise ValueError("doc_emb: the collection has no tokens; nothing to train the codec on")
        codec = _train_on_sample(spill.rows(), spill.lengths(), spill.n_tokens, clock, nbits, device, n_centroids,
                                 kmeans_niters, seed, max_points_per_centroid, bucket_layout)
        release_freed_memory()
        clock.restart()
        write_index(folder, codec, spill.batches(SPILL_READ_TOKENS), device, clock=clock)
    finally:
        spill.remove()


def _train_on_sample(points, lengths: torch.Tensor, n_tokens: int, clock: BuildClock, nbits: int, device,
                     n_centroids, kmeans_niters, seed, max_points_per_centroid, bucket_layout) -> Codec:
    """The codec, trained on ColBERT's document sample (:func:`sample_rows` of the documents'
    ``lengths``) of ``points`` (the collection's rows: a tensor, RowParts or a spill)."""
    k = n_centroids or num_centroids(n_tokens, n_tokens)
    rows = sample_rows(lengths, seed, max_points_per_centroid * k + HELDOUT_TOKENS)
    clock.lap("sampling")
    return train_codec(points, n_tokens, nbits, seed=seed, niters=kmeans_niters, n_centroids=n_centroids,
                       max_points_per_centroid=max_points_per_centroid, rows=rows, device=device,
                       timings=clock.seconds, bucket_layout=bucket_layout)


def _train_and_write(folder: Path, doc_emb, doc_offsets, ids, metadata, nbits: int, device: torch.device,
                     n_centroids, kmeans_niters, seed, train_buffer_tokens, n_tokens_hint,
                     max_points_per_centroid, bucket_layout) -> None:
    """A packed collection (its sample is a list of rows of the input, no copy), or a
    stream trained on the documents of its first ``train_buffer_tokens`` tokens."""
    if train_buffer_tokens is None:  # packed: the "buffered" batches are views of the input
        train_buffer_tokens = BATCH_TOKENS
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
    if not packed:  # the sample is rows of the buffered batches, gathered chunk by chunk, never copied whole
        points = RowParts([b[0] for b in buffered])
    codec = _train_on_sample(points, lengths, n_tokens, clock, nbits, device, n_centroids, kmeans_niters, seed,
                             max_points_per_centroid, bucket_layout)
    clock.restart()
    del points
    release_freed_memory()
    # hand the buffered batches over one by one so each is freed once compressed
    buffered_stream = (buffered.pop(0) for _ in range(len(buffered)))
    write_index(folder, codec, itertools.chain(buffered_stream, batches), device, clock=clock)
