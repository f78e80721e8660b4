"""Index -> top-k documents: one funnel (:class:`Searcher`) and its parameters."""

from colbert_engine.search.params import SearchParams, check_count, default_params
from colbert_engine.search.searcher import Searcher

__all__ = ["Searcher", "SearchParams", "check_count", "default_params"]
