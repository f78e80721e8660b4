"""Training of the product-quantized residual codebook ("codebook" layout): start, sample
size and k-means steps against held-out error and exact-on-codes recall.

    PYTHONPATH=python python benchmarks/bench_codebook.py MEMBER NBITS SAMPLES STARTS STEPS
    e.g. ... aniso-stop-3k 2 50000,200000 grid,random 5,10,20

Per member: a per-dimension codec is trained as a build would (its centroids and codes are
shared by every variant); then for each residual sample size, start ("grid": the
per-dimension tables' byte codebook; "random": sampled rows) and step count, a codebook is
trained on that many residuals of the collection and reported with its training seconds,
its squared error on 20k other residuals, and exact-on-codes recall@10 (every token
encoded with the codebook, decoded, exhaustive MaxSim) against fp32 MaxSim. One JSON line
per variant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_quality import _cached_member  # noqa: E402


def main(argv) -> int:
    from colbert_engine import ops
    from colbert_engine.index import codec as C
    from colbert_engine.ops import codec as OC

    name, nbits, samples, starts, steps = argv[0], int(argv[1]), argv[2], argv[3], argv[4]
    torch.set_num_threads(2)
    ops.set_num_threads(2)
    data = _cached_member(name)
    emb, offsets, queries = data["doc_emb"].float(), data["doc_offsets"], data["queries"]
    truth = ops.maxsim_topk(queries, emb, offsets, 10)[1].tolist()
    codec = C.train_codec(emb, emb.shape[0], nbits, bucket_layout="per_dim")
    centroids = codec.centroids
    residuals = emb - centroids[codec.compress(emb)[0].long()]
    perm = torch.randperm(residuals.shape[0], generator=torch.Generator().manual_seed(1))
    test = residuals[perm[-20000:]]
    zero = torch.zeros(1, emb.shape[1])

    def error(codebook) -> float:
        _, packed, _ = ops.compress_residuals(test, zero, None, codebook, nbits)
        decoded = ops.decompress_residuals(torch.zeros(len(test), dtype=torch.int32), packed, zero, codebook, nbits,
                                           normalize=False)
        return float(((decoded - test) ** 2).sum(1).mean())

    def codes_recall(codebook) -> float:
        codes, packed, inv = ops.compress_residuals(emb, centroids, None, codebook, nbits, cells=codec.cells)
        decoded = ops.decompress_residuals(codes, packed, centroids, codebook, nbits, inv_norms=inv)
        found = ops.maxsim_topk(queries, decoded, offsets, 10)[1].tolist()
        return round(sum(len(set(f) & set(t)) / 10 for f, t in zip(found, truth)) / len(truth), 4)

    print(json.dumps({"member": name, "nbits": nbits, "per_dim_mse": round(error(codec.byte_codebook), 6),
                      "per_dim_codes@10": codes_recall(codec.byte_codebook)}), flush=True)
    for n in (int(x) for x in samples.split(",")):
        sample = residuals[perm[:min(n, residuals.shape[0] - 20000)]]
        _, weights = C.per_dim_bucket_tables(sample, nbits)
        grid = OC.byte_codebook(weights, nbits, emb.shape[1])
        for start in starts.split(","):
            for iters in (int(x) for x in steps.split(",")):
                t0 = time.perf_counter()
                codebook = C.train_residual_codebook(sample, nbits, iters=iters, init=grid if start == "grid" else None)
                seconds = time.perf_counter() - t0
                print(json.dumps({"n": sample.shape[0], "start": start, "steps": iters, "train_s": round(seconds, 1),
                                  "mse": round(error(codebook), 6), "codes@10": codes_recall(codebook),
                                  "load_avg": os.getloadavg()[0]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
