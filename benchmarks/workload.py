"""Synthetic clustered workloads for the benchmarks (and a command that writes one to disk).

The generator is :func:`colbert_engine.testing.clustered_collection` (topics,
Zipf-like terms, token = term direction + noise; each query drawn from a target document).
This module fixes the named sizes the benchmarks and ``compare_peers.py`` share, and can
save a workload as a ``.pt`` file so that another environment (the peers' venv) measures
exactly the same vectors:

    python benchmarks/workload.py --size small --out /tmp/small.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

# name -> clustered_collection arguments. "small" keeps pytest-benchmark suites quick on
# 2 cores; "peers" is the ~1M-token collection of shared/PEERS.md.
SIZES = {
    "tiny": dict(n_docs=500, mean_doc_len=64, dim=128, n_queries=16),
    "small": dict(n_docs=2_000, mean_doc_len=100, dim=128, n_queries=32),
    "medium": dict(n_docs=10_000, mean_doc_len=100, dim=128, n_queries=64),
    "peers": dict(n_docs=10_000, mean_doc_len=100, dim=128, n_queries=100),
}


def make_workload(size: str = "small", seed: int = 0, **overrides):
    """A :class:`colbert_engine.testing.Collection` of the named size:
    ``doc_emb (T, dim)`` float32, ``doc_offsets (n+1,)`` int64, ``queries (nq, 32, dim)``
    float32, ``query_targets (nq,)`` int64."""
    from colbert_engine.testing import clustered_collection

    if size not in SIZES:
        raise ValueError(f"size: one of {sorted(SIZES)}, got {size!r}")
    return clustered_collection(**{**SIZES[size], **overrides}, seed=seed)


def save_workload(data, path) -> None:
    torch.save({"doc_emb": data.doc_emb, "doc_offsets": data.doc_offsets, "queries": data.queries,
                "query_targets": data.query_targets}, path)


def load_workload(path) -> dict:
    return torch.load(path, weights_only=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--docs", type=int, help="override the number of documents")
    parser.add_argument("--mean-len", type=int, help="override the mean document length")
    parser.add_argument("--queries", type=int, help="override the number of queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="where to write the .pt file")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("n_docs", args.docs), ("mean_doc_len", args.mean_len),
                                   ("n_queries", args.queries)) if v is not None}
    start = time.perf_counter()
    data = make_workload(args.size, args.seed, **overrides)
    save_workload(data, Path(args.out))
    print(f"{args.out}: {data.n_docs} docs, {data.doc_emb.shape[0]:,} tokens x {data.doc_emb.shape[1]}, "
          f"{data.queries.shape[0]} queries ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
