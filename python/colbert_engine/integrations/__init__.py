"""Adapters to other libraries, each imported only when used (their packages are optional):

- :mod:`colbert_engine.integrations.pylate`: ``PyLateIndex``, a ``pylate.indexes.Base`` over
  :class:`colbert_engine.Index`, so ``pylate.retrieve.ColBERT(index=...)`` searches with this
  engine.
"""
