"""colbert-engine: multilingual late-interaction retrieval (Jina-ColBERT-v2, ColBERT/PLAID).

Data flows one way: text -> token vectors (``colbert_engine.model``) -> compressed index
(``colbert_engine.index``) -> search (``colbert_engine.search``). The kernels alone live in
``colbert_engine.ops``.
"""

from colbert_engine import ops  # noqa: F401
from colbert_engine._version import __version__

__all__ = ["ops", "Encoder", "Index", "__version__"]


def __getattr__(name):
    # Lazy: the model package (tokenizers, safetensors) and the index (sqlite3) load only
    # when first asked for.
    if name == "Encoder":
        from colbert_engine.model import Encoder

        return Encoder
    if name == "Index":
        from colbert_engine.index import Index

        return Index
    raise AttributeError(f"module 'colbert_engine' has no attribute {name!r}")
