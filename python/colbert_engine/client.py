"""A small synchronous client for ``colbert-engine serve`` (built on httpx, in the ``serve``
extra). One method per endpoint::

    from colbert_engine.client import Client

    with Client("http://127.0.0.1:8000") as client:
        hits = client.search(["who painted the Mona Lisa"], k=5)[0]   # [{"id", "score"}, ...]

Errors the server answers (4xx/5xx) raise :class:`ServiceError` with its status, the field
it names and the message.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


class ServiceError(Exception):
    def __init__(self, status: int, field: Optional[str], message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.field, self.message = status, field, message


def _filter_body(filter) -> Optional[dict]:
    """The library's filter forms -> the request's: ``(clause, params)`` or a clause string ->
    ``{"where", "params"}``; a list of ids -> ``{"ids"}``; a dict is passed as is."""
    if filter is None or isinstance(filter, dict):
        return filter
    if isinstance(filter, str):
        return {"where": filter}
    if isinstance(filter, tuple) and len(filter) == 2 and isinstance(filter[0], str):
        params = filter[1]
        return {"where": filter[0], "params": params if isinstance(params, dict) else list(params)}
    return {"ids": list(filter)}


def _vectors(values) -> list:
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32).tolist()


class Client:
    """``Client(url, timeout=60)``; reuses one HTTP connection pool; close it (or use ``with``)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 60.0):
        try:
            import httpx
        except ImportError:
            raise ImportError("colbert_engine.client needs httpx: pip install 'colbert-engine[serve]'") from None
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method: str, path: str, body: Optional[dict] = None):
        response = self._http.request(method, path, json=body)
        if response.status_code >= 400:
            try:
                error = response.json()
                raise ServiceError(response.status_code, error.get("field"), error.get("error", response.text))
            except (ValueError, AttributeError):
                raise ServiceError(response.status_code, None, response.text) from None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # ------------------------------------------------------------------ reading
    def search(self, queries: Optional[Sequence[str]] = None, *, query_vectors=None, k: int = 10, filter=None,
               include_metadata: bool = False, nprobe: Optional[int] = None,
               centroid_score_threshold: Optional[float] = None, ndocs: Optional[int] = None,
               exact: bool = False) -> list[list[dict]]:
        """Per query, hits ``{"id", "score"(, "metadata")}`` best first. ``queries`` are texts;
        or pass ``query_vectors`` ``(nq, Lq, dim)`` (numpy, torch or lists). ``filter`` takes the
        library's forms: ``(sql_clause, params)``, a clause string, or a list of ids."""
        body: dict[str, Any] = {"k": k, "exact": exact, "include_metadata": include_metadata}
        if queries is not None:
            body["queries"] = [queries] if isinstance(queries, str) else list(queries)
        if query_vectors is not None:
            body["query_vectors"] = _vectors(query_vectors)
        for name, value in (("filter", _filter_body(filter)), ("nprobe", nprobe), ("ndocs", ndocs),
                            ("centroid_score_threshold", centroid_score_threshold)):
            if value is not None:
                body[name] = value
        return self._call("POST", "/search", body)["results"]

    def rerank(self, query: Optional[str] = None, *, ids: Optional[Sequence] = None,
               texts: Optional[Sequence[str]] = None, query_vector=None) -> dict:
        """Exact MaxSim of one query against candidate ``ids`` (stored documents) or ``texts``:
        ``{"results": [{"id" or "index", "score"}, ...] best first, "missing": [ids not found]}``."""
        body: dict[str, Any] = {}
        if query is not None:
            body["query"] = query
        if query_vector is not None:
            body["query_vector"] = _vectors(query_vector)
        if ids is not None:
            body["ids"] = list(ids)
        if texts is not None:
            body["texts"] = list(texts)
        return self._call("POST", "/rerank", body)

    def encode(self, texts: Sequence[str], kind: str = "query") -> list[np.ndarray]:
        """Per text, its token vectors ``(tokens, dim)`` float32 (queries: always the encoder's
        query length; documents: the kept tokens)."""
        result = self._call("POST", "/encode", {"texts": list(texts), "kind": kind})
        return [np.asarray(v, dtype=np.float32) for v in result["vectors"]]

    # ------------------------------------------------------------------ writing
    def add(self, ids: Sequence, texts: Sequence[str], metadata: Optional[Sequence[Optional[dict]]] = None, *,
            store_text: bool = True) -> dict:
        """Encode and add documents (new ids); ``{"added", "generation"}``."""
        ids, texts = list(ids), list(texts)
        metadata = [None] * len(ids) if metadata is None else list(metadata)
        if not len(ids) == len(texts) == len(metadata):
            raise ValueError(f"ids, texts, metadata: lengths differ ({len(ids)}, {len(texts)}, {len(metadata)})")
        documents = [{"id": i, "text": t, **({"metadata": m} if m is not None else {})}
                     for i, t, m in zip(ids, texts, metadata)]
        return self._call("POST", "/documents", {"documents": documents, "store_text": store_text})

    def delete(self, ids: Sequence) -> int:
        """Delete documents by id; returns how many were live."""
        return self._call("DELETE", "/documents", {"ids": list(ids)})["deleted"]

    # ------------------------------------------------------------------ status
    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def health(self) -> dict:
        return self._call("GET", "/health")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")
