"""``PyLateIndex``: PyLate's index interface (``pylate.indexes.Base``) over a
:class:`colbert_engine.Index`, so PyLate code keeps its model and retriever and searches
with this engine::

    from pylate import models, retrieve
    from colbert_engine.integrations.pylate import PyLateIndex

    index = PyLateIndex(index_folder="pylate-index", index_name="docs", override=True)
    index.add_documents(documents_ids=ids, documents_embeddings=model.encode(docs, is_query=False))
    retriever = retrieve.ColBERT(index=index)
    results = retriever.retrieve(model.encode(queries, is_query=True), k=10)  # [[{"id", "score"}, ...], ...]

The index is end to end (``is_end_to_end_index``): ``__call__`` runs the whole PLAID search
and returns PyLate's result shape, a list per query of ``{"id": ..., "score": ...}`` best
first, the same documents and scores as :meth:`colbert_engine.Index.search`. The first
``add_documents`` builds the index (training its codec on those documents); later ones
append with that codec, as PyLate's own PLAID backend does. pylate itself is optional: where
it is installed the class subclasses ``pylate.indexes.base.Base``; the adapter works the same
without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from colbert_engine.index import Index

try:  # pylate is optional: subclass its interface where present
    from pylate.indexes.base import Base as _Base
except ImportError:  # pragma: no cover - exercised where pylate is absent
    _Base = object

__all__ = ["PyLateIndex"]

MANIFEST = "manifest.json"  # an index folder's commit point (index/FORMAT.md)


def _as_matrix(value, name: str) -> torch.Tensor:
    """One (n_tokens, dim) float matrix from a numpy array, tensor or nested list."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    elif not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: expected a (n_tokens, dim) array, got {type(value).__name__} ({err})") from None
    if value.dim() != 2:
        raise ValueError(f"{name}: expected a (n_tokens, dim) array, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected floating point vectors, got {value.dtype}")
    return value.detach().to("cpu", torch.float32)


def _matrices(values, name: str) -> list:
    """A 3-D array/tensor or a sequence of 2-D ones -> list of (n_i, dim) float32 tensors."""
    if isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim == 3:
        return [_as_matrix(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name}: expected a list of (n_tokens, dim) arrays, got {type(values).__name__}")
    return [_as_matrix(v, f"{name}[{i}]") for i, v in enumerate(values)]


class PyLateIndex(_Base):
    """A PyLate index (``pylate.indexes.Base``) stored and searched by colbert-engine.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name`` (PyLate's
            convention); an existing colbert-engine index there is opened.
        override: remove an existing index at that path first (only a colbert-engine index
            folder is removed; anything else there is an error).
        nbits: residual bits per dimension (1, 2 or 4) when the first documents build it.
        device: ``"cpu"`` or ``"cuda"`` for build and search (default cpu).
        nprobe, centroid_score_threshold, ndocs: PLAID funnel parameters passed to
            :meth:`colbert_engine.Index.search` (None: its defaults for k).
        exact: exhaustive MaxSim over every document instead of the PLAID funnel.
        **build_kwargs: further :meth:`colbert_engine.Index.build` arguments (``n_centroids``,
            ``kmeans_niters``, ``seed``).

    Attributes:
        index: the underlying :class:`colbert_engine.Index` (None until documents are added).
    """

    is_end_to_end_index = True

    def __init__(self, index_folder: str = "indexes", index_name: str = "colbert", override: bool = False,
                 nbits: int = 2, device=None, nprobe: Optional[int] = None,
                 centroid_score_threshold: Optional[float] = None, ndocs: Optional[int] = None,
                 exact: bool = False, **build_kwargs):
        if not isinstance(index_name, str) or not index_name or Path(index_name).name != index_name:
            raise ValueError(f"index_name: expected a plain folder name, got {index_name!r}")
        self.path = Path(index_folder) / index_name
        self.nbits = nbits
        self.device = device
        self.search_kwargs = dict(nprobe=nprobe, centroid_score_threshold=centroid_score_threshold, ndocs=ndocs,
                                  exact=exact)
        self.build_kwargs = build_kwargs
        self.index: Optional[Index] = None
        has_index = (self.path / MANIFEST).is_file()
        if override and self.path.exists():
            if not has_index and any(self.path.iterdir()):
                raise ValueError(f"index_folder/index_name: {self.path} holds files but no colbert-engine index; "
                                 "not removing it")
            shutil.rmtree(self.path)
            has_index = False
        if has_index:
            self.index = Index.open(self.path, device=device)

    def __repr__(self) -> str:
        return f"PyLateIndex({str(self.path)!r}, index={self.index!r})"

    # ------------------------------------------------------------------ writing
    def add_documents(self, documents_ids, documents_embeddings, batch_size: int = 2000, **kwargs) -> "PyLateIndex":
        """Add documents: ``documents_ids`` (one str/int id per document, or a single id) and
        ``documents_embeddings`` (one ``(n_tokens, dim)`` array or tensor per document, as
        ``pylate.models.ColBERT.encode(..., is_query=False)`` returns). The first call builds
        the index. Ids already in the index are an error (use :meth:`update_documents`).
        ``batch_size`` documents are compressed at a time. Returns self, as PyLate's
        indexes do."""
        if isinstance(documents_ids, (str, int, np.integer)):
            documents_ids = [documents_ids]
        ids = list(documents_ids)
        matrices = _matrices(documents_embeddings, "documents_embeddings")
        if len(ids) != len(matrices):
            raise ValueError(f"documents_ids: {len(ids)} ids for {len(matrices)} documents_embeddings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not ids:
            return self
        for i, m in enumerate(matrices):
            if m.shape[0] == 0:
                raise ValueError(f"documents_embeddings[{i}]: document {ids[i]!r} has no token vectors")
        if self.index is None:
            emb, offsets = _pack(matrices)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.index = Index.build(self.path, emb, offsets, ids=ids, nbits=self.nbits, device=self.device,
                                     **self.build_kwargs)
            return self
        batches = ((*_pack(matrices[s:s + batch_size]), ids[s:s + batch_size])
                   for s in range(0, len(ids), batch_size))
        self.index.add(batches)
        return self

    def remove_documents(self, documents_ids) -> "PyLateIndex":
        """Delete documents by id (unknown ids are ignored). Returns self."""
        if isinstance(documents_ids, (str, int, np.integer)):
            documents_ids = [documents_ids]
        if self.index is not None:
            self.index.delete(list(documents_ids))
        return self

    def update_documents(self, documents_ids, documents_embeddings) -> "PyLateIndex":
        """Replace documents (remove, then add; ids not yet present are just added)."""
        if isinstance(documents_ids, (str, int, np.integer)):
            documents_ids = [documents_ids]
        self.remove_documents(list(documents_ids))
        return self.add_documents(documents_ids, documents_embeddings)

    # ------------------------------------------------------------------ reading
    def __call__(self, queries_embeddings, k: int = 10, subset=None) -> list:
        """Top-k documents per query: ``[[{"id": ..., "score": ...}, ...], ...]`` best first
        (PyLate's ``RerankResult``), one list per query; a single ``(n_tokens, dim)`` query
        gives a list of one. ``subset``: ids every query is restricted to, or one list of ids
        per query (unknown ids are ignored)."""
        if self.index is None:
            raise ValueError(f"{self.path}: the index is empty; add documents before searching")
        if isinstance(queries_embeddings, (np.ndarray, torch.Tensor)) and queries_embeddings.ndim == 2:
            queries_embeddings = [queries_embeddings]
        queries = _matrices(queries_embeddings, "queries_embeddings")
        per_query = None
        if subset is not None:
            if len(subset) and all(isinstance(s, (list, tuple)) for s in subset):
                if len(subset) != len(queries):
                    raise ValueError(f"subset: {len(subset)} lists for {len(queries)} queries")
                per_query = [list(s) for s in subset]
            else:
                per_query = [list(subset)] * len(queries)
        results: list = [None] * len(queries)
        # Queries of one length (and one subset) are searched together as one batch.
        groups: dict = {}
        for i, q in enumerate(queries):
            key = (q.shape[0], None if per_query is None else tuple(per_query[i]))
            groups.setdefault(key, []).append(i)
        for (_, allowed), members in groups.items():
            if allowed is not None and not allowed:
                for i in members:
                    results[i] = []
                continue
            batch = torch.stack([queries[i] for i in members])
            hits = self.index.search(batch, k=k, filter=None if allowed is None else list(allowed),
                                     **self.search_kwargs)
            for i, found in zip(members, hits):
                results[i] = [{"id": doc_id, "score": score} for doc_id, score in found]
        return results

    def get_documents_embeddings(self, documents_ids) -> list:
        """For each list of ids, the documents' token vectors as the index holds them
        (decompressed from the codes), as float32 numpy arrays ``(n_tokens, dim)``. An id
        that is not in the index raises KeyError."""
        if self.index is None:
            raise ValueError(f"{self.path}: the index is empty")
        out = []
        for group in documents_ids:
            if isinstance(group, (str, int, np.integer)):
                raise TypeError("documents_ids: expected a list of lists of ids (one list per query)")
            out.append([m.cpu().numpy() for m in self.index.embeddings(list(group))])
        return out


def _pack(matrices: list):
    dims = {m.shape[1] for m in matrices}
    if len(dims) != 1:
        raise ValueError(f"documents_embeddings: documents have different dims {sorted(dims)}")
    lengths = torch.tensor([m.shape[0] for m in matrices], dtype=torch.int64)
    offsets = torch.zeros(len(matrices) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return torch.cat(matrices), offsets
