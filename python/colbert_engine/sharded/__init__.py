"""Sharded indexes: N ordinary index folders sharing one codec, built in this process or on
Ray, searched by fan-out and merge. Format and rules: ``FORMAT.md`` in this folder.

    from colbert_engine.sharded import ShardedIndex
    index = ShardedIndex.build("idx", doc_emb, doc_offsets, ids=ids, n_shards=4)   # ray=True: on Ray
    hits = index.search(queries, k=10)
"""

from colbert_engine.sharded.index import PartialResults, ShardedIndex, ShardError
from colbert_engine.sharded.manifest import is_sharded, shard_of

__all__ = ["ShardedIndex", "ShardError", "PartialResults", "is_sharded", "shard_of"]
