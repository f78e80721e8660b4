"""Index -> top-k documents: the PLAID pipeline and its parameters."""
