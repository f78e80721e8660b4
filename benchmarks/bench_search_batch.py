"""A batch of queries in one ``Index.search`` call against the same queries one per call.

    PYTHONPATH=python python benchmarks/bench_search_batch.py [--members small-300,xquad-en] [--threads 1]

Reports, per member (2-bit index, k = 10): CPU time per query (``time.process_time``, stable
on a shared machine where wall time is not) of the batch and of single calls, their ratio,
and the wall-clock batch QPS beside the single-query p50 (medians of ``--rounds`` rounds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_quality import _cached_member  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="small-300,xquad-en")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from colbert_engine import Index, ops

    ops.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    for name in args.members.split(","):
        data = _cached_member(name)
        queries = data["queries"][:args.queries]
        nq = queries.shape[0]
        with tempfile.TemporaryDirectory() as tmp:
            index = Index.build(Path(tmp) / "index", data["doc_emb"], data["doc_offsets"], nbits=2)
            index.search_internal(queries, 10)  # warm-up: page in the segments
            cpu_batch, cpu_single, wall_batch, p50 = [], [], [], []
            for _ in range(args.rounds):
                c0, w0 = time.process_time(), time.perf_counter()
                index.search_internal(queries, 10)
                cpu_batch.append((time.process_time() - c0) / nq)
                wall_batch.append(time.perf_counter() - w0)
                c0, lat = time.process_time(), []
                for q in range(nq):
                    w0 = time.perf_counter()
                    index.search_internal(queries[q:q + 1], 10)
                    lat.append(time.perf_counter() - w0)
                cpu_single.append((time.process_time() - c0) / nq)
                p50.append(np.percentile(lat, 50))
            b, s = np.median(cpu_batch) * 1e3, np.median(cpu_single) * 1e3
            print(f"{name}: {nq} queries, {args.threads} thread(s): CPU/query batch {b:.2f} ms vs single {s:.2f} ms "
                  f"({s / b:.2f}x); batch {nq / np.median(wall_batch):.0f} QPS vs single p50 "
                  f"{np.median(p50) * 1e3:.2f} ms; load {os.getloadavg()[0]:.1f}", flush=True)
            index.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
