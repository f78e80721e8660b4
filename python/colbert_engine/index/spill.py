"""The spill of a streamed build: the stream's batches written, as they arrive, to two
temporary files in the index folder, so that the codec is trained on a sample drawn from
the whole collection (the very rows a packed build of the same documents samples) and the
documents are then compressed from disk.

Read back with explicit reads (``os.preadv`` into a caller-sized buffer), never through a
mapping: mapped file pages count in the process's resident memory, and k-means reads the
sample in random order, so a mapping would end up holding the whole spill.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.batches import document_runs

SPILL_VECTORS = "build.spill.vectors"  # the token vectors, each batch in its own dtype, raw
SPILL_DOCS = "build.spill.docs"        # one pickled (ids, metadata) per batch
SPILL_NAMES = (SPILL_VECTORS, SPILL_DOCS)


class StreamSpill:
    """Append-only spill of checked batches; :meth:`rows` and :meth:`batches` read it back.
    Always :meth:`remove` it (success or failure); a killed build's spill is removed by the
    next writer's garbage collection (its names are in ``writer._OWN_FILE``)."""

    def __init__(self, folder: Path):
        self.paths = (folder / SPILL_VECTORS, folder / SPILL_DOCS)
        self._vectors = self._docs = None
        for path in self.paths:
            try:
                f = open(path, "w+b")
            except OSError as exc:
                self.remove()
                raise F.named_os_error(path, exc) from exc
            if self._vectors is None:
                self._vectors = f
            else:
                self._docs = f
        self.dim: int | None = None
        self.dtype: torch.dtype | None = None
        self.n_tokens = 0
        self._bytes = 0
        # per spilled batch: first token, first byte, its doc lengths (int64), its dtype
        self._token_starts: list[int] = []
        self._byte_starts: list[int] = []
        self._lengths: list[torch.Tensor] = []
        self._dtypes: list[torch.dtype] = []

    def append(self, i: int, emb: torch.Tensor, offsets: torch.Tensor, ids, metadata) -> None:
        """Spill batch ``i`` (already checked: finite ``(T, dim)`` float, valid offsets)."""
        if self.dim is None:
            self.dim = emb.shape[1]
        elif emb.shape[1] != self.dim:
            raise ValueError(f"doc_emb: batch {i} has dim {emb.shape[1]}, earlier batches {self.dim}")
        data = emb.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy()
        try:
            self._vectors.write(memoryview(raw))
        except OSError as exc:
            raise F.named_os_error(self.paths[0], exc) from exc
        try:
            pickle.dump((ids, metadata), self._docs, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as exc:
            raise F.named_os_error(self.paths[1], exc) from exc
        self._token_starts.append(self.n_tokens)
        self._byte_starts.append(self._bytes)
        self._lengths.append(torch.diff(offsets.cpu()))
        self._dtypes.append(data.dtype)
        self.n_tokens += data.shape[0]
        self._bytes += raw.nbytes

    def finish_writing(self) -> None:
        """Flush what was spilled so that the explicit reads see it."""
        for path, f in zip(self.paths, (self._vectors, self._docs)):
            try:
                f.flush()
            except OSError as exc:
                raise F.named_os_error(path, exc) from exc

    def lengths(self) -> torch.Tensor:
        """Document lengths, int64 ``(n_docs,)``, in stream order."""
        return torch.cat(self._lengths) if self._lengths else torch.zeros(0, dtype=torch.int64)

    def rows(self) -> "SpillRows":
        return SpillRows(self)

    def _read(self, buffer: torch.Tensor, byte_offsets: np.ndarray, row_bytes: int) -> None:
        """Fill the uint8 ``buffer`` with the ``row_bytes``-byte rows starting at
        ``byte_offsets`` (in buffer order), one read per run of consecutive rows."""
        n = byte_offsets.shape[0]
        if n == 0:
            return
        view = memoryview(buffer.numpy())
        breaks = np.flatnonzero(np.diff(byte_offsets) != row_bytes) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [n]))
        fd = self._vectors.fileno()
        for s, e, at in zip(starts.tolist(), ends.tolist(), byte_offsets[starts].tolist()):
            want = (e - s) * row_bytes
            try:
                got = os.preadv(fd, [view[s * row_bytes:e * row_bytes]], at)
            except OSError as exc:
                raise F.named_os_error(self.paths[0], exc) from exc
            if got != want:
                raise ValueError(f"{self.paths[0]}: the build's spill is shorter than written "
                                 f"(read {got} of {want} bytes at {at}); was it truncated?")

    def _batch_rows(self, b: int, local: np.ndarray) -> torch.Tensor:
        """Rows ``local`` (int64 token indices inside spilled batch ``b``) in their dtype."""
        dtype = self._dtypes[b]
        row_bytes = self.dim * dtype.itemsize
        buffer = torch.empty(local.shape[0] * row_bytes, dtype=torch.uint8)
        self._read(buffer, self._byte_starts[b] + local * row_bytes, row_bytes)
        return buffer.view(dtype).view(local.shape[0], self.dim)

    def batches(self, max_tokens: int):
        """Yield ``(emb, offsets, ids or None, metadata or None)``: every spilled batch read
        back in order, cut into runs of whole documents of about ``max_tokens`` tokens
        (a user's huge batch is never read back whole)."""
        self.finish_writing()
        try:
            self._docs.seek(0)
        except OSError as exc:
            raise F.named_os_error(self.paths[1], exc) from exc
        for b, lengths in enumerate(self._lengths):
            try:
                ids, metadata = pickle.load(self._docs)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                raise ValueError(f"{self.paths[1]}: cannot read the build's spill back ({exc})") from exc
            offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            for doc, end in document_runs(offsets, max_tokens):
                t0, t1 = int(offsets[doc]), int(offsets[end])
                emb = self._batch_rows(b, np.arange(t0, t1, dtype=np.int64))
                yield (emb, offsets[doc:end + 1] - t0, None if ids is None else ids[doc:end],
                       None if metadata is None else metadata[doc:end])

    def remove(self) -> None:
        """Close and delete both files; best effort (must not replace an error being raised)."""
        for f in (self._vectors, self._docs):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


class SpillRows:
    """The spilled collection as a ``(n_tokens, dim)`` float32 matrix that can be indexed by
    an int64 index tensor (what :func:`colbert_engine.index.codec.train_codec` gathers its
    sample and k-means chunks with): rows are read from disk on each access."""

    def __init__(self, spill: StreamSpill):
        spill.finish_writing()
        self.spill = spill
        self.shape = torch.Size((spill.n_tokens, spill.dim or 0))
        self.device = torch.device("cpu")
        self._starts = np.array(spill._token_starts + [spill.n_tokens], dtype=np.int64)
        self._byte_starts = np.array(spill._byte_starts + [spill._bytes], dtype=np.int64)
        self._float32 = all(dtype == torch.float32 for dtype in spill._dtypes)

    def dim(self) -> int:
        return 2

    def __getitem__(self, index) -> torch.Tensor:
        # index bookkeeping in numpy: on a busy machine every small torch op pays an OpenMP
        # barrier (~8 ms measured under load 7, which made the gather 23 us a row)
        index = torch.as_tensor(index, dtype=torch.int64).cpu().flatten().numpy()
        n, dim = index.shape[0], self.shape[1]
        if n and (int(index.min()) < 0 or int(index.max()) >= self.shape[0]):
            raise IndexError(f"spill rows: index outside [0, {self.shape[0]})")
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        batch_of = np.searchsorted(self._starts, sorted_index, side="right") - 1
        out = np.empty((n, dim), dtype=np.float32)
        spill = self.spill
        if self._float32:  # one read pass over all rows, runs across batches coalesced
            buffer = torch.empty(n * dim * 4, dtype=torch.uint8)
            byte_at = self._byte_starts[batch_of] + (sorted_index - self._starts[batch_of]) * (dim * 4)
            spill._read(buffer, byte_at, dim * 4)
            out[order] = buffer.numpy().view(np.float32).reshape(n, dim)
            return torch.from_numpy(out)
        cuts = np.flatnonzero(np.diff(batch_of)) + 1  # batches of several dtypes: one at a time
        for lo, hi in zip([0] + cuts.tolist(), cuts.tolist() + [n]):
            if lo < hi:
                b = int(batch_of[lo])
                rows = spill._batch_rows(b, sorted_index[lo:hi] - self._starts[b])
                out[order[lo:hi]] = rows.float().numpy()
        return torch.from_numpy(out)
