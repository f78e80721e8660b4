"""The HTTP layer of ``colbert-engine serve``: FastAPI routes, request models (the OpenAPI
schema at ``/openapi.json``, docs at ``/docs``), error bodies, body-size limit and metrics.

Every error is JSON ``{"error": message, "field": name or null, "status": code}``.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Optional, Union

import torch
from fastapi import FastAPI, HTTPException, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from colbert_engine._version import __version__
from colbert_engine.server.batching import Batcher, Overloaded
from colbert_engine.server.metrics import Metrics
from colbert_engine.server.service import (ClientError, EncodeJob, RerankJob, SearchJob, ServeConfig, Service,
                                           client_error_from, CLIENT_MISTAKES)

CONFIG_ENV = "COLBERT_ENGINE_SERVE_CONFIG"  # how `serve --workers N` hands its config to each worker

# Ids are what the index stores: strings, or integers that fit SQLite's int64.
DocId = Union[Annotated[int, Field(ge=-(2 ** 63), le=2 ** 63 - 1)], str]
Scalar = Union[bool, Annotated[int, Field(ge=-(2 ** 63), le=2 ** 63 - 1)], FiniteFloat, str, None]
Text = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    # strict: no coercion (a boolean is not an id, "5" is not a k), as the schema says
    model_config = ConfigDict(extra="forbid", strict=True)


class Filter(Strict):
    """Exactly one of ``where`` (an SQL WHERE clause over the columns ``id`` and ``metadata``,
    JSON text, with ``?`` or ``:name`` parameters bound from ``params``) or ``ids``."""

    where: Optional[Annotated[str, Field(min_length=1, max_length=10_000)]] = None
    params: Optional[Union[list[Scalar], dict[str, Scalar]]] = None
    ids: Optional[list[DocId]] = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.where is None) == (self.ids is None):
            raise ValueError("give exactly one of filter.where or filter.ids")
        if self.ids is not None and self.params is not None:
            raise ValueError("filter.params goes with filter.where, not filter.ids")
        return self

    def as_library_filter(self):
        if self.ids is not None:
            return list(self.ids)
        return (self.where, self.params if self.params is not None else [])


class SearchRequest(Strict):
    queries: Optional[list[Text]] = Field(None, min_length=1, description="query texts, encoded by the server")
    query_vectors: Optional[list[list[list[FiniteFloat]]]] = Field(
        None, min_length=1, description="precomputed query token vectors (nq, Lq, dim), instead of queries")
    k: int = Field(10, ge=1, description="results per query")
    filter: Optional[Filter] = None
    nprobe: Optional[int] = Field(None, ge=1, le=1 << 16)
    centroid_score_threshold: Optional[FiniteFloat] = None
    ndocs: Optional[int] = Field(None, ge=1, le=1 << 24)
    exact: bool = Field(False, description="score every allowed document exhaustively")
    include_metadata: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.queries is None) == (self.query_vectors is None):
            raise ValueError("give exactly one of queries or query_vectors")
        return self


class Hit(BaseModel):
    id: Union[int, str]
    score: Optional[float]
    metadata: Optional[dict[str, Any]] = None


class SearchResponse(BaseModel):
    results: list[list[Hit]] = Field(description="per query, the hits best first")


class RerankRequest(Strict):
    query: Optional[Text] = None
    query_vector: Optional[list[list[FiniteFloat]]] = Field(None, description="(Lq, dim), instead of query")
    ids: Optional[list[DocId]] = Field(None, min_length=1, description="candidate documents stored in the index")
    texts: Optional[list[Text]] = Field(None, min_length=1, description="candidate texts, encoded by the server")

    @model_validator(mode="after")
    def _one_each(self):
        if (self.query is None) == (self.query_vector is None):
            raise ValueError("give exactly one of query or query_vector")
        if (self.ids is None) == (self.texts is None):
            raise ValueError("give exactly one of ids or texts")
        return self


class RerankHit(BaseModel):
    id: Optional[Union[int, str]] = None
    index: Optional[int] = None
    score: Optional[float]


class RerankResponse(BaseModel):
    results: list[RerankHit] = Field(description="candidates best first: ids, or positions in texts")
    missing: list[Union[int, str]] = Field(description="candidate ids that are not live in the index")


class EncodeRequest(Strict):
    texts: list[Text] = Field(min_length=1)
    kind: Literal["query", "document"] = "query"


class EncodeResponse(BaseModel):
    kind: str
    vectors: list[list[list[float]]] = Field(description="per text, its token vectors (tokens, dim)")


class Document(Strict):
    id: DocId
    text: Text
    metadata: Optional[dict[str, Any]] = None


class AddRequest(Strict):
    documents: list[Document] = Field(min_length=1)
    store_text: bool = Field(True, description="keep each text in its metadata (returned by search)")


class AddResponse(BaseModel):
    added: int
    generation: int


class DeleteRequest(Strict):
    ids: list[DocId] = Field(min_length=1)


class DeleteResponse(BaseModel):
    deleted: int
    generation: int


class Health(BaseModel):
    status: str
    generation: int
    live_docs: int


class ErrorBody(BaseModel):
    error: str
    field: Optional[str]
    status: int


ERRORS = {code: {"model": ErrorBody} for code in (400, 409, 413, 415, 422, 503)}
ENDPOINTS = {"/search", "/rerank", "/encode", "/documents", "/stats", "/health", "/metrics", "/openapi.json",
             "/docs"}


def _error(status: int, field: Optional[str], message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, "status": status}, status_code=status, headers=headers)


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "none", "null"}


def _field_of(loc) -> Optional[str]:
    # pydantic names the union member that failed ("id.constrained-int"): not a request field
    parts = [str(p) for p in loc if p != "body" and str(p) not in _UNION_TAGS
             and not str(p).startswith(("constrained-", "function-", "list[", "dict["))]
    return ".".join(parts) or "body"


class _BodyTooLarge(HTTPException):
    pass


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413 (by Content-Length
    before reading, or while streaming for chunked bodies)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    if int(value) <= self.max_bytes * 4:
                        # Read (and drop) a moderately large body before answering: a client
                        # still sending it would otherwise meet a reset instead of the 413.
                        message = {"more_body": True}
                        while message.get("more_body") and message.get("type", "http.request") == "http.request":
                            message = await receive()
                    response = _error(413, "body", f"request body of {int(value)} bytes exceeds the limit of "
                                                   f"{self.max_bytes} bytes (--max-body-bytes)")
                    return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(413, f"request body exceeds the limit of {self.max_bytes} bytes "
                                             "(--max-body-bytes)")
            return message

        return await self.app(scope, limited_receive, send)


class Timing:
    """ASGI middleware: counts and times every request in :class:`Metrics`."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
                self.metrics.observe_request(scope["method"], endpoint, status, time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, send_status)


def create_app(config: ServeConfig, service: Optional[Service] = None) -> FastAPI:
    """The ASGI app. The encoder and index load at startup (before the port accepts
    connections) unless ``service`` is given."""
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        svc = service or await asyncio.get_running_loop().run_in_executor(None, Service, config)
        batcher = Batcher(svc.read_batch, svc.reader_executor, max_batch=config.max_batch,
                          max_wait_ms=config.max_wait_ms, max_queue=config.max_queue, on_batch=metrics.observe_batch)
        batcher.start()
        state.update(service=svc, batcher=batcher)
        try:
            yield
        finally:
            await batcher.stop()
            if service is None:
                svc.close()

    app = FastAPI(title="colbert-engine", version=__version__, lifespan=lifespan,
                  description="Late-interaction (ColBERT) search over one index: search, rerank, encode, "
                              "add and delete documents. Concurrent requests are batched.")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(Timing, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return _error(400, "body", f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
        content_type = request.headers.get("content-type", "")
        if request.method in ("POST", "DELETE") and "json" not in content_type:
            # FastAPI parses JSON only when declared (a guard against cross-site form posts)
            return _error(415, "body", f"send the body as JSON with Content-Type: application/json "
                                       f"(got {content_type or 'none'!r})")
        return _error(422, field, f"{field}: {first.get('msg')}" + (f" (and {len(errors) - 1} more errors)"
                                                                    if len(errors) > 1 else ""))

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own HTTPException derives from it
    async def _http(request: Request, exc: StarletteHTTPException):
        field = "body" if exc.status_code in (400, 413) else None
        message = str(exc.detail)
        if message == "There was an error parsing the body":  # e.g. bytes that are not UTF-8
            message = "malformed body: not UTF-8 JSON"
        return _error(exc.status_code, field, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientError)
    async def _client(request: Request, exc: ClientError):
        return _error(exc.status, exc.field, exc.message)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded):
        return _error(503, None, str(exc), headers={"Retry-After": "1"})

    def svc() -> Service:
        return state["service"]

    def check_count(name: str, values, limit: int) -> None:
        if values is not None and len(values) > limit:
            raise ClientError(422, name, f"{name}: {len(values)} items exceeds the limit of {limit} per request")

    def check_texts(name: str, texts, limit: Optional[int] = None) -> None:
        check_count(name, texts, config.max_texts if limit is None else limit)
        for i, text in enumerate(texts or ()):
            if len(text) > config.max_text_chars:
                raise ClientError(422, f"{name}.{i}", f"{name}.{i}: {len(text)} characters exceeds the limit of "
                                                      f"{config.max_text_chars}")

    def as_vectors(name: str, values, ndim: int) -> torch.Tensor:
        dim, service_ = None, svc()
        try:
            tensor = torch.tensor(values, dtype=torch.float32)
        except (ValueError, TypeError):  # ragged nesting
            raise ClientError(422, name, f"{name}: every vector must have the same number of values") from None
        if tensor.dim() != ndim or tensor.numel() == 0:
            raise ClientError(422, name, f"{name}: expected a non-empty {ndim}-level array, got shape "
                                         f"{tuple(tensor.shape)}")
        dim = tensor.shape[-1]
        if dim != service_.dim:
            raise ClientError(422, name, f"{name}: vectors have {dim} values, the index's dim is {service_.dim}")
        if tensor.shape[-2] > 8192:
            raise ClientError(422, name, f"{name}: {tensor.shape[-2]} tokens exceeds the limit of 8192")
        if not torch.isfinite(tensor).all():  # float32 overflow of huge finite JSON numbers
            raise ClientError(422, name, f"{name}: values must be finite float32 numbers")
        return tensor

    async def read(job):
        return await state["batcher"].submit(job)

    @app.post("/search", response_model=SearchResponse, response_model_exclude_unset=True, responses=ERRORS,
              summary="Top-k documents per query (texts or vectors), batched with concurrent requests")
    async def search(body: SearchRequest):
        check_texts("queries", body.queries)
        check_count("query_vectors", body.query_vectors, config.max_texts)
        if body.k > config.max_k:
            raise ClientError(422, "k", f"k: {body.k} exceeds the limit of {config.max_k}")
        if body.filter is not None and body.filter.ids is not None:
            check_count("filter.ids", body.filter.ids, config.max_candidates)
        vectors = None if body.query_vectors is None else as_vectors("query_vectors", body.query_vectors, 3)
        job = SearchJob(k=body.k, texts=body.queries, vectors=vectors,
                        filter=None if body.filter is None else body.filter.as_library_filter(),
                        nprobe=body.nprobe, centroid_score_threshold=body.centroid_score_threshold,
                        ndocs=body.ndocs, exact=body.exact, include_metadata=body.include_metadata)
        return {"results": await read(job)}

    @app.post("/rerank", response_model=RerankResponse, response_model_exclude_unset=True, responses=ERRORS,
              summary="Exact MaxSim of one query against candidate ids (stored) or texts")
    async def rerank(body: RerankRequest):
        check_count("ids", body.ids, config.max_candidates)
        check_texts("texts", body.texts, config.max_candidates)
        vector = None if body.query_vector is None else as_vectors("query_vector", body.query_vector, 2)
        return await read(RerankJob(query=body.query, query_vector=vector, ids=body.ids, texts=body.texts))

    @app.post("/encode", response_model=EncodeResponse, responses=ERRORS,
              summary="Texts -> token vectors (as queries or as documents)")
    async def encode(body: EncodeRequest):
        check_texts("texts", body.texts)
        return await read(EncodeJob(texts=body.texts, kind=body.kind))

    async def write(operation: str, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(svc().writer_executor, lambda: svc().write(operation, **kwargs))

    @app.post("/documents", response_model=AddResponse, responses=ERRORS,
              summary="Encode and add documents (one new index generation); ids must be new")
    async def add_documents(body: AddRequest):
        check_count("documents", body.documents, config.max_texts)
        for i, document in enumerate(body.documents):
            if len(document.text) > config.max_text_chars:
                raise ClientError(422, f"documents.{i}.text", f"documents.{i}.text: {len(document.text)} characters "
                                                              f"exceeds the limit of {config.max_text_chars}")
        ids = [d.id for d in body.documents]
        if len(set(ids)) != len(ids):
            raise ClientError(422, "documents.id", "documents.id: ids repeat within the request")
        return await write("add", texts=[d.text for d in body.documents], ids=ids,
                           metadata=[d.metadata for d in body.documents], store_text=body.store_text)

    @app.delete("/documents", response_model=DeleteResponse, responses=ERRORS,
                summary="Delete documents by id (unknown ids are ignored)")
    async def delete_documents(body: DeleteRequest):
        check_count("ids", body.ids, max(config.max_texts, config.max_candidates))
        return await write("delete", ids=body.ids)

    async def stats_now() -> dict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(svc().reader_executor, svc().current_stats)

    @app.get("/stats", summary="Index statistics, encoder and service limits")
    async def stats() -> dict[str, Any]:
        service_ = svc()
        limits = {k: getattr(config, k) for k in ("max_batch", "max_wait_ms", "max_queue", "max_texts",
                                                  "max_text_chars", "max_k", "max_candidates", "max_body_bytes")}
        return {"index": await stats_now(), "encoder": {**service_.encoder_config, "dim": service_.dim,
                                                        "query_length": service_.query_length},
                "limits": limits, "version": __version__, "pid": os.getpid()}

    @app.get("/health", response_model=Health, summary="Liveness: the index is open")
    async def health():
        snapshot = svc().snapshot
        return {"status": "ok", "generation": snapshot["generation"], "live_docs": snapshot["live_docs"]}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format 0.0.4)")
    async def prometheus():
        snapshot = await stats_now()
        gauges = {"colbert_engine_index_generation": ("Committed index generation being searched.",
                                                      snapshot["generation"]),
                  "colbert_engine_index_live_docs": ("Live documents in the index.", snapshot["live_docs"]),
                  "colbert_engine_index_tokens": ("Token vectors in the index.", snapshot["tokens"]),
                  "colbert_engine_queue_waiting": ("Requests waiting for a batch.", state["batcher"].waiting)}
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers (``serve --workers N``): the config comes from the env."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def serve(config: ServeConfig, *, log_level: str = "warning", access_log: bool = False) -> None:
    import uvicorn

    if config.workers > 1:
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("colbert_engine.server.app:app_from_env", factory=True, host=config.host, port=config.port,
                    workers=config.workers, log_level=log_level, access_log=access_log)
    else:
        uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=log_level,
                    access_log=access_log)
