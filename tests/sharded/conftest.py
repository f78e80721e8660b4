"""Fixtures of the sharded-index tests: a small clustered collection, its sharded index
built in this process, one local Ray instance for the whole session (skipped without ray),
and a tiny random encoder checkpoint (no download)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from colbert_engine.testing import clustered_collection
from colbert_engine.sharded import ShardedIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharded_helpers import doc_ids, doc_metadata  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))


@pytest.fixture(scope="session")
def shard_collection():
    """500 documents, ~20k tokens, 64-d, with topic structure."""
    return clustered_collection(n_docs=500, mean_doc_len=40, dim=64, n_queries=16, seed=5)


@pytest.fixture(scope="session")
def sharded_built(shard_collection, tmp_path_factory):
    """A read-only 3-shard index; tests that write copy it (``sharded_copy``)."""
    path = tmp_path_factory.mktemp("sharded") / "base"
    c = shard_collection
    index = ShardedIndex.build(path, c.doc_emb, c.doc_offsets, ids=doc_ids(c.n_docs), metadata=doc_metadata(c.n_docs),
                               n_shards=3, docs_per_part=128)
    index.close()
    return path


@pytest.fixture
def sharded_copy(sharded_built, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(sharded_built, path)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by every Ray test of the session."""
    ray = pytest.importorskip("ray", reason="ray is not installed (the [distributed] extra)")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Jina-layout checkpoint (64-d head) and a JSONL collection of its words."""
    from tiny_checkpoints import WORDS, write_checkpoint

    folder = tmp_path_factory.mktemp("tiny-model")
    write_checkpoint(folder / "model", layout="jina", head_dim=64)
    lines = []
    for i in range(60):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 9)]
        lines.append(json.dumps({"id": f"t{i}", "text": " ".join(words), "topic": i % 4}))
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "model", folder / "docs.jsonl"
