"""``colbert-engine index --shards N [--ray ADDRESS]`` and the other commands on a sharded
index; text through the tiny encoder, in this process and on Ray (the same files)."""

from __future__ import annotations

import functools
import json
import shutil

import pytest

from colbert_engine import Index, cli
from colbert_engine.sharded import ShardedIndex, is_sharded

from sharded_helpers import same_files


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cli_built(tiny_model, tmp_path_factory):
    model, docs = tiny_model
    index = tmp_path_factory.mktemp("cli") / "idx"
    assert cli.main(["index", str(docs), str(index), "--model", str(model),
                     "--shards", "2", "--quiet", "--chunk-docs", "24"]) == 0
    return index


def test_cli_sharded_index_search_add_delete(cli_built, tiny_model, tmp_path, capsys):
    model, docs = tiny_model
    index = tmp_path / "idx"
    shutil.copytree(cli_built, index)
    assert is_sharded(index)
    code, out, err = run(capsys, "search", index, "physics energy light", "--k", 4, "--json")
    assert code == 0, err
    hits = json.loads(out)["results"]
    assert len(hits) == 4 and all(h["metadata"]["text"] for h in hits)
    code, out, err = run(capsys, "search", index / "shard-0001", "physics energy", "--k", 2, "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 2  # one shard alone is an ordinary index
    code, out, _ = run(capsys, "info", index, "--json")
    assert code == 0 and json.loads(out)["shards"] == 2 and json.loads(out)["docs"] == 60
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "new-1", "text": "quantum field theory"}) + "\n")
    code, out, err = run(capsys, "add", index, extra, "--quiet")
    assert code == 0 and "added 1 documents" in out, err
    code, out, err = run(capsys, "delete", index, "new-1", "t3", "missing")
    assert code == 0 and "deleted 2 of 3" in out, err
    with ShardedIndex.open(index) as sharded:
        assert sharded.n_live == 59 and sharded.generation == 3
    code, _, err = run(capsys, "search", index, "x", "--filter", "no_such_column = 1")
    assert code == 2 and "--filter" in err
    code, _, err = run(capsys, "index", docs, tmp_path / "bad", "--model", model, "--shards", 0, "--quiet")
    assert code == 2 and "--shards" in err and not (tmp_path / "bad").exists()


def test_build_from_text_equals_cli_build(cli_built, tiny_model, tmp_path):
    from colbert_engine import Encoder

    model, docs = tiny_model
    factory = functools.partial(Encoder.from_pretrained, str(model))
    with ShardedIndex.build_from_text(tmp_path / "api", docs, factory, n_shards=2, chunk_docs=24) as index:
        assert index.n_docs == 60
        assert index.metadata(["t5"]) == [{"topic": 1, "text": json.loads(docs.read_text().splitlines()[5])["text"]}]
    assert same_files(cli_built, tmp_path / "api", ignore=("encoder.json",)) == []


@pytest.mark.usefixtures("ray_local")
def test_cli_index_and_search_on_ray_equal_in_process(cli_built, tiny_model, tmp_path, capsys):
    model, docs = tiny_model
    code, _, err = run(capsys, "index", docs, tmp_path / "on-ray", "--model", model, "--shards", 2, "--ray", "local",
                       "--quiet", "--chunk-docs", 24)
    assert code == 0, err
    assert same_files(cli_built, tmp_path / "on-ray") == []  # encoded by Ray encoder actors: same files
    code, out, err = run(capsys, "search", tmp_path / "on-ray", "hello world", "--k", 3, "--json", "--ray", "local")
    assert code == 0, err
    code, here, err = run(capsys, "search", cli_built, "hello world", "--k", 3, "--json")
    assert json.loads(out)["results"] == json.loads(here)["results"]
    with Index.open(tmp_path / "on-ray" / "shard-0000") as shard:
        assert shard.n_docs > 0
