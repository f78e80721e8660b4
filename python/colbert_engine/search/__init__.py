"""Index -> top-k documents: one funnel (:class:`Searcher`) and its parameters."""

from colbert_engine.search.params import SearchParams, check_count, default_params
from colbert_engine.search.searcher import Searcher
from colbert_engine.search.threads import search_thread_team

__all__ = ["Searcher", "SearchParams", "check_count", "default_params", "search_thread_team"]
