"""Token vectors -> compressed on-disk index: codec training, format, writer, reader.

The public class is :class:`colbert_engine.Index` (defined in :mod:`.index`); the on-disk
format is documented in ``FORMAT.md`` in this folder.
"""

from colbert_engine.index.index import Index
from colbert_engine.index.writer import IndexLockedError

__all__ = ["Index", "IndexLockedError"]
