"""Exact-on-codes recall@10 of residual bucket tables on workload-suite members: pooled
(ColBERT's) vs per-dimension tables after 0, 4, 16, ... Lloyd-Max steps.

    PYTHONPATH=python python benchmarks/bench_buckets.py [--members aniso-stop-3k,xquad-en] \
        [--nbits 2,4] [--lloyd 0,4,16,32,64] [--threads 2]

One codec (pooled k-means, seed 0) per member and nbits; every table variant compresses
the whole collection with the same centroids (``ops.compress_residuals``), decodes it
with the stored inverse norms and ranks exhaustively (``ops.maxsim_topk``); recall@10 vs
exhaustive fp32 MaxSim on the original vectors. Tables are trained on one fixed held-out
set (50k tokens), so columns differ from ``bench_search_quality.py``'s (whose held-out set
is the build's). Recall does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_quality import _cached_member  # noqa: E402


def main(argv=None) -> int:
    from colbert_engine import ops
    from colbert_engine.index import codec as C

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="aniso-stop-3k,xquad-en")
    parser.add_argument("--nbits", default="2,4")
    parser.add_argument("--lloyd", default="0,4,16,32,64", help="Lloyd-Max steps of the per-dimension variants")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ops.set_num_threads(args.threads)
    print(f"# exact-on-codes recall@10, load {os.getloadavg()[0]:.1f}")
    for name in args.members.split(","):
        data = _cached_member(name)
        emb, offsets, queries = data["doc_emb"], data["doc_offsets"], data["queries"]
        truth = ops.maxsim_topk(queries, emb, offsets, 10)[1]
        for nbits in (int(b) for b in args.nbits.split(",")):
            codec = C.train_codec(emb, emb.shape[0], nbits, bucket_layout="pooled")
            held = emb[torch.randperm(emb.shape[0], generator=torch.Generator().manual_seed(0))[:C.HELDOUT_TOKENS]]
            residuals = held - codec.centroids[C._assign(held, codec.centroids, codec.cells)[0]]
            variants = [("pooled", codec.bucket_cutoffs, codec.bucket_weights)]
            variants += [(f"per-dim L{i}", *C.per_dim_bucket_tables(residuals, nbits, int(i)))
                         for i in args.lloyd.split(",")]
            cells = []
            for label, cutoffs, weights in variants:
                codes, packed, inv = ops.compress_residuals(emb, codec.centroids, cutoffs, weights, nbits,
                                                            cells=codec.cells)
                decoded = ops.decompress_residuals(codes, packed, codec.centroids, weights, nbits, inv_norms=inv)
                got = ops.maxsim_topk(queries, decoded, offsets, 10)[1]
                hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, truth))
                cells.append(f"{label} {hits / truth.numel():.3f}")
            print(f"{name} nbits {nbits}: " + ", ".join(cells) + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
