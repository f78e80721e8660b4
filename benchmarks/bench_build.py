"""Build at scale: assignment agreement and speed, codec recall, build growth.

Three measurements (a script, not a timed test: the machine is shared and noisy, so every
speed is reported next to a baseline measured in the same run, with the spread over
repeats and the load average):

    python benchmarks/bench_build.py agreement [--k 32768] [--tokens 100000]
        probed two-level assignment (ops.codec.nearest_centroids_probed) vs the exact dense
        GEMM + argmax on each workload: share of exact argmax, residual error ratio
        mean ||x - c||^2 (probed / exact), tokens/s of both and their ratio, per nprobe.
    python benchmarks/bench_build.py recall [--docs 10000]
        exact-on-codes and default-search recall@10 vs exhaustive fp32 MaxSim, and build
        seconds, by k-means sample (max_points_per_centroid) and iterations.
    python benchmarks/bench_build.py buckets [--docs 3000]
        pooled (ColBERT) vs per-dimension bucket cutoffs/weights: reconstruction cosine and
        exact-on-codes recall@10 (torch-level, to decide whether a codec variant pays).
    python benchmarks/bench_build.py growth [--sizes 100000 1000000 10000000] [--stream]
        one build per size in a fresh subprocess, 2 bits, the hard workload (streamed: made
        batch by batch on the fly, never whole in memory): seconds per stage, tokens/s,
        peak RSS per stage above the input (packed) or the process before the build
        (streamed; after a small warm-up build unless --cold), index bytes; fitted
        exponent of seconds ~ N^a. 10M tokens streamed needs ~5.2 GB of disk for the
        spill (in $BENCH_BUILD_TMP, default the system temp folder) and ~8 min here.

Workloads: ``clustered`` (benchmarks/workload.py's generator), ``hard`` (below:
anisotropic token vectors, ~10% stop-word-like tokens from a few directions with huge
posting lists, noisy queries) and ``minilm`` (real all-MiniLM-L6-v2 token vectors of
Vaswani abstracts, read from a cache file made outside the repo; skipped when absent:
``--minilm-cache PATH`` holding ``{"doc_emb", "doc_offsets"}``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from colbert_engine import Index, ops  # noqa: E402
from colbert_engine.index import codec as C  # noqa: E402
from colbert_engine.index.writer import release_freed_memory  # noqa: E402
from colbert_engine.ops import codec as oc  # noqa: E402

DEFAULT_MINILM_CACHE = "/work/cache/minilm_vaswani_6k.pt"


def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def hard_collection(n_docs: int, mean_doc_len: int = 100, dim: int = 128, n_queries: int = 100, seed: int = 0,
                    stop_share: float = 0.10, n_stop: int = 24, query_noise: float = 0.5):
    """A hard synthetic collection (the kind of issue 11): anisotropic token vectors (a
    decaying per-dimension spectrum, so most variance sits in few dimensions), a share of
    stop-word-like tokens drawn from a few directions (huge posting lists), doc lengths
    log-normal, queries = noisy copies of a target document's tokens.
    Returns (doc_emb (T, dim), doc_offsets (n+1,), queries (nq, 32, dim))."""
    gen = torch.Generator().manual_seed(seed)
    spectrum = torch.exp(-torch.arange(dim, dtype=torch.float32) / (dim / 4)) + 0.05
    n_terms = max(512, n_docs // 4)
    terms = _unit(torch.randn(n_terms, dim, generator=gen) * spectrum)
    stops = _unit(torch.randn(n_stop, dim, generator=gen) * spectrum)
    lengths = torch.exp(torch.randn(n_docs, generator=gen) * 0.6 + math.log(mean_doc_len * 0.85))
    lengths = lengths.round().long().clamp(8, 20 * mean_doc_len)
    offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    total = int(offsets[-1])
    zipf = 1.0 / torch.arange(1, n_terms + 1, dtype=torch.float32) ** 0.8
    term = torch.multinomial(zipf, total, replacement=True, generator=gen)
    base = terms[term]
    is_stop = torch.rand(total, generator=gen) < stop_share
    base[is_stop] = stops[torch.randint(0, n_stop, (int(is_stop.sum()),), generator=gen)]
    doc_emb = _unit(base + 0.6 * torch.randn(total, dim, generator=gen) * spectrum / spectrum.norm())
    queries = torch.empty(n_queries, 32, dim)
    targets = torch.randint(0, n_docs, (n_queries,), generator=gen)
    for q, doc in enumerate(targets.tolist()):
        t0, t1 = int(offsets[doc]), int(offsets[doc + 1])
        pick = doc_emb[t0 + torch.randint(0, t1 - t0, (32,), generator=gen)]
        queries[q] = _unit(pick + query_noise * torch.randn(32, dim, generator=gen) / dim ** 0.5)
    return doc_emb, offsets, queries


def workloads(n_tokens: int, minilm_cache: str | None):
    """name -> (doc_emb, doc_offsets, queries or None), about n_tokens tokens each."""
    from workload import make_workload

    mean = 100
    docs = max(10, n_tokens // mean)
    data = make_workload("medium", n_docs=docs, mean_doc_len=mean)
    out = {"clustered": (data.doc_emb, data.doc_offsets, data.queries)}
    emb, offsets, queries = hard_collection(docs)
    out["hard"] = (emb, offsets, queries)
    path = minilm_cache or DEFAULT_MINILM_CACHE
    if path and Path(path).exists():
        cached = torch.load(path, weights_only=True)
        emb = cached["doc_emb"].float()[:n_tokens]
        out["minilm"] = (_unit(emb), None, None)
    return out


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def _spread(n, times):
    rates = [n / t for t in times]
    return statistics.median(rates), min(rates), max(rates)


def cmd_agreement(args) -> None:
    print(f"# agreement: K={args.k}, {args.tokens:,} tokens, bf16 {args.bf16 and oc.bf16_available()}, "
          f"threads={torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")
    for name, (emb, _, _) in workloads(args.tokens, args.minilm_cache).items():
        if args.workloads and name not in args.workloads:
            continue
        dim = emb.shape[1]
        k = min(args.k, emb.shape[0] // 4)
        start = time.perf_counter()
        centroids = C.kmeans(emb, k, niters=2, max_points_per_centroid=16, seed=0)
        cells = oc.centroid_cells(centroids)
        train_s = time.perf_counter() - start
        x = emb[: args.tokens].float().contiguous()
        n_exact = min(x.shape[0], args.exact_tokens)
        exact, exact_t = _timed(lambda: oc.nearest_centroids(x[:n_exact], centroids), args.repeats)
        err_exact = float(((x[:n_exact] - centroids[exact.long()]) ** 2).sum(1).mean())
        exact_rate = _spread(n_exact, exact_t)
        print(f"{name}: dim {dim}, K {k}, {cells.n_cells} cells (k-means + cells {train_s:.1f} s); "
              f"exact {exact_rate[0]:,.0f} tok/s [{exact_rate[1]:,.0f}-{exact_rate[2]:,.0f}]")
        for nprobe in [p or None for p in args.nprobe] if args.nprobe else [None]:
            got, t = _timed(lambda: oc.nearest_centroids_probed(x, cells, nprobe, bf16=args.bf16), args.repeats)
            got = got[:n_exact]
            agree = float((got == exact).float().mean())
            err = float(((x[:n_exact] - centroids[got.long()]) ** 2).sum(1).mean())
            rate = _spread(x.shape[0], t)
            label = nprobe if nprobe is not None else f"{oc.default_nprobe(cells.n_cells)} (default)"
            print(f"  nprobe {label}: agreement {agree:.4%}, residual error x{err / err_exact:.4f}, "
                  f"{rate[0]:,.0f} tok/s [{rate[1]:,.0f}-{rate[2]:,.0f}] = x{rate[0] / exact_rate[0]:.1f} exact")
    print(f"load after {os.getloadavg()[0]:.2f}")


def _exact_topk(emb, offsets, queries, k):
    """Ground truth: exhaustive fp32 MaxSim, (nq, k) document indices."""
    return ops.maxsim_topk(queries, emb, offsets, k)[1]


def _recall(got_ids, truth):
    hits = [len(set(g) & set(t)) / len(t) for g, t in zip(got_ids, truth)]
    return sum(hits) / len(hits)


def cmd_recall(args) -> None:
    print(f"# recall@10 vs exhaustive fp32 MaxSim, {args.docs} docs, nbits {args.nbits}, load {os.getloadavg()[0]:.2f}")
    for name, (emb, offsets, queries) in workloads(args.docs * 100, None).items():
        if offsets is None or (args.workloads and name not in args.workloads):
            continue
        truth = _exact_topk(emb, offsets, queries, 10).tolist()
        print(f"{name}: {emb.shape[0]:,} tokens")
        for ppc, niters in [tuple(int(v) for v in c.split(":")) for c in args.configs]:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                index = Index.build(Path(tmp) / "i", emb, offsets, nbits=args.nbits,
                                    max_points_per_centroid=ppc, kmeans_niters=niters)
                build_s = time.perf_counter() - start
                stats = index.stats()
                exact_ids = [[d for d, _ in r] for r in index.search(queries, k=10, exact=True)]
                default_ids = [[d for d, _ in r] for r in index.search(queries, k=10)]
                split = ", ".join(f"{k[8:]} {v:.1f}" for k, v in stats.items() if k.startswith("build_s_"))
                print(f"  ppc {ppc:3d} niters {niters}: exact-on-codes {_recall(exact_ids, truth):.3f}, "
                      f"default {_recall(default_ids, truth):.3f}, build {build_s:.1f} s ({split})")
                index.close()


def cmd_buckets(args) -> None:
    """Pooled (ColBERT's) vs per-dimension bucket tables (quantiles, and Lloyd-Max refined:
    index.codec.per_dim_bucket_tables): reconstruction cosine and exact-on-codes recall@10
    vs exhaustive fp32 MaxSim, torch-level (no kernel needed)."""
    print(f"# buckets: pooled vs per-dimension, {args.docs} docs, load {os.getloadavg()[0]:.2f}")
    for name, (emb, offsets, queries) in workloads(args.docs * 100, None).items():
        if offsets is None:
            continue
        truth = _exact_topk(emb, offsets, queries, 10).tolist()
        gen = torch.Generator().manual_seed(0)
        held = emb[torch.randperm(emb.shape[0], generator=gen)[:50_000]]
        codec = C.train_codec(emb, emb.shape[0], args.nbits, bucket_layout="pooled")
        cells = C.cells_for(codec.centroids)
        codes = C._assign(emb, codec.centroids, cells)[0]
        r = emb - codec.centroids[codes]
        hcodes = C._assign(held, codec.centroids, cells)[0]
        held_r = held - codec.centroids[hcodes]
        variants = [("pooled", codec.bucket_cutoffs, codec.bucket_weights),
                    ("per-dim quantile", *C.per_dim_bucket_tables(held_r, args.nbits, lloyd_iters=0)),
                    ("per-dim Lloyd", *C.per_dim_bucket_tables(held_r, args.nbits))]
        for label, cut, w in variants:
            if cut.dim() == 1:
                dec = codec.centroids[codes] + w[torch.bucketize(r, cut)]
            else:
                b = (r.unsqueeze(-1) > cut.unsqueeze(0)).sum(-1)
                dec = codec.centroids[codes] + w.unsqueeze(0).expand(r.shape[0], -1, -1).gather(
                    2, b.unsqueeze(-1)).squeeze(-1)
            dec = _unit(dec)
            cos = float((dec * emb).sum(1).mean())
            got = ops.maxsim_topk(queries, dec, offsets, 10)[1].tolist()
            print(f"{name} {label}: mean cosine {cos:.4f}, exact-on-codes recall@10 {_recall(got, truth):.3f}")


def hard_batches(n_docs: int, docs_per_batch: int = 100, mean_doc_len: int = 100, dim: int = 128, seed: int = 0,
                 stop_share: float = 0.10, n_stop: int = 24):
    """:func:`hard_collection`'s distribution as a stream: yields ``(emb, offsets)`` batches
    of ``docs_per_batch`` documents made on the fly (each from its own seeded generator),
    so a 10M-token collection never sits in memory whole. Deterministic for a seed."""
    gen = torch.Generator().manual_seed(seed)
    spectrum = torch.exp(-torch.arange(dim, dtype=torch.float32) / (dim / 4)) + 0.05
    n_terms = max(512, n_docs // 4)
    terms = _unit(torch.randn(n_terms, dim, generator=gen) * spectrum)
    stops = _unit(torch.randn(n_stop, dim, generator=gen) * spectrum)
    zipf = 1.0 / torch.arange(1, n_terms + 1, dtype=torch.float32) ** 0.8
    noise_scale = 0.6 * spectrum / spectrum.norm()
    for b, start in enumerate(range(0, n_docs, docs_per_batch)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b + 1)
        n = min(docs_per_batch, n_docs - start)
        lengths = torch.exp(torch.randn(n, generator=g) * 0.6 + math.log(mean_doc_len * 0.85))
        lengths = lengths.round().long().clamp(8, 20 * mean_doc_len)
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        total = int(offsets[-1])
        emb = terms[torch.multinomial(zipf, total, replacement=True, generator=g)]
        is_stop = torch.rand(total, generator=g) < stop_share
        emb[is_stop] = stops[torch.randint(0, n_stop, (int(is_stop.sum()),), generator=g)]
        emb += torch.randn(total, dim, generator=g) * noise_scale
        yield torch.nn.functional.normalize(emb, dim=1, out=emb), offsets


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class StageRss:
    """Peak RSS per build stage: at each stage's end, the peak since the last mark (VmHWM,
    the kernel's exact high-water mark, reset by writing 5 to /proc/self/clear_refs), above
    the baseline taken before the build. Stages are marked by wrapping the build's
    functions (this benchmark only)."""

    def __init__(self):
        with open("/proc/self/clear_refs", "w") as f:  # fails loudly where unsupported
            f.write("5")
        self.baseline = _status_bytes("VmRSS")
        self.peaks: dict[str, int] = {}

    def mark(self, stage: str) -> None:
        peak = _status_bytes("VmHWM") - self.baseline
        self.peaks[stage] = max(self.peaks.get(stage, 0), peak)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def install(self) -> None:
        from colbert_engine.index import build as B
        from colbert_engine.index import codec as C
        from colbert_engine.index import segment as S

        def wrap(owner, name, before=None, after=None):
            fn = getattr(owner, name)

            def wrapped(*a, **k):
                if before:
                    self.mark(before)
                out = fn(*a, **k)
                if after:
                    self.mark(after)
                return out
            setattr(owner, name, wrapped)

        # spill (streamed: reading the stream to disk), sampling, training setup, k-means,
        # buckets, compression (and appending the arrays), IVF + small files, ids/manifest
        wrap(B, "sample_rows", before="spill", after="sampling")
        wrap(C, "kmeans", before="train-setup", after="kmeans")
        wrap(B, "train_codec", after="buckets")
        wrap(S.SegmentWriter, "finish", before="compression", after="ivf")


def growth_child(n_tokens: int, mode: str, warm: bool) -> dict:
    """One build (this process): the hard workload at about ``n_tokens`` tokens, 2 bits,
    packed (the input made first, then the build) or streamed (batches made on the fly).
    ``warm``: a 30k-token build first (K = 2,048: the probed paths), so the baseline is a
    process that has built before: a first build also faults in ~20 MB of library code and
    starts thread pools and allocator arenas (~40 MB), once per process."""
    import gc

    if warm:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_BUILD_TMP")) as tmp:
            Index.build(Path(tmp) / "warm", hard_batches(300, seed=1)).close()
    n_docs = max(10, n_tokens // 100)
    input_bytes = 0
    if mode == "packed":
        parts = list(hard_batches(n_docs))
        emb = torch.cat([p[0] for p in parts])
        ends = torch.tensor([p[0].shape[0] for p in parts]).cumsum(0)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64)] +
                            [p[1][1:] + (ends[i - 1] if i else 0) for i, p in enumerate(parts)])
        del parts
        input_bytes = emb.numel() * emb.element_size()
    gc.collect()
    release_freed_memory()  # the generator's freed blocks would otherwise pad the baseline
    probe = StageRss()
    probe.install()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_BUILD_TMP")) as tmp:
        start = time.perf_counter()
        if mode == "packed":
            index = Index.build(Path(tmp) / "i", emb, offsets)
        else:
            index = Index.build(Path(tmp) / "i", hard_batches(n_docs))
        seconds = time.perf_counter() - start
        probe.mark("ids+manifest")
        stats = index.stats()
        index.close()
    return {"tokens": stats["tokens"], "seconds": seconds, "input_bytes": input_bytes,
            "peak_above_baseline": max(probe.peaks.values()), "stage_peaks": probe.peaks,
            "index_bytes": stats["bytes"], "centroids": stats["centroids"],
            "split": {k[8:]: v for k, v in stats.items() if k.startswith("build_s_")}}


def cmd_growth(args) -> None:
    mode = "streamed" if args.stream else "packed"
    env = dict(os.environ)
    for setting in args.child_env or []:
        name, _, value = setting.partition("=")
        env[name] = value
    print(f"# growth: hard workload, nbits 2, {mode}, {'cold' if args.cold else 'warm'} process, "
          f"threads={torch.get_num_threads()}, "
          f"child env {' '.join(args.child_env) if args.child_env else '(glibc malloc defaults)'}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n in args.sizes:
        load0 = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "growth-child", str(n), "stream" if args.stream else "packed",
                              "cold" if args.cold else "warm"],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"growth child failed:\n{out.stderr[-4000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        mib = 2 ** 20
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["split"].items())
        stages = ", ".join(f"{k} {v / mib:,.0f}" for k, v in r["stage_peaks"].items())
        above = "input" if r["input_bytes"] else "baseline"
        print(f"{r['tokens']:>11,} tokens K={r['centroids']:>6}: {r['seconds']:7.1f} s "
              f"{r['tokens'] / r['seconds']:>9,.0f} tok/s; peak RSS above {above} "
              f"{r['peak_above_baseline'] / mib:,.0f} MiB = {r['peak_above_baseline'] / r['index_bytes']:.2f}x index "
              f"({r['index_bytes'] / mib:,.0f} MiB)\n    seconds: {split}\n    peak MiB per stage: {stages}\n"
              f"    load {load0:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    if len(rows) >= 2:
        xs = [math.log(r["tokens"]) for r in rows]
        ys = [math.log(r["seconds"]) for r in rows]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"fitted exponent: seconds ~ N^{slope:.2f} over {len(rows)} sizes")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("--k", type=int, default=32768)
    a.add_argument("--tokens", type=int, default=100_000)
    a.add_argument("--exact-tokens", type=int, default=20_000, help="tokens also assigned exactly")
    a.add_argument("--nprobe", type=int, nargs="*", help="cells probed (0: the default)")
    a.add_argument("--workloads", nargs="*", help="clustered, hard, minilm (default: all)")
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--minilm-cache")
    a.add_argument("--bf16", action="store_true", help="bf16 screen + fp32 rescoring (avx512_bf16 CPUs)")
    r = sub.add_parser("recall")
    r.add_argument("--docs", type=int, default=10_000)
    r.add_argument("--nbits", type=int, default=2)
    r.add_argument("--workloads", nargs="*", help="clustered, hard (default: both)")
    r.add_argument("--configs", nargs="+", default=["32:4", "256:4", "256:8"],
                   help="max_points_per_centroid:kmeans_niters pairs")
    b = sub.add_parser("buckets")
    b.add_argument("--docs", type=int, default=3000)
    b.add_argument("--nbits", type=int, default=2)
    g = sub.add_parser("growth")
    g.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    g.add_argument("--stream", action="store_true", help="build from a stream made on the fly")
    g.add_argument("--cold", action="store_true",
                   help="measure from a fresh process (default: after a small warm-up build)")
    g.add_argument("--child-env", nargs="*", metavar="NAME=VALUE",
                   help="environment of the build processes, e.g. MALLOC_ARENA_MAX=1 (glibc: one heap for all "
                        "threads, so the worker threads' freed blocks are trimmed too)")
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "growth-child":
        print(json.dumps(growth_child(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "warm")))
        return 0
    args = parser.parse_args(argv)
    {"agreement": cmd_agreement, "recall": cmd_recall, "growth": cmd_growth, "buckets": cmd_buckets}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
