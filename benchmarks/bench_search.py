"""Index build and search on a synthetic clustered collection; prints a table.

    PYTHONPATH=python python benchmarks/bench_search.py --tokens 1000000 --threads 2

Measures, in one run: build time, bytes/token, peak RSS of the build above the input
(Linux VmHWM, reset before the build via /proc/self/clear_refs), p50/p95 ms per query
(one query per call, as a user would send them) at k = 10 / 100 / 1000 with the default
funnel, the same for exhaustive exact search, and recall@k of the default search against
exact search. The collection comes from :mod:`colbert_engine.testing`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _latencies(fn, queries) -> np.ndarray:
    times = []
    for q in range(queries.shape[0]):
        start = time.perf_counter()
        fn(queries[q])
        times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="collection size in tokens (~100 per doc)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exact-queries", type=int, default=10, help="queries timed for exact search")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from colbert_engine import Index, ops
    from colbert_engine.testing import clustered_collection

    torch.set_num_threads(args.threads)
    ops.set_num_threads(args.threads)
    data = clustered_collection(n_docs=max(10, args.tokens // 100), mean_doc_len=100, dim=args.dim,
                                n_queries=args.queries, seed=0)
    n_tokens = int(data.doc_offsets[-1])
    input_mb = data.doc_emb.numel() * 4 / 2**20
    workdir = Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        rss_before = _rss_kb("VmRSS")
        peak_ok = _reset_peak()
        start = time.perf_counter()
        index = Index.build(workdir / "index", data.doc_emb, data.doc_offsets, nbits=args.nbits)
        build_s = time.perf_counter() - start
        peak_above_mb = (_rss_kb("VmHWM") - rss_before) / 1024 if peak_ok else float("nan")
        stats = index.stats()
        folder_bytes = sum(p.stat().st_size for p in (workdir / "index").iterdir())

        rows = []
        exact_ids = index.search_internal(data.queries, k=1000, exact=True)
        for k in (10, 100, 1000):
            approx = index.search_internal(data.queries, k=k)
            recall = np.mean([len(set(a.tolist()) & set(t[:k].tolist())) / min(k, t.numel())
                              for (_, a), (_, t) in zip(approx, exact_ids)])
            times = _latencies(lambda q: index.search(q, k=k), data.queries)
            rows.append({"k": k, "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                         "recall_vs_exact": float(recall)})
        exact_times = _latencies(lambda q: index.search(q, k=10, exact=True), data.queries[:args.exact_queries])
        batch_start = time.perf_counter()
        index.search(data.queries, k=10)
        batch_ms = (time.perf_counter() - batch_start) * 1e3 / data.queries.shape[0]
        index.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "tokens": n_tokens, "docs": data.n_docs, "dim": args.dim, "nbits": args.nbits, "threads": args.threads,
        "centroids": stats["centroids"], "build_s": build_s, "bytes_per_token_segments": stats["bytes_per_token"],
        "bytes_per_token_folder": folder_bytes / n_tokens, "index_mb": folder_bytes / 2**20, "input_mb": input_mb,
        "build_peak_rss_above_input_mb": peak_above_mb, "search": rows,
        "exact_p50_ms": float(np.percentile(exact_times, 50)), "batched_ms_per_query_k10": batch_ms,
    }
    print(f"collection: {n_tokens:,} tokens, {data.n_docs:,} docs, dim {args.dim}, {args.nbits} bits, "
          f"{stats['centroids']} centroids, {args.threads} threads")
    print(f"build {build_s:.1f} s | {result['bytes_per_token_segments']:.1f} B/token (segments), "
          f"{result['bytes_per_token_folder']:.1f} B/token (folder) | index {result['index_mb']:.1f} MB | "
          f"peak RSS above input {peak_above_mb:.0f} MB (input {input_mb:.0f} MB)")
    print(f"{'k':>6} {'p50 ms':>8} {'p95 ms':>8} {'recall vs exact':>16}")
    for row in rows:
        print(f"{row['k']:>6} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['recall_vs_exact']:>16.3f}")
    print(f"exact search (k=10) p50 {result['exact_p50_ms']:.1f} ms/query; default k=10 batched "
          f"{batch_ms:.2f} ms/query")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
