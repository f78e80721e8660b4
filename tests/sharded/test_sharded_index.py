"""Sharded index in this process: format, exact merge, routing of writes, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from colbert_engine import Index
from colbert_engine.sharded import PartialResults, ShardedIndex, ShardError, shard_of
from colbert_engine.sharded import manifest as M
from colbert_engine.sharded.index import _merge

from sharded_helpers import doc_ids, doc_metadata, same_files

LANG_DE = ("json_extract(metadata, '$.lang') = ?", ["de"])


@pytest.fixture(scope="module")
def single_with_codec(sharded_built, shard_collection, tmp_path_factory):
    """One ordinary index of the same documents compressed with the shards' codec."""
    c = shard_collection
    with ShardedIndex.open(sharded_built) as sharded:
        codec = sharded.codec
    path = tmp_path_factory.mktemp("single") / "one"
    Index.build(path, c.doc_emb, c.doc_offsets, ids=doc_ids(c.n_docs), metadata=doc_metadata(c.n_docs),
                codec=codec).close()
    return path


def test_layout_manifest_and_shards_open_alone(sharded_built, shard_collection):
    m = M.read_manifest(sharded_built)
    assert m["format"] == "colbert-engine-sharded" and m["format_version"] == 2 and m["generation"] == 1
    assert [e["name"] for e in m["shards"]] == ["shard-0000", "shard-0001", "shard-0002"]
    assert sum(e["n_docs"] for e in m["shards"]) == shard_collection.n_docs
    assert sum(e["n_tokens"] for e in m["shards"]) == shard_collection.doc_emb.shape[0]
    codec = {name: (sharded_built / name).read_bytes() for name in m["codec"]}
    for entry in m["shards"]:
        with Index.open(sharded_built / entry["name"]) as shard:  # an ordinary index
            assert shard.generation == entry["generation"] and shard.n_docs == entry["n_docs"]
            # every document sits in the shard its id routes to
            ids = shard._ids.external_ids(list(range(shard.n_docs)))
            assert {shard_of(i, 3) for i in ids.values()} == {int(entry["name"][-4:])}
        for name, data in codec.items():
            assert (sharded_built / entry["name"] / name).read_bytes() == data
    assert not (sharded_built / ".spool").exists()


@pytest.mark.parametrize("k", [1, 10, 37])
def test_exact_over_shards_equals_exact_over_one_index(sharded_built, single_with_codec, shard_collection, k):
    queries = shard_collection.queries
    with ShardedIndex.open(sharded_built) as sharded, Index.open(single_with_codec) as one:
        for kwargs in ({}, {"filter": LANG_DE}):
            got = sharded.search(queries, k=k, exact=True, **kwargs)
            want = one.search(queries, k=k, exact=True, **kwargs)
            assert got == want


def test_default_search_recall_vs_single_index(sharded_built, single_with_codec, shard_collection):
    queries = shard_collection.queries
    with ShardedIndex.open(sharded_built) as sharded, Index.open(single_with_codec) as one:
        got, want = sharded.search(queries, k=10), one.search(queries, k=10)
        overlap = np.mean([len({i for i, _ in a} & {i for i, _ in b}) / len(b) for a, b in zip(got, want)])
        recall = sharded.recall(queries, k=10)
        print(f"sharded vs single index top-10 overlap {overlap:.3f}; sharded recall@10 vs exact {recall:.3f}")
        assert overlap >= 0.9 and recall >= 0.9
        single = sharded.search(queries[0], k=5)
        assert single == got[0][:5]


def test_merge_orders_ties_by_shard_then_rank():
    per_shard = [[[("a", 1.0), ("b", 0.5)]], [[("c", 1.0), ("d", 2.0)]], [[]]]
    assert _merge(per_shard, 3) == [[("d", 2.0), ("a", 1.0), ("c", 1.0)]]
    assert _merge(per_shard, 10)[0][-1] == ("b", 0.5)


def test_filters_apply_per_shard(sharded_built, shard_collection):
    with ShardedIndex.open(sharded_built) as sharded:
        hits = sharded.search(shard_collection.queries, k=20, filter=LANG_DE)
        assert all(int(i.split("-")[1]) % 3 == 0 for q in hits for i, _ in q)
        wanted = ["doc-3", "doc-4", "doc-400", "nope"]
        hits = sharded.search(shard_collection.queries[:2], k=10, filter=wanted, exact=True)
        assert {i for q in hits for i, _ in q} == {"doc-3", "doc-4", "doc-400"}
        assert sharded.metadata(["doc-4", "nope", "doc-3"]) == [{"lang": "en", "n": 4}, None, {"lang": "de", "n": 3}]


def test_add_and_delete_route_by_id(sharded_copy, shard_collection):
    c = shard_collection
    with ShardedIndex.open(sharded_copy) as sharded:
        new = torch.nn.functional.normalize(torch.randn(70, 64, generator=torch.Generator().manual_seed(1)), dim=1)
        offsets = torch.tensor([0, 10, 30, 45, 70])
        added = sharded.add(new, offsets, ids=["x1", "x2", "x3", 77], metadata=[{"lang": "fr"}] * 4)
        assert added == ["x1", "x2", "x3", 77] and sharded.n_live == c.n_docs + 4 and sharded.generation == 2
        for doc_id in added:
            with Index.open(sharded_copy / M.shard_name(shard_of(doc_id, 3))) as shard:
                assert shard.metadata([doc_id]) == [{"lang": "fr"}]
        # an added document is found by its own vectors
        assert sharded.search(new[10:30].unsqueeze(0), k=1, exact=True)[0][0][0] == "x2"
        with pytest.raises(ValueError, match="already in the index"):
            sharded.add(new[:10], torch.tensor([0, 10]), ids=["doc-7"])
        assert sharded.n_live == c.n_docs + 4
        defaults = sharded.add(new[:10], torch.tensor([0, 4, 10]))
        assert defaults == [c.n_docs + 4, c.n_docs + 5]
        assert sharded.delete(["doc-1", "x2", "unknown", 77]) == 3
        assert sharded.delete("doc-2") == 1
        hits = sharded.search(c.queries, k=50, exact=True)
        assert not {"doc-1", "doc-2", "x2", 77} & {i for q in hits for i, _ in q}
        gen = sharded.generation
    with ShardedIndex.open(sharded_copy) as again:  # the manifest recorded every shard's write
        assert again.generation == gen and again.shards_ahead == []
        assert again.n_live == c.n_docs + 6 - 4
        again.compact()
        assert again.stats()["deleted_docs"] == 0 and again.n_live == c.n_docs + 2


def test_streamed_batches_build_equals_packed(shard_collection, sharded_built, tmp_path):
    c = shard_collection
    ids, meta = doc_ids(c.n_docs), doc_metadata(c.n_docs)

    def batches():  # same parts as the packed build (128 documents each)
        for start in range(0, c.n_docs, 128):
            end = min(start + 128, c.n_docs)
            t0, t1 = int(c.doc_offsets[start]), int(c.doc_offsets[end])
            yield c.doc_emb[t0:t1].numpy(), c.doc_offsets[start:end + 1] - t0, ids[start:end], meta[start:end]

    ShardedIndex.build(tmp_path / "streamed", batches(), n_shards=3).close()
    assert same_files(sharded_built, tmp_path / "streamed") == []


def test_more_shards_than_documents(tmp_path):
    emb = torch.nn.functional.normalize(torch.randn(30, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    with ShardedIndex.build(tmp_path / "few", emb, torch.tensor([0, 7, 20, 30]), n_shards=8) as index:
        sizes = [e["n_docs"] for e in index._manifest["shards"]]
        assert sum(sizes) == 3 and sizes.count(0) >= 5
        assert [i for i, _ in index.search(emb[:7], k=5, exact=True)][0] == 0
        assert len(index.search(emb[:7], k=5)) == 3


def test_bad_input_errors(sharded_built, shard_collection, tmp_path):
    c = shard_collection
    with ShardedIndex.open(sharded_built) as sharded:
        with pytest.raises(ValueError, match="queries"):
            sharded.search(torch.randn(2, 4, 32), k=3)
        with pytest.raises(ValueError, match="k"):
            sharded.search(c.queries, k=0)
        with pytest.raises(TypeError, match="ids"):
            sharded.metadata("doc-1")
    with pytest.raises(ValueError, match="already holds a sharded index"):
        ShardedIndex.build(sharded_built, c.doc_emb, c.doc_offsets)
    with pytest.raises(ValueError, match="n_shards"):
        ShardedIndex.build(tmp_path / "x", c.doc_emb, c.doc_offsets, n_shards=0)
    with pytest.raises(ValueError, match="already in the index"):
        ShardedIndex.build(tmp_path / "dup", c.doc_emb[:80], torch.tensor([0, 40, 80]), ids=["a", "a"])
    with pytest.raises(ValueError, match="no sharded index manifest"):
        ShardedIndex.open(tmp_path)


def test_open_refuses_inconsistent_shards(sharded_copy, tmp_path):
    shutil.copytree(sharded_copy, tmp_path / "older")
    with ShardedIndex.open(sharded_copy) as sharded:
        sharded.delete(["doc-0", "doc-1", "doc-5"])
    # an older copy of a shard under a newer manifest
    shutil.rmtree(sharded_copy / "shard-0001")
    shutil.copytree(tmp_path / "older" / "shard-0001", sharded_copy / "shard-0001")
    if M.read_manifest(sharded_copy)["shards"][1]["generation"] > 1:
        with pytest.raises(ValueError, match="shard-0001.*older"):
            ShardedIndex.open(sharded_copy)
    # a shard compressed with another codec
    other = tmp_path / "other"
    emb = torch.nn.functional.normalize(torch.randn(50, 64), dim=1)
    Index.build(other, emb, torch.tensor([0, 50]), n_centroids=16).close()
    shutil.rmtree(sharded_copy / "shard-0002")
    shutil.copytree(other, sharded_copy / "shard-0002")
    with pytest.raises(ValueError, match="shard-0002.*codec"):
        ShardedIndex.open(sharded_copy)
    shutil.rmtree(sharded_copy / "shard-0002")
    with pytest.raises(ValueError, match="shard-0002"):
        ShardedIndex.open(sharded_copy)


def test_shard_written_alone_is_accepted_as_ahead(sharded_copy):
    with Index.open(sharded_copy / "shard-0000") as shard:
        shard.compact()
    with ShardedIndex.open(sharded_copy) as sharded:
        assert sharded.shards_ahead == ["shard-0000"]
        sharded.delete(["doc-9"])
        sharded.compact()
        assert sharded.shards_ahead == []


def test_failing_shard_is_named_or_reported(sharded_built, shard_collection):
    queries = shard_collection.queries[:3]
    with ShardedIndex.open(sharded_built) as sharded:
        full = sharded.search(queries, k=5)
        broken = sharded._backend.indexes[1]

        def fail(*args, **kwargs):
            raise OSError("disk gone")

        broken.search = fail
        with pytest.raises(ShardError, match="shard-0001.*disk gone") as info:
            sharded.search(queries, k=5)
        assert list(info.value.failed) == ["shard-0001"]
        partial = sharded.search(queries, k=5, allow_partial=True)
        assert isinstance(partial, PartialResults) and not partial.complete
        assert partial.answered == ["shard-0000", "shard-0002"] and list(partial.failed) == ["shard-0001"]
        held = {i for q in full for i, _ in q if shard_of(i, 3) != 1}
        assert {i for q in partial.results for i, _ in q} >= held


def test_build_crash_before_manifest_leaves_no_index(shard_collection, tmp_path):
    c = shard_collection
    emb_path = tmp_path / "emb.npy"
    np.save(emb_path, c.doc_emb[:int(c.doc_offsets[100])].numpy())
    np.save(tmp_path / "off.npy", c.doc_offsets[:101].numpy())
    script = ("import numpy as np, sys; from colbert_engine.sharded import ShardedIndex; "
              f"ShardedIndex.build({str(tmp_path / 'idx')!r}, np.load({str(emb_path)!r}), "
              f"np.load({str(tmp_path / 'off.npy')!r}), n_shards=2)")
    env = dict(os.environ, COLBERT_ENGINE_CRASH_AT="sharded_build_before_manifest")
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=300)
    assert proc.returncode != 0
    assert not M.is_sharded(tmp_path / "idx")
    with pytest.raises(ValueError, match="no sharded index manifest"):
        ShardedIndex.open(tmp_path / "idx")
    # a new build cleans what the crashed one left
    with ShardedIndex.build(tmp_path / "idx", np.load(emb_path), np.load(tmp_path / "off.npy"), n_shards=2) as idx:
        assert idx.n_docs == 100


def test_corrupt_manifest_named(sharded_copy):
    path = sharded_copy / M.SHARDED_MANIFEST
    body = json.loads(path.read_text())
    body["shards"][0]["n_docs"] += 1
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match="sharded.json.*checksum"):
        ShardedIndex.open(sharded_copy)
    body["format_version"] = 99
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match="newer"):
        ShardedIndex.open(sharded_copy)
