"""CUDA kernels against plain torch on the same GPU, in the same run (ratios, not absolutes).

1. Fused MaxSim (ops.maxsim, packed documents) vs the padded torch baseline (documents padded
   to the longest into (n, L, dim), one bmm, mask, amax, sum) at 1,000 docs x 300 tokens,
   32 query tokens, dim 128, fp16 documents; also nq = 8 and 64 queries per call. Reported
   with the bandwidth the fused kernel reaches against a device-to-device copy measured in
   the same run (the practical memory roofline), and its tensor-core throughput.
2. Residual decompression (ops.decompress_residuals with stored inverse norms, fp16 out)
   GB/s vs a device-to-device copy of the same number of output bytes.
3. End-to-end batched search (Index.search_internal, PLAID funnel, k = 10 and 100) on a
   synthetic clustered index of --search-tokens tokens (1M by default; 10M for the issue's
   second point): queries/s with the index on the GPU vs the same index on the CPU.

    PYTHONPATH=python python benchmarks/bench_cuda.py [--docs 1000] [--doc-len 300] [--json out.json]

Without a CUDA device (or without colbert_engine._cuda) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def cuda_ready() -> str | None:
    """None when the benchmark can run, else the reason it cannot."""
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    from colbert_engine import _native

    try:
        _native.cuda()
    except RuntimeError as exc:
        return str(exc)
    return None


def time_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    """Median time of fn() in milliseconds, by CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth_gbs(n_bytes: int) -> float:
    """Device-to-device copy bandwidth (read + write counted) of an n_bytes buffer."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def padded_maxsim(queries, padded_docs, mask):
    """The torch baseline: (nq, Lq, dim) x (n, L, dim) -> (nq, n)."""
    nq, lq, dim = queries.shape
    n, length, _ = padded_docs.shape
    q = queries.to(padded_docs.dtype).reshape(nq * lq, dim)
    sim = torch.matmul(padded_docs, q.T).float()  # (n, L, nq * lq)
    sim = sim.masked_fill(~mask[:, :, None], float("-inf"))
    return sim.amax(dim=1).reshape(n, nq, lq).sum(dim=2).T


def bench_maxsim(args, report):
    from colbert_engine import ops

    gen = torch.Generator(device="cuda").manual_seed(0)
    dim, lq = 128, 32
    lengths = torch.full((args.docs,), args.doc_len, dtype=torch.int64)
    offsets = torch.zeros(args.docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    n_tokens = int(offsets[-1])
    emb = torch.nn.functional.normalize(torch.randn(n_tokens, dim, device="cuda", generator=gen), dim=-1).half()
    offsets = offsets.cuda()
    padded = emb.reshape(args.docs, args.doc_len, dim)
    mask = torch.ones(args.docs, args.doc_len, dtype=torch.bool, device="cuda")
    copy_gbs = copy_bandwidth_gbs(n_tokens * dim * 2)
    report["d2d_copy_gbs"] = copy_gbs
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    from colbert_engine.ops.maxsim import maxsim_launch

    for nq in (1, 8, 64):
        queries = torch.nn.functional.normalize(torch.randn(nq, lq, dim, device="cuda", generator=gen), dim=-1)
        out = torch.empty(nq, args.docs, device="cuda")
        # The kernel alone, as the search path calls it (arguments already validated), and
        # the public op with its device-side checks and one host synchronisation.
        kernel = time_ms(lambda: maxsim_launch(queries, emb, offsets, None, out))
        fused = time_ms(lambda: ops.maxsim(queries, emb, offsets))
        baseline = time_ms(lambda: padded_maxsim(queries, padded, mask))
        got = ops.maxsim(queries, emb, offsets)
        want = padded_maxsim(queries, padded, mask)
        err = float((got - want).abs().max())
        doc_bytes = n_tokens * dim * 2
        gbs = doc_bytes / (kernel * 1e-3) / 1e9
        tflops = 2 * nq * lq * n_tokens * dim / (kernel * 1e-3) / 1e12
        row = dict(nq=nq, kernel_ms=kernel, op_ms=fused, padded_ms=baseline, kernel_speedup=baseline / kernel,
                   op_speedup=baseline / fused, doc_read_gbs=gbs, fraction_of_copy_bandwidth=gbs / (copy_gbs / 2),
                   tensor_tflops=tflops, max_abs_diff=err)
        report.setdefault("maxsim", []).append(row)
        print(f"maxsim nq={nq:3d}: kernel {kernel:.3f} ms, checked op {fused:.3f} ms, padded bmm {baseline:.3f} ms "
              f"(kernel {baseline / kernel:.1f}x, op {baseline / fused:.1f}x); kernel reads docs at {gbs:.0f} GB/s = "
              f"{gbs / (copy_gbs / 2):.0%} of copy read rate; {tflops:.1f} TFLOP/s; max |diff| {err:.2e}")


def bench_decompress(args, report):
    from colbert_engine import ops

    gen = torch.Generator(device="cuda").manual_seed(1)
    dim, nbits, n_tokens = 128, 2, args.tokens
    centroids = torch.nn.functional.normalize(torch.randn(65536, dim, device="cuda", generator=gen), dim=-1)
    codes = torch.randint(0, 65536, (n_tokens,), device="cuda", generator=gen, dtype=torch.int32)
    residuals = torch.randint(0, 256, (n_tokens, dim * nbits // 8), device="cuda", generator=gen,
                              dtype=torch.int32).to(torch.uint8)
    inv_norms = torch.rand(n_tokens, device="cuda", generator=gen).half() + 0.5
    weights = torch.linspace(-0.05, 0.05, 1 << nbits, device="cuda")
    out = torch.empty(n_tokens, dim, dtype=torch.float16, device="cuda")

    def run():
        ops.decompress_residuals(codes, residuals, centroids, weights, nbits, True, torch.float16,
                                 inv_norms=inv_norms, out=out)

    ms = time_ms(run, repeats=20)
    out_bytes = n_tokens * dim * 2
    moved = out_bytes + residuals.numel() + codes.numel() * 4 + inv_norms.numel() * 2
    gbs = moved / (ms * 1e-3) / 1e9
    copy_gbs = copy_bandwidth_gbs(out_bytes)
    report["decompress"] = dict(tokens=n_tokens, ms=ms, gbs=gbs, d2d_copy_gbs=copy_gbs, fraction=gbs / copy_gbs)
    print(f"decompress {n_tokens:,} tokens (dim {dim}, {nbits} bits -> fp16): {ms:.3f} ms, {gbs:.0f} GB/s moved "
          f"= {gbs / copy_gbs:.0%} of a {copy_gbs:.0f} GB/s device-to-device copy")


def bench_search(args, report, device="cuda"):
    """End-to-end batched PLAID search QPS on a synthetic clustered index of about
    ``--search-tokens`` tokens (colbert_engine.testing), device index vs the same index on the CPU.
    Query encoding excluded; the index is built once (on ``device``) into a temp folder."""
    import tempfile
    import time

    from colbert_engine import Index
    from colbert_engine.testing import clustered_collection

    mean_len = 100
    n_docs = max(1, args.search_tokens // mean_len)
    col = clustered_collection(n_docs=n_docs, mean_doc_len=mean_len, dim=128, n_queries=args.search_queries,
                               query_len=32, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        Index.build(folder + "/idx", col.doc_emb, col.doc_offsets, nbits=2, device=device).close()
        for where in dict.fromkeys([device, "cpu"]):
            with Index.open(folder + "/idx", device=where) as index:
                for k in (10, 100):
                    index.search_internal(col.queries, k)  # warm-up (caches, allocator)
                    if where != "cpu":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    results = index.search_internal(col.queries, k)
                    seconds = time.perf_counter() - start
                    hits = sum(int(t) in set(ids.tolist()) for t, (_, ids) in zip(col.query_targets, results))
                    rows.append(dict(index_device=where, k=k, tokens=int(col.doc_offsets[-1]), queries=len(results),
                                     qps=len(results) / seconds, target_in_top_k=hits / len(results)))
                    print(f"search on {where}: {int(col.doc_offsets[-1]):,} tokens, k={k}, batch of {len(results)}: "
                          f"{len(results) / seconds:,.0f} queries/s (source doc in top k: {hits / len(results):.0%})")
    report["search"] = rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--doc-len", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=4_000_000, help="tokens decompressed")
    parser.add_argument("--search-tokens", type=int, default=1_000_000, help="tokens in the search index (0: skip)")
    parser.add_argument("--search-queries", type=int, default=256)
    parser.add_argument("--search-dry-run-cpu", action="store_true",
                        help="run only the search section with a CPU index (checks the script without a GPU)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    if args.search_dry_run_cpu:
        report = {}
        bench_search(args, report, device="cpu")
        return 0
    reason = cuda_ready()
    if reason:
        print(f"bench_cuda: skipped ({reason})")
        return 0
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"device: {report['device']}")
    bench_maxsim(args, report)
    bench_decompress(args, report)
    if args.search_tokens:
        bench_search(args, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
