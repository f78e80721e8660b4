"""Residual codec and scoring without decompression on CPU, one thread, against torch in the
same run.

    PYTHONPATH=python python benchmarks/bench_codec.py            # table for RESULTS.md
    PYTHONPATH=python python -m pytest benchmarks/bench_codec.py -p no:cacheprovider \
        --benchmark-columns=median,iqr,rounds --benchmark-timer=time.process_time

Collection: 1,000 documents of 50-150 tokens (~100k tokens), dim 128, K = 4,096 unit
centroids, tokens near the centroids, buckets at residual quantiles (DESIGN.md 4).

- compress (20k tokens): ``ops.compress_residuals`` vs ``reference.compress_residuals``
  (tokens/s). Both find codes with a torch fp32 GEMM + argmax (ours in cache-sized blocks);
  the rest is our kernel vs torch ops. The GEMM (2 * K * dim flops per token) dominates.
- decompress: ``ops.decompress_residuals`` (normalize=True) vs the torch reference (tokens/s),
  both into a fresh output.
- exact stage: one 32-token query against all 1,000 documents:
  ``ops.lut_maxsim`` (given S = C @ q.T, which the candidate stage has already computed)
  vs ``ops.decompress_residuals`` into a reused buffer + ``ops.maxsim`` (the fused SIMD
  MaxSim), and vs the torch path (reference decompress + matmul + segment max).
Ratios are measured in the same run; the machine is shared, absolute times are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytest
import torch

from colbert_engine import _native, ops
from colbert_engine.ops import reference

DIM, N_CENTROIDS, N_DOCS, QUERY_LEN = 128, 4096, 1000, 32
COMPRESS_TOKENS = 20_000  # compression is timed on the first 20k tokens (a GEMM-bound rate)


def make_collection(nbits, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(torch.randn(N_CENTROIDS, DIM, generator=gen), dim=1)
    lengths = torch.randint(50, 151, (N_DOCS,), generator=gen)
    offsets = torch.zeros(N_DOCS + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    n_tokens = int(offsets[-1])
    picks = torch.randint(0, N_CENTROIDS, (n_tokens,), generator=gen)
    emb = torch.nn.functional.normalize(centroids[picks] + 0.3 * torch.randn(n_tokens, DIM, generator=gen) / DIM**0.5,
                                        dim=1)
    sample = emb[:20000]
    residual = (sample - centroids[(sample @ centroids.T).argmax(1)]).flatten()
    n = 1 << nbits
    cutoffs = torch.quantile(residual, torch.arange(1, n) / n)
    weights = torch.quantile(residual, (torch.arange(n) + 0.5) / n)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    query = torch.nn.functional.normalize(torch.randn(1, QUERY_LEN, DIM, generator=gen), dim=2)
    return dict(nbits=nbits, centroids=centroids, cutoffs=cutoffs, weights=weights, emb=emb, offsets=offsets,
                lengths=lengths, codes=codes, residuals=residuals, inv_norms=inv_norms, query=query,
                scores=(centroids @ query[0].T).unsqueeze(0).contiguous(), candidates=torch.arange(N_DOCS),
                workspace=torch.empty(n_tokens, DIM))


# The measured operations, shared by the script and the pytest-benchmark tests.

def compress_ops(c):
    return ops.compress_residuals(c["emb"][:COMPRESS_TOKENS], c["centroids"], c["cutoffs"], c["weights"], c["nbits"])


def compress_torch(c):
    return reference.compress_residuals(c["emb"][:COMPRESS_TOKENS], c["centroids"], c["cutoffs"], c["weights"],
                                        c["nbits"])


def decompress_ops(c):
    return ops.decompress_residuals(c["codes"], c["residuals"], c["centroids"], c["weights"], c["nbits"])


def decompress_torch(c):
    return reference.decompress_residuals(c["codes"], c["residuals"], c["centroids"], c["weights"], c["nbits"])


def lut_maxsim(c):
    return ops.lut_maxsim(c["query"], c["scores"], c["codes"], c["residuals"], c["inv_norms"], c["offsets"],
                          c["candidates"], c["weights"], c["nbits"])


def decompress_then_maxsim(c):
    # Into a preallocated buffer: page faults of a fresh 50 MB output would cost more than
    # the decompression itself on this VM, and a search loop would reuse its workspace.
    emb = ops.decompress_residuals(c["codes"], c["residuals"], c["centroids"], c["weights"], c["nbits"],
                                   inv_norms=c["inv_norms"], out=c["workspace"])
    return ops.maxsim(c["query"], emb, c["offsets"], doc_subset=c["candidates"])


def decompress_then_maxsim_torch(c):
    emb = reference.decompress_residuals(c["codes"], c["residuals"], c["centroids"], c["weights"], c["nbits"],
                                         inv_norms=c["inv_norms"])
    sims = emb @ c["query"][0].T  # (T, Lq)
    return torch.segment_reduce(sims, "max", lengths=c["lengths"], axis=0).sum(dim=1).unsqueeze(0)


# ----------------------------------------------------------------------------- pytest-benchmark


# Single-thread comparison: benchmarks/conftest.py pins torch and our kernels to one thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[2], ids=lambda b: f"nbits{b}")
def collection(request):
    return make_collection(request.param)


def run(benchmark, fn, collection, rounds=7):
    benchmark.extra_info["isa"] = _native.cpu().isa()
    benchmark.extra_info.setdefault("tokens", collection["codes"].numel())
    return benchmark.pedantic(fn, args=(collection,), rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", [compress_ops, compress_torch], ids=["ops", "torch"])
def test_compress(benchmark, collection, impl):
    benchmark.group = "compress 20k tokens, K=4096, dim 128"
    benchmark.extra_info["tokens"] = COMPRESS_TOKENS
    run(benchmark, impl, collection, rounds=3)


@pytest.mark.parametrize("impl", [decompress_ops, decompress_torch], ids=["ops", "torch"])
def test_decompress(benchmark, collection, impl):
    benchmark.group = "decompress ~100k tokens, dim 128"
    run(benchmark, impl, collection)


@pytest.mark.parametrize("impl", [lut_maxsim, decompress_then_maxsim, decompress_then_maxsim_torch],
                         ids=["lut_maxsim", "decompress+maxsim", "torch decompress+matmul+segmax"])
def test_exact_stage(benchmark, collection, impl):
    benchmark.group = "exact scoring, 1 query x 1000 docs (~100 tokens), K=4096, dim 128"
    got = run(benchmark, impl, collection)
    torch.testing.assert_close(got, lut_maxsim(collection), atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- script


def median_seconds(fn, arg, rounds, timer):
    fn(arg)
    times = []
    for _ in range(rounds):
        start = timer()
        fn(arg)
        times.append(timer() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--nbits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--wall", action="store_true",
                        help="time with perf_counter instead of process_time (CPU time of this "
                             "single-threaded process, stable on a shared machine)")
    args = parser.parse_args()
    timer = time.perf_counter if args.wall else time.process_time
    torch.set_num_threads(1)
    ops.set_num_threads(1)
    print(f"isa={_native.cpu().isa()}, 1 thread, torch {torch.__version__}, dim {DIM}, K {N_CENTROIDS}, "
          f"{N_DOCS} docs, median of {args.rounds}, timer {timer.__name__}")
    for nbits in args.nbits:
        c = make_collection(nbits)
        n_tokens = c["codes"].numel()
        torch.testing.assert_close(decompress_then_maxsim(c), lut_maxsim(c), atol=1e-4, rtol=1e-5)
        rows = []
        for name, fn, rounds in [("compress ops", compress_ops, 3), ("compress torch", compress_torch, 3),
                                 ("decompress ops", decompress_ops, args.rounds),
                                 ("decompress torch", decompress_torch, args.rounds)]:
            seconds = median_seconds(fn, c, rounds, timer)
            count = COMPRESS_TOKENS if name.startswith("compress") else n_tokens
            rows.append((name, seconds, f"{count / seconds / 1e6:.3f} M tokens/s"))
        for name, fn in [("lut_maxsim", lut_maxsim), ("decompress + maxsim", decompress_then_maxsim),
                         ("torch decompress + matmul + segmax", decompress_then_maxsim_torch)]:
            rows.append((name, median_seconds(fn, c, args.rounds, timer), ""))
        times = {name: s for name, s, _ in rows}
        print(f"\nnbits {nbits}, {n_tokens} tokens")
        for name, seconds, extra in rows:
            print(f"  {name:36s} {seconds * 1e3:9.2f} ms  {extra}")
        print(f"  compress speed-up vs torch:   {times['compress torch'] / times['compress ops']:.2f}x")
        print(f"  decompress speed-up vs torch: {times['decompress torch'] / times['decompress ops']:.2f}x")
        print(f"  lut_maxsim vs decompress + maxsim: {times['decompress + maxsim'] / times['lut_maxsim']:.2f}x; "
              f"vs torch path: {times['torch decompress + matmul + segmax'] / times['lut_maxsim']:.2f}x")


if __name__ == "__main__":
    main()
