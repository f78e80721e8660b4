"""Sharded build and search: 1, 2, 4 shards, in this process and on a local Ray instance,
against a single ``Index`` built from the same vectors in the same run.

Each configuration runs in a fresh subprocess (so peak RSS is its own): build time (and its
steps: spool, codec, shards), peak RSS of the driver and of every Ray worker, then batched
search (k = 10) time over repeats (median and spread) and recall@10 against exact search
over the same shards. The load average is printed with the results; the machine is shared.

    PYTHONPATH=python python benchmarks/bench_sharded.py --docs 10000 --doc-len 100 --repeats 5

Not a pytest suite (``colbert-engine bench --full`` collects nothing here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    from colbert_engine.sharded.build import _peak_rss_mb

    return _peak_rss_mb()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_workload(folder: Path):
    import numpy as np
    import torch

    emb = torch.from_numpy(np.load(folder / "emb.npy", mmap_mode="r"))
    offsets = torch.from_numpy(np.load(folder / "offsets.npy"))
    queries = torch.from_numpy(np.load(folder / "queries.npy"))
    return emb, offsets, queries


def _time_search(index, queries, repeats: int) -> dict:
    index.search(queries, k=10)  # warm-up: first touch of the memory-mapped segments
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k=10)
        times.append(time.perf_counter() - start)
    ms_per_query = [t * 1e3 / queries.shape[0] for t in times]
    q = statistics.quantiles(ms_per_query, n=4) if len(ms_per_query) > 1 else [ms_per_query[0]] * 3
    return {"ms_per_query_median": statistics.median(ms_per_query), "ms_per_query_iqr": q[2] - q[0]}


def run_one(args) -> dict:
    """One configuration, in this (fresh) process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    emb, offsets, queries = _load_workload(work)
    out = {"mode": args.mode, "shards": args.shards, "tokens": int(emb.shape[0]), "docs": offsets.numel() - 1}
    target = work / f"idx-{args.mode}-{args.shards}"
    shutil.rmtree(target, ignore_errors=True)
    rss_before, cpu_before = _rss_mb(), _cpu_s()
    if args.mode == "single":
        from colbert_engine import Index

        start = time.perf_counter()
        index = Index.build(target, emb, offsets, nbits=2)
        out["build_s"] = time.perf_counter() - start
    else:
        from colbert_engine.sharded import ShardedIndex

        ray = None
        if args.mode == "ray":
            import ray as ray_module

            t = time.perf_counter()
            ray_module.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
            ray_module.data.DataContext.get_current().enable_progress_bars = False
            out["ray_init_s"] = time.perf_counter() - t
            ray = True
        report = {}
        start = time.perf_counter()
        ShardedIndex.build(target, emb, offsets, n_shards=args.shards, ray=ray, report=report).close()
        out["build_s"] = time.perf_counter() - start
        out.update({k: report[k] for k in ("spool_s", "codec_s", "shards_s")})
        out["shard_build_s"] = [round(s["seconds"], 2) for s in report["shards"]]
        out["shard_build_cpu_s"] = [round(s["cpu_seconds"], 2) for s in report["shards"]]
        out["worker_peak_rss_mb"] = sorted({s["pid"]: round(s["peak_rss_mb"]) for s in report["shards"]}.values())
        index = ShardedIndex.open(target, ray=ray)
    out["driver_build_cpu_s"] = round(_cpu_s() - cpu_before, 1)  # this process only (not Ray workers)
    out["driver_peak_rss_mb"] = round(_rss_mb())
    out["driver_rss_before_build_mb"] = round(rss_before)
    out.update(_time_search(index, queries, args.repeats))
    out["recall_at_10_vs_exact"] = index.recall(queries, k=10)
    top = index.search(queries, k=10)
    (work / f"top-{args.mode}-{args.shards}.json").write_text(json.dumps([[str(i) for i, _ in q] for q in top]))
    index.close()
    shutil.rmtree(target, ignore_errors=True)
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--doc-len", type=int, default=100)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--shard-counts", default="1,2,4")
    parser.add_argument("--modes", default="inprocess,ray")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return

    import numpy as np

    from colbert_engine.testing import clustered_collection

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-sharded-"))
    work.mkdir(parents=True, exist_ok=True)
    c = clustered_collection(n_docs=args.docs, mean_doc_len=args.doc_len, dim=128, n_queries=args.queries, seed=0)
    np.save(work / "emb.npy", c.doc_emb.numpy())
    np.save(work / "offsets.npy", c.doc_offsets.numpy())
    np.save(work / "queries.npy", c.queries.numpy())
    del c
    configs = [("single", 1)] + [(m, int(n)) for m in args.modes.split(",") for n in args.shard_counts.split(",")]
    results = []
    for mode, shards in configs:
        cmd = [sys.executable, __file__, "--one", "--mode", mode, "--shards", str(shards), "--workdir", str(work),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{mode} x{shards} failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_avg"] = [round(x, 1) for x in os.getloadavg()]
        results.append(result)
        print(json.dumps(result), flush=True)
    base = results[0]
    single_top = json.loads((work / "top-single-1.json").read_text())
    print(f"\n{base['tokens']:,} tokens, {base['docs']:,} docs, dim 128, nbits 2, {args.threads} threads; "
          f"search: {args.queries} queries per batch, k=10, median of {args.repeats}")
    print(f"{'config':<14}{'build s':>9}{'x single':>9}{'spool/codec/shards s':>22}{'driver RSS MB':>14}"
          f"{'worker RSS MB':>16}{'ms/query':>10}{'(IQR)':>8}{'recall@10':>10}{'vs single':>10}{'load':>6}")
    for r in results:
        name = "single Index" if r["mode"] == "single" else f"{r['mode']} x{r['shards']}"
        steps = "-" if r["mode"] == "single" else f"{r['spool_s']:.1f}/{r['codec_s']:.1f}/{r['shards_s']:.1f}"
        top = json.loads((work / f"top-{r['mode']}-{r['shards']}.json").read_text())
        overlap = statistics.mean(len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(top, single_top))
        workers = ",".join(str(x) for x in r.get("worker_peak_rss_mb", [])) or "-"
        print(f"{name:<14}{r['build_s']:>9.1f}{r['build_s'] / base['build_s']:>9.2f}{steps:>22}"
              f"{r['driver_peak_rss_mb']:>14}{workers:>16}{r['ms_per_query_median']:>10.2f}"
              f"{r['ms_per_query_iqr']:>8.2f}{r['recall_at_10_vs_exact']:>10.3f}{overlap:>10.3f}{r['load_avg'][0]:>6}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
