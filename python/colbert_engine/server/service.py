"""The service's work, apart from HTTP: one reading thread that answers batches of search,
rerank and encode jobs from one Index handle, and one writing thread with its own handle.

Readers never wait for a writer: a write (encode + new segment + commit) runs on the
writer's handle while searches go on with the reader's; the reader moves to the newest
committed generation before each batch, so a search sent after a write was answered sees it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from colbert_engine.pipeline import (Pipeline, encoder_for_index, manifest_file, open_index, read_encoder_config,
                                     refresh_index)


@dataclass
class ServeConfig:
    """Everything ``colbert-engine serve`` takes; JSON-serialisable (workers get it via the env)."""

    index: str
    model: Optional[str] = None
    device: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 32          # requests per encode + search batch (1 = no batching)
    max_wait_ms: float = 2.0     # how long the first request of a batch waits for company
    max_queue: int = 1024        # requests waiting beyond this get 503
    max_texts: int = 64          # texts (or query vectors, documents, ids) per request
    max_text_chars: int = 20_000
    max_k: int = 1000
    max_candidates: int = 1000   # /rerank candidates per request
    max_body_bytes: int = 16 << 20
    verify: bool = True          # check the index files' checksums at start

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        return cls(**json.loads(text))


class ClientError(Exception):
    """A mistake in the request: answered with ``status`` and a JSON body naming ``field``."""

    def __init__(self, status: int, field: Optional[str], message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


# Library errors start with the argument's name ("filter: SQL error ..."): map it to the
# request field that carried it.
_FIELD_OF_ARGUMENT = {"filter": "filter", "queries": "query_vectors", "k": "k", "nprobe": "nprobe",
                      "ndocs": "ndocs", "centroid_score_threshold": "centroid_score_threshold",
                      "ids": "ids", "doc_emb": "documents", "metadata": "documents", "texts": "texts"}


def client_error_from(exc: BaseException, default_field: Optional[str] = None) -> ClientError:
    message = str(exc) or type(exc).__name__
    head = message.split(":", 1)[0].strip()
    field_name = _FIELD_OF_ARGUMENT.get(head, default_field)
    status = 409 if "already in the index" in message else 422
    return ClientError(status, field_name, message)


# What the library raises for bad input (a value, a filter, an id): a 4xx, never a 500.
CLIENT_MISTAKES = (ValueError, TypeError, OverflowError, sqlite3.Error)


def finite_or_none(value: float):
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class SearchJob:
    k: int
    texts: Optional[list] = None            # query texts, or
    vectors: Optional[torch.Tensor] = None  # (nq, Lq, dim) float32
    filter: Any = None                      # as Index.search takes it
    nprobe: Optional[int] = None
    centroid_score_threshold: Optional[float] = None
    ndocs: Optional[int] = None
    exact: bool = False
    include_metadata: bool = False
    query_emb: Optional[torch.Tensor] = field(default=None, repr=False)

    def group_key(self):
        """Jobs with equal keys are searched in one Index.search call (same options and
        filter, same query length), which returns per query what it would alone."""
        filter_key = json.dumps(self.filter, sort_keys=True, default=str)
        return (self.k, self.nprobe, self.centroid_score_threshold, self.ndocs, self.exact, filter_key,
                tuple(self.query_emb.shape[1:]))


@dataclass
class EncodeJob:
    texts: list
    kind: str  # "query" or "document"
    query_emb: Optional[torch.Tensor] = field(default=None, repr=False)


@dataclass
class RerankJob:
    query: Optional[str] = None
    query_vector: Optional[torch.Tensor] = None  # (Lq, dim)
    ids: Optional[list] = None
    texts: Optional[list] = None
    query_emb: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def texts_to_encode(self):
        return None if self.query is None else [self.query]


def _query_texts(job):
    if isinstance(job, SearchJob):
        return job.texts
    if isinstance(job, EncodeJob):
        return job.texts if job.kind == "query" else None
    return job.texts_to_encode


class Service:
    """Loads the encoder and opens the index; ``read_batch`` runs on the reader thread,
    ``write`` on the writer thread (both executors are owned here)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.path = Path(config.index)
        self._manifest_file = manifest_file(self.path)
        # Taken before opening: a commit between the stat and the open only causes one
        # extra refresh, never a missed one.
        self._reader_stamp = self._manifest_stamp()
        index = open_index(self.path, device=config.device, verify=config.verify)
        encoder = encoder_for_index(self.path, model=config.model, device=config.device)
        if encoder.dim != index.codec.dim:
            raise ValueError(f"--model: the encoder's dim {encoder.dim} does not match the index's dim "
                             f"{index.codec.dim}")
        self.reader = Pipeline(index, encoder)
        self.encoder = encoder
        self.dim = int(encoder.dim)
        self.query_length = int(encoder.settings.query_length)
        self.encoder_config = read_encoder_config(self.path) or {"model": config.model}
        self._writer: Optional[Pipeline] = None
        self._writer_stamp = None
        self.write_lock = threading.Lock()
        self.reader_executor = ThreadPoolExecutor(1, thread_name_prefix="colbert-engine-reader")
        self.writer_executor = ThreadPoolExecutor(1, thread_name_prefix="colbert-engine-writer")
        self.snapshot = index.stats()

    def close(self) -> None:
        self.reader_executor.shutdown(wait=True, cancel_futures=True)
        self.writer_executor.shutdown(wait=True, cancel_futures=True)
        self.reader.index.close()
        if self._writer is not None:
            self._writer.index.close()

    # ------------------------------------------------------------------ generations
    def _manifest_stamp(self):
        st = os.stat(self._manifest_file)  # replaced by rename at each commit: a new inode
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh_reader(self) -> None:
        stamp = self._manifest_stamp()
        if stamp != self._reader_stamp:
            self.reader.index = refresh_index(self.reader.index)
            self._reader_stamp = stamp
            self.snapshot = self.reader.index.stats()

    # ------------------------------------------------------------------ reading
    def read_batch(self, jobs) -> list:
        """Answers a batch of Search/Encode/Rerank jobs: one query encoding for all their
        texts, one Index.search per group of alike searches. A failure is confined to the
        jobs it concerns (a batched call that fails is retried job by job)."""
        self._refresh_reader()
        out: list = [None] * len(jobs)
        self._encode_query_texts(jobs, out)
        searches = {}
        for i, job in enumerate(jobs):
            if out[i] is not None:
                continue
            try:
                if isinstance(job, SearchJob):
                    if job.query_emb is None:
                        job.query_emb = job.vectors
                    if job.query_emb is None or job.query_emb.shape[0] == 0:
                        raise ValueError("queries: give at least one query text or query vector")
                    searches.setdefault(job.group_key(), []).append(i)
                elif isinstance(job, EncodeJob):
                    out[i] = self._encode(job)
                else:
                    out[i] = self._rerank(job)
            except CLIENT_MISTAKES as exc:
                out[i] = client_error_from(exc)
        for members in searches.values():
            self._search_group(jobs, members, out)
        return out

    def _encode_query_texts(self, jobs, out) -> None:
        texts, spans = [], []
        for i, job in enumerate(jobs):
            job_texts = _query_texts(job)
            if job_texts:
                spans.append((i, len(texts), len(job_texts)))
                texts.extend(job_texts)
        if not texts:
            return
        try:
            emb = self.encoder.encode_queries(texts)
        except CLIENT_MISTAKES:
            if len(spans) == 1:
                raise
            for i, _, _ in spans:  # isolate the text that fails
                try:
                    jobs[i].query_emb = self.encoder.encode_queries(_query_texts(jobs[i]))
                except CLIENT_MISTAKES as exc:
                    out[i] = client_error_from(exc, "queries")
            return
        for i, start, n in spans:
            jobs[i].query_emb = emb[start:start + n]

    def _search_group(self, jobs, members, out) -> None:
        first = jobs[members[0]]
        queries = torch.cat([jobs[i].query_emb for i in members]) if len(members) > 1 else first.query_emb
        try:
            results = self.reader.index.search(queries, k=first.k, nprobe=first.nprobe,
                                               centroid_score_threshold=first.centroid_score_threshold,
                                               ndocs=first.ndocs, exact=first.exact, filter=first.filter)
        except CLIENT_MISTAKES as exc:
            if len(members) > 1:
                for i in members:
                    self._search_group(jobs, [i], out)
                return
            out[members[0]] = client_error_from(exc)
            return
        start = 0
        for i in members:
            n = jobs[i].query_emb.shape[0]
            out[i] = self._hits(results[start:start + n], jobs[i].include_metadata)
            start += n

    def _hits(self, results, include_metadata: bool) -> list:
        metadata = {}
        if include_metadata:
            ids = list(dict.fromkeys(doc_id for hits in results for doc_id, _ in hits))
            metadata = dict(zip(ids, self.reader.index.metadata(ids))) if ids else {}
        return [[{"id": doc_id, "score": finite_or_none(score),
                  **({"metadata": metadata.get(doc_id)} if include_metadata else {})}
                 for doc_id, score in hits] for hits in results]

    def _encode(self, job: EncodeJob) -> dict:
        if job.kind == "query":
            return {"kind": "query", "vectors": job.query_emb.tolist()}
        doc_emb, doc_offsets = self.encoder.encode_documents(job.texts)
        doc_emb, bounds = doc_emb.float().cpu(), doc_offsets.tolist()
        return {"kind": "document", "vectors": [doc_emb[a:b].tolist() for a, b in zip(bounds, bounds[1:])]}

    def _rerank(self, job: RerankJob) -> dict:
        query = job.query_emb[0] if job.query_emb is not None else job.query_vector
        if job.ids is not None:
            hits, missing = self.reader.rerank_ids(query, job.ids)
            return {"results": [{"id": doc_id, "score": finite_or_none(score)} for doc_id, score in hits],
                    "missing": missing}
        scores = self.reader.rerank_texts(query, job.texts)
        order = sorted(range(len(scores)), key=lambda i: -scores[i] if math.isfinite(scores[i]) else math.inf)
        return {"results": [{"index": i, "score": finite_or_none(scores[i])} for i in order], "missing": []}

    # ------------------------------------------------------------------ writing
    def _writer_pipeline(self) -> Pipeline:
        stamp = self._manifest_stamp()
        if self._writer is None:
            self._writer = Pipeline(open_index(self.path, device=self.config.device, verify=False), self.encoder)
        elif stamp != self._writer_stamp:  # another process committed since our last write
            self._writer.index = refresh_index(self._writer.index)
        self._writer_stamp = stamp
        return self._writer

    def write(self, operation: str, **kwargs):
        """``add`` (texts, ids, metadata, store_text) or ``delete`` (ids), on the writer's handle."""
        with self.write_lock:
            writer = self._writer_pipeline()
            try:
                if operation == "add":
                    added = writer.add(kwargs["texts"], ids=kwargs["ids"], metadata=kwargs["metadata"],
                                       store_text=kwargs["store_text"])
                    result = {"added": len(added)}
                else:
                    result = {"deleted": writer.delete(kwargs["ids"])}
            except CLIENT_MISTAKES as exc:
                error = client_error_from(exc, "documents" if operation == "add" else "ids")
                if operation == "add" and error.field == "ids":
                    error.field = "documents.id"
                raise error from None
            finally:
                self._writer_stamp = self._manifest_stamp()
            result["generation"] = writer.index.generation
            return result

    def current_stats(self) -> dict:
        """The index's statistics at its newest generation (runs on the reader thread)."""
        self._refresh_reader()
        return dict(self.snapshot)
