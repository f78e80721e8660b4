"""colbert-engine: multilingual late-interaction retrieval (Jina-ColBERT-v2, ColBERT/PLAID).

Data flows one way: text -> token vectors (``colbert_engine.model``) -> compressed index
(``colbert_engine.index``) -> search (``colbert_engine.search``). The kernels alone live in
``colbert_engine.ops``.
"""

__version__ = "0.1.0"

from colbert_engine import ops  # noqa: E402,F401

__all__ = ["ops", "Index", "__version__"]


def __getattr__(name):
    # Index pulls in sqlite3 and the index modules; import it on first use only.
    if name == "Index":
        from colbert_engine.index import Index

        return Index
    raise AttributeError(f"module 'colbert_engine' has no attribute {name!r}")
