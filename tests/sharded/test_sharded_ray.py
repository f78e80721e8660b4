"""Sharded index on one local Ray instance (``ray_local``: started once per session):
the same files as the in-process build, search through shard actors, a killed actor."""

from __future__ import annotations

import pytest
import torch

from colbert_engine.sharded import ShardedIndex, ShardError

from sharded_helpers import doc_ids, doc_metadata, same_files

pytestmark = pytest.mark.usefixtures("ray_local")


def test_ray_build_from_vectors_equals_in_process(shard_collection, sharded_built, tmp_path):
    c = shard_collection
    report = {}
    ShardedIndex.build(tmp_path / "ray", c.doc_emb, c.doc_offsets, ids=doc_ids(c.n_docs),
                       metadata=doc_metadata(c.n_docs), n_shards=3, docs_per_part=128, ray=True, report=report).close()
    assert same_files(sharded_built, tmp_path / "ray") == []
    assert len(report["shards"]) == 3 and all(s["peak_rss_mb"] > 0 for s in report["shards"])


def test_search_on_shard_actors_and_writes(sharded_copy, shard_collection):
    queries = shard_collection.queries
    with ShardedIndex.open(sharded_copy) as here, ShardedIndex.open(sharded_copy, ray=True) as remote:
        assert remote.search(queries, k=10) == here.search(queries, k=10)
        assert remote.search(queries, k=7, exact=True, filter=("json_extract(metadata, '$.n') < ?", [100])) == \
            here.search(queries, k=7, exact=True, filter=("json_extract(metadata, '$.n') < ?", [100]))
        with pytest.raises(ValueError, match="filter"):
            remote.search(queries, k=3, filter=("no_such_column = 1", []))
        new = torch.nn.functional.normalize(torch.randn(30, 64, generator=torch.Generator().manual_seed(4)), dim=1)
        assert remote.add(new, torch.tensor([0, 12, 30]), ids=["r1", "r2"]) == ["r1", "r2"]
        assert remote.delete(["r1", "doc-3"]) == 2
        assert remote.metadata(["r2", "r1"]) == [None, None] and remote.n_live == shard_collection.n_docs
    with ShardedIndex.open(sharded_copy) as again:
        assert again.shards_ahead == [] and again.search(new[12:].unsqueeze(0), k=1, exact=True)[0][0][0] == "r2"


def test_killed_shard_actor_is_restarted_and_retried(sharded_built, shard_collection, ray_local):
    queries = shard_collection.queries[:4]
    with ShardedIndex.open(sharded_built) as here:
        want = here.search(queries, k=5)
    with ShardedIndex.open(sharded_built, ray=True) as remote:
        pids = remote._backend.pids()
        ray_local.kill(remote._backend.actors[1], no_restart=False)  # like a crashed worker process
        assert remote.search(queries, k=5) == want
        assert remote._backend.pids()[1] != pids[1]
        ray_local.kill(remote._backend.actors[2], no_restart=True)  # gone for good
        with pytest.raises(ShardError, match="shard-0002") as info:
            remote.search(queries, k=5)
        assert list(info.value.failed) == ["shard-0002"]
        partial = remote.search(queries, k=5, allow_partial=True)
        assert partial.answered == ["shard-0000", "shard-0001"] and list(partial.failed) == ["shard-0002"]
