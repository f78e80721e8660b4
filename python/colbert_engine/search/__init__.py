"""Index -> top-k documents: the PLAID pipeline and its parameters."""

from colbert_engine.search.plaid import SearchParams, default_params, exact_search, plaid_search

__all__ = ["SearchParams", "default_params", "plaid_search", "exact_search"]
