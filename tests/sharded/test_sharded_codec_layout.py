"""The shared codec's bucket layout travels with a sharded index: recorded in sharded.json
and in every shard, checked against the arrays and across shards at open."""

from __future__ import annotations

import json

import pytest

from colbert_engine import Index
from colbert_engine.index import format as F
from colbert_engine.sharded import ShardedIndex
from colbert_engine.sharded import manifest as M


def test_layout_recorded_in_the_manifest_and_every_shard(sharded_built):
    m = M.read_manifest(sharded_built)
    assert m["bucket_layout"] == "codebook"  # the default
    with ShardedIndex.open(sharded_built) as sharded:
        assert sharded.codec.bucket_layout == "codebook"
        assert tuple(sharded.codec.residual_codebook.shape) == (m["dim"] * m["nbits"] // 8, 256, 8 // m["nbits"])
    for entry in m["shards"]:
        assert json.loads((sharded_built / entry["name"] / F.MANIFEST).read_text())["bucket_layout"] == "codebook"
        with Index.open(sharded_built / entry["name"]) as shard:
            assert shard.codec.bucket_layout == "codebook"


def test_layout_that_disagrees_with_the_arrays_is_refused(sharded_copy):
    body = M.read_manifest(sharded_copy)
    body["bucket_layout"] = "pooled"
    F.write_json_manifest(sharded_copy, M.SHARDED_MANIFEST, body, "test")
    with pytest.raises(ValueError, match=r"sharded\.json: codec names .*bucket_layout 'pooled'"):
        ShardedIndex.open(sharded_copy)


def test_shard_with_another_layout_is_refused(sharded_copy):
    # same codec files, but the shard's manifest says pooled (absent field): refused as
    # another codec, naming the shard
    shard = sharded_copy / "shard-0001"
    body = json.loads((shard / F.MANIFEST).read_text())
    del body["bucket_layout"]
    F.write_manifest(shard, body)
    with pytest.raises(ValueError, match="shard-0001.*codec"):
        ShardedIndex.open(sharded_copy)


def test_shared_codec_is_trained_like_index_build(shard_collection, tmp_path):
    """The shared codec uses Index.build's training defaults (it kept k-means' old 32 points
    per centroid) and takes the same bucket_layout."""
    import inspect

    assert inspect.signature(ShardedIndex.build).parameters["max_points_per_centroid"].default == \
        inspect.signature(Index.build).parameters["max_points_per_centroid"].default
    c = shard_collection
    with ShardedIndex.build(tmp_path / "pooled", c.doc_emb, c.doc_offsets, n_shards=2,
                            bucket_layout="pooled") as index:
        assert index.codec.bucket_layout == "pooled"
    with pytest.raises(ValueError, match="bucket_layout"):
        ShardedIndex.build(tmp_path / "bad", c.doc_emb, c.doc_offsets, n_shards=2, bucket_layout="perdim")


def test_codebook_layout_travels_with_the_shared_codec(shard_collection, tmp_path, monkeypatch):
    """A product-quantized shared codec: its codebook file is the shared codec's, every shard
    holds the same one, searches match a plain index with the same codec, and a reader from
    before the layout says "newer" instead of failing on a missing file."""
    c = shard_collection
    end = int(c.doc_offsets[200])
    with ShardedIndex.build(tmp_path / "cb", c.doc_emb[:end], c.doc_offsets[:201], n_shards=2,
                            bucket_layout="codebook") as index:
        assert index.codec.bucket_layout == "codebook"
        hits = index.search(c.queries[:3], k=5)
    m = M.read_manifest(tmp_path / "cb")
    assert m["bucket_layout"] == "codebook" and m["format_version"] == 2
    assert sorted(m["codec"]) == ["codec.centroids.npy", "codec.residual_codebook.npy", "codec.rotation.npy"]
    for entry in m["shards"]:
        body = json.loads((tmp_path / "cb" / entry["name"] / F.MANIFEST).read_text())
        assert body["bucket_layout"] == "codebook" and body["format_version"] == 3
        assert {n: e["crc32"] for n, e in body["codec"].items()} == {n: e["crc32"] for n, e in m["codec"].items()}
    with ShardedIndex.open(tmp_path / "cb") as index:
        assert index.codec.bucket_layout == "codebook"
        assert [[i for i, _ in r] for r in index.search(c.queries[:3], k=5)] == [[i for i, _ in r] for r in hits]
    monkeypatch.setattr(M, "SHARDED_FORMAT_VERSION", 1)
    with pytest.raises(ValueError, match="newer than this colbert-engine reads"):
        ShardedIndex.open(tmp_path / "cb")
