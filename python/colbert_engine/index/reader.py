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
from colbert_engine.index.segment import Segment


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

    def _load(self) -> None:
        manifest = F.read_manifest(self.path)
        self._manifest = manifest
        if self.codec is None:  # the codec never changes after build
            self.codec = load_codec(self.path, manifest, self._verify, self.device)
        # segments are immutable: after a commit only the new ones are opened (and verified)
        opened = {s.name: s for s in self.segments}
        self.segments = [opened.get(entry["name"]) or Segment.open(self.path, entry, self.device, self._verify,
                                                                       self.codec.centroids.shape[0])
                         for entry in manifest["segments"]]
        db = self.path / manifest["ids_db"]
        if not db.is_file():
            raise ValueError(f"{db}: missing (named in the manifest)")
        if self._ids is not None and self._ids.path != db:
            self._ids.close()
            self._ids = None
        if self._ids is None:
            self._ids = IdStore(db)
        self.generation = manifest["generation"]
        self.n_docs = manifest["n_docs"]
        deleted = self._ids.deleted_doc_ids(self.generation)
        if deleted.size != manifest["n_deleted"]:
            raise ValueError(f"{db}: {deleted.size} deleted documents, manifest says {manifest['n_deleted']}: "
                             "the id database does not belong to this manifest")
        if deleted.size:
            live = torch.ones(self.n_docs, dtype=torch.bool)
            live[torch.from_numpy(deleted)] = False
            self._live = live.to(self.device)
        else:
            self._live = None

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
            "format_version": m["format_version"], "generation": self.generation, "segments": len(self.segments),
            "device": str(self.device),
        }

    def _allowed(self, filter) -> torch.Tensor | None:
        """bool (n_docs,) of docs that may be returned: live, and matching ``filter``."""
        if filter is None:
            return self._live
        if isinstance(filter, tuple) and len(filter) == 2 and isinstance(filter[0], str):
            doc_ids = self._ids.where(filter[0], filter[1], self.generation)
        elif isinstance(filter, str):
            doc_ids = self._ids.where(filter, (), self.generation)
        else:
            filter = id_list(filter, "filter")
            found = self._ids.lookup_live(filter, self.generation)
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
