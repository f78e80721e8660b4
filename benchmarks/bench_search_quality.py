"""Recall and latency of ``Index.search`` on every member of the workload suite.

    PYTHONPATH=python python benchmarks/bench_search_quality.py [--members a,b] [--nbits 1,2,4] \
        [--threads 2] [--out results.jsonl] [--buckets pooled,quantile,lloyd]

Per member and nbits: build an index (CPU), then against exhaustive fp32 MaxSim on the
original vectors (the ground truth):

- ``codes@10/@100``: exhaustive scoring of the compressed codes (``exact=True``), the
  codec's ceiling for any funnel;
- ``r@10`` (k=10) and ``r@100`` (k=100) of the default search;
- ``p50``/``p95`` ms of one query per call (k=10), and ``batch QPS`` of all queries in one
  call, in the same run, with ``--threads`` kernel threads.

One JSON line per (member, nbits) is appended to ``--out`` (so a long run keeps what it
measured) and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload_suite import MEMBERS, REAL, describe, load_member  # noqa: E402


def _cached_member(name: str) -> dict:
    """Synthetic members are cached beside the real ones (generation takes a while on 2 cores)."""
    from workload_real import cache_dir

    if name in REAL:
        return load_member(name)
    path = cache_dir() / f"suite-{name}-q{MEMBERS[name].n_queries}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    data = load_member(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return data


def _recall(found, truth, k) -> float:
    values = []
    for (_, ids), want in zip(found, truth):
        want = set(want[:k].tolist())
        values.append(len(set(ids[:k].tolist()) & want) / max(1, len(want)))
    return float(np.mean(values))


# --buckets variants: (bucket_layout, Lloyd-Max iterations, codebook training tokens, learned
# rotation) of the codec's residual tables (None: the default).
BUCKET_VARIANTS = {"pooled": ("pooled", 0, None, None), "quantile": ("per_dim", 0, None, None),
                   "lloyd": ("per_dim", None, None, None), "codebook": ("codebook", None, None, None),
                   "codebook-50k": ("codebook", None, 50_000, None), "codebook-norot": ("codebook", None, None, False)}


def measure(name: str, data: dict, nbits: int, threads: int, repeats: int = 3, buckets: str | None = None) -> dict:
    from colbert_engine import Index, ops
    from colbert_engine.index import codec as codec_module

    if buckets is not None:  # the build's defaults, for this measurement only
        layout, iters, tokens, rotate = BUCKET_VARIANTS[buckets]
        saved = (codec_module.DEFAULT_BUCKET_LAYOUT, codec_module.DEFAULT_LLOYD_ITERS,
                 codec_module.CODEBOOK_TOKENS, codec_module.DEFAULT_LAYOUT_BY_NBITS, codec_module.DEFAULT_ROTATE)
        codec_module.DEFAULT_BUCKET_LAYOUT = layout
        codec_module.DEFAULT_LAYOUT_BY_NBITS = {}
        codec_module.DEFAULT_LLOYD_ITERS = saved[1] if iters is None else iters
        codec_module.CODEBOOK_TOKENS = saved[2] if tokens is None else tokens
        codec_module.DEFAULT_ROTATE = saved[4] if rotate is None else rotate
        try:
            return measure(name, data, nbits, threads, repeats) | {"buckets": buckets}
        finally:
            (codec_module.DEFAULT_BUCKET_LAYOUT, codec_module.DEFAULT_LLOYD_ITERS, codec_module.CODEBOOK_TOKENS,
             codec_module.DEFAULT_LAYOUT_BY_NBITS, codec_module.DEFAULT_ROTATE) = saved
    ops.set_num_threads(threads)
    torch.set_num_threads(threads)
    queries = data["queries"]
    truth = ops.maxsim_topk(queries, data["doc_emb"], data["doc_offsets"], 100)[1]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = Index.build(Path(tmp) / "index", data["doc_emb"], data["doc_offsets"], nbits=nbits)
        build_s = time.perf_counter() - start
        row = {"member": name, "nbits": nbits, "threads": threads, "build_s": round(build_s, 2),
               "docs": index.n_docs, "tokens": index.n_tokens, "centroids": int(index.codec.centroids.shape[0]),
               "layout": index.codec.bucket_layout, "rotated": getattr(index.codec, "rotation", None) is not None,
               "build_split": {k: v for k, v in index.stats().items() if k.startswith("build_s_")}}
        codes = index.search_internal(queries, 100, exact=True)
        row["codes@10"] = _recall(codes, truth, 10)
        row["codes@100"] = _recall(codes, truth, 100)
        row["r@10"] = _recall(index.search_internal(queries, 10), truth, 10)
        row["r@100"] = _recall(index.search_internal(queries, 100), truth, 100)
        row["params@10"] = _params_of(index, 10)
        # Latency: one query per call, repeated passes, p50/p95 over all calls.
        times = []
        for _ in range(repeats):
            for q in range(queries.shape[0]):
                t0 = time.perf_counter()
                index.search_internal(queries[q:q + 1], 10)
                times.append((time.perf_counter() - t0) * 1e3)
        row["p50_ms"], row["p95_ms"] = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        batch = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            index.search_internal(queries, 10)
            batch.append(time.perf_counter() - t0)
        row["batch_qps"] = queries.shape[0] / float(np.median(batch))
        row["load_avg"] = os.getloadavg()[0]
        index.close()
    return row


def _params_of(index, k) -> str:
    from colbert_engine.search import Searcher

    p = Searcher(index.codec, index.segments).params(k)
    if p.exhaustive_docs >= index.n_docs:
        return "exhaustive"
    return f"nprobe {p.nprobe}, ndocs {p.ndocs}, t_cs {p.centroid_score_threshold:g}"


def table(rows) -> str:
    lines = ["| member | nbits | codes r@10 / r@100 | **r@10** | **r@100** | p50 / p95 ms (1 query) | batch QPS | funnel (k=10) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nbits = f"{r['nbits']} {r['buckets']}" if "buckets" in r else r["nbits"]
        lines.append(f"| {r['member']} | {nbits} | {r['codes@10']:.3f} / {r['codes@100']:.3f} | {r['r@10']:.3f} | "
                     f"{r['r@100']:.3f} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {r['batch_qps']:.0f} | "
                     f"{r['params@10']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default=",".join(list(MEMBERS) + list(REAL)))
    parser.add_argument("--nbits", default="1,2,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("search_quality.jsonl"))
    parser.add_argument("--buckets", default=None,
                        help=f"comma list of bucket-table variants to compare, of {list(BUCKET_VARIANTS)} "
                             "(default: the build's default only)")
    args = parser.parse_args(argv)
    variants = [None] if args.buckets is None else args.buckets.split(",")
    for v in variants:
        if v is not None and v not in BUCKET_VARIANTS:
            parser.error(f"--buckets: unknown variant {v!r}, expected {list(BUCKET_VARIANTS)}")
    rows = []
    for name in args.members.split(","):
        data = _cached_member(name)
        print(describe(name, data), flush=True)
        for nbits in (int(b) for b in args.nbits.split(",")):
            for variant in variants:
                row = measure(name, data, nbits, args.threads, args.repeats, variant)
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
