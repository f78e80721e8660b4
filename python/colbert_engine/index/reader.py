"""The read side of an index folder: manifest, codec, segments, id database and tombstones
of one generation, and the questions answered from them without a kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from colbert_engine.index import format as F
from colbert_engine.index.batches import id_list
from colbert_engine.index.codec import Codec
from colbert_engine.index.codec_files import load_codec
from colbert_engine.index.ids import IdStore
from colbert_engine.index.manifest import read_checked_manifest
from colbert_engine.index.segment import Segment


# A reader opening while writers commit retries this often with the newer manifest.
_OPEN_ATTEMPTS = 5


class IndexReader:
    """An index folder opened at one generation. Subclassed by :class:`colbert_engine.Index`."""

    def __init__(self, folder: Path, device: torch.device, verify: bool):
        self.path = Path(folder)
        self.device = device
        self._verify = verify
        self._ids: IdStore | None = None
        self.codec: Codec | None = None
        self.segments: list[Segment] = []
        self._load()

    def _load(self, manifest: dict | None = None) -> None:
        """Open the generation the manifest names (re-reading it when not given). A reader
        racing another process's commit can find a file of the generation it read already
        removed; it then re-reads the manifest and opens the newer generation. The handle's
        state changes only once everything opened."""
        for attempt in range(_OPEN_ATTEMPTS):
            manifest = manifest or read_checked_manifest(self.path)
            try:
                self._open_generation(manifest)
                return
            except F.MissingFileError:
                newer = read_checked_manifest(self.path)
                if newer["generation"] == manifest["generation"] or attempt == _OPEN_ATTEMPTS - 1:
                    raise
                manifest = newer

    def _open_generation(self, manifest: dict) -> None:
        codec, opened = self.codec, {s.name: s for s in self.segments}
        if codec is None or manifest["codec"] != self._manifest["codec"]:
            # the codec never changes after build; a different one is another index (the
            # folder was rebuilt and renamed into place): nothing opened can be kept
            codec, opened = load_codec(self.path, manifest, self._verify, self.device), {}
        # segments are immutable: after a commit only the new ones are opened (and checked)
        segments = [opened.get(entry["name"]) or Segment.open(self.path, entry, self.device, self._verify,
                                                                  codec.centroids.shape[0])
                    for entry in manifest["segments"]]
        db = self.path / manifest["ids_db"]
        store = self._ids if self._ids is not None and self._ids.path == db and opened else None
        if store is None:
            if not db.is_file():
                raise F.MissingFileError(f"{db}: missing (named in the manifest)")
            try:
                store = IdStore(db)
            except ValueError:
                if not db.is_file():  # removed between the check and the open
                    raise F.MissingFileError(f"{db}: missing (named in the manifest)") from None
                raise
        try:
            generation, n_docs = manifest["generation"], manifest["n_docs"]
            store.check(generation, n_docs, full=self._verify and store is not self._ids)
            deleted = store.deleted_doc_ids(generation)
            if deleted.size != manifest["n_deleted"]:
                raise ValueError(f"{db}: {deleted.size} deleted documents, manifest says {manifest['n_deleted']}: "
                                 "the id database does not belong to this manifest")
            live = None
            if deleted.size:
                if int(deleted.min()) < 0 or int(deleted.max()) >= n_docs:
                    raise ValueError(f"{db}: deleted doc ids outside [0, {n_docs})")
                live = torch.ones(n_docs, dtype=torch.bool)
                live[torch.from_numpy(deleted)] = False
                live = live.to(self.device)
        except BaseException:
            if store is not self._ids:
                store.close()
            raise
        if self._ids is not None and self._ids is not store:
            self._ids.close()
        self.codec, self.segments, self._ids, self._manifest = codec, segments, store, manifest
        self.generation, self.n_docs, self._live = generation, n_docs, live

    def refresh(self) -> bool:
        """Move this handle to the folder's current generation (another handle or process
        may have written since it was opened). Returns whether the generation changed."""
        self._check_open()
        manifest = read_checked_manifest(self.path)
        if manifest["generation"] == self.generation and manifest["checksum"] == self._manifest["checksum"]:
            return False
        self._load(manifest)
        return True

    def close(self) -> None:
        if self._ids is not None:
            self._ids.close()
            self._ids = None
        self.segments = []

    def _check_open(self) -> None:
        # After close() the segments are gone: a search returned nothing or failed with
        # "'NoneType' object has no attribute ..." deep inside.
        if self._ids is None:
            raise ValueError(f"{self.path}: this Index was closed; open it again with Index.open")

    @property
    def n_live(self) -> int:
        return self.n_docs - self._manifest["n_deleted"]

    @property
    def n_tokens(self) -> int:
        return self._manifest["n_tokens"]

    def stats(self) -> dict:
        """Counts and sizes for the CLI (bytes_per_token over the segments' files)."""
        seg_bytes = sum(s.nbytes for s in self.segments)
        m = self._manifest
        return {
            "path": str(self.path), "docs": self.n_docs, "live_docs": self.n_live, "deleted_docs": m["n_deleted"],
            "tokens": self.n_tokens, "bytes": seg_bytes + sum(e["bytes"] for e in m["codec"].values()),
            "bytes_per_token": seg_bytes / self.n_tokens if self.n_tokens else 0.0,
            "centroids": self.codec.centroids.shape[0], "nbits": self.codec.nbits, "dim": self.codec.dim,
            "bucket_layout": self.codec.bucket_layout,
            "format_version": m["format_version"], "generation": self.generation, "segments": len(self.segments),
            "device": str(self.device),
            **{f"build_s_{stage}": seconds for stage, seconds in m.get("build_seconds", {}).items()},
        }

    def _allowed(self, filter) -> torch.Tensor | None:
        """bool (n_docs,) of docs that may be returned: live, and matching ``filter``."""
        if filter is None:
            return self._live
        # a 2-tuple starting with a str is (clause, params); ids are given as a list
        if isinstance(filter, tuple) and len(filter) == 2 and isinstance(filter[0], str):
            doc_ids = self._ids.where(filter[0], filter[1], self.generation)
        elif isinstance(filter, str):
            doc_ids = self._ids.where(filter, (), self.generation)
        else:
            filter = id_list(filter, "filter")
            found = self._ids.lookup_live(filter, self.generation, "filter")
            doc_ids = np.fromiter(found.values(), dtype=np.int64, count=len(found))
        mask = torch.zeros(self.n_docs, dtype=torch.bool)
        if doc_ids.size:
            mask[torch.from_numpy(doc_ids)] = True
        mask = mask.to(self.device)
        return mask if self._live is None else mask & self._live

    def metadata(self, ids: Sequence) -> list:
        """The metadata stored with live documents ``ids`` (None where absent or unknown)."""
        self._check_open()
        ids = id_list(ids, "ids")
        found = self._ids.lookup_live(ids, self.generation)
        meta = self._ids.metadata(list(found.values()))
        return [meta.get(found.get(i)) for i in ids]

    def embeddings(self, ids: Sequence) -> list:
        """The token vectors of live documents ``ids`` as the index holds them: one float32
        ``(n_tokens, dim)`` tensor per id, in order, decompressed from the codes and scaled
        by the stored inverse norms (exactly the vectors search scores).

        Raises:
            KeyError naming the first id that is not a live document.
        """
        from colbert_engine import ops
        from colbert_engine.index.ids import normalize_id

        self._check_open()
        ids = id_list(ids, "ids")
        found = self._ids.lookup_live(ids, self.generation)
        out = []
        for raw in ids:
            doc = found.get(normalize_id(raw))
            if doc is None:
                raise KeyError(f"ids: {raw!r} is not a live document of {self.path}")
            seg = next(s for s in self.segments if s.doc_base <= doc < s.doc_base + s.n_docs)
            t0, t1 = int(seg.doc_offsets[doc - seg.doc_base]), int(seg.doc_offsets[doc - seg.doc_base + 1])
            decoded = ops.decompress_residuals(seg.codes[t0:t1], seg.residuals[t0:t1], self.codec.centroids,
                                               self.codec.byte_codebook, self.codec.nbits,
                                               inv_norms=seg.inv_norms[t0:t1])
            out.append(self.codec.unrotate(decoded))  # back from the codec's (rotated) space
        return out
