"""Cost of the always-on segment bounds checks (codes < K, monotone offsets, ivf < n_docs)
that make ``Index.open(verify=False)`` safe for the kernels, against the rest of an open
without verify and against ``verify=True`` (crc32 of every byte), on one synthetic segment
of realistic proportions held in the page cache.

    PYTHONPATH=python python benchmarks/bench_open_checks.py [--tokens 8000000] [--repeats 7]

Prints medians with min-max over the repeats and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from colbert_engine.index import format as F
from colbert_engine.index.segment import ARRAYS, check_bounds, file_name


def _write_segment(folder: Path, n_tokens: int, dim: int, nbits: int, k: int, doc_len: int) -> dict:
    rng = np.random.default_rng(0)
    n_docs = n_tokens // doc_len
    codes = rng.integers(0, k, n_tokens, dtype=np.int32)
    doc_offsets = np.arange(0, n_docs * doc_len + 1, doc_len, dtype=np.int64)
    # postings: ~doc_len/2 distinct centroids per doc, sorted per centroid
    per_cell = rng.multinomial(n_docs * doc_len // 2, np.full(k, 1.0 / k))
    ivf_offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(per_cell, out=ivf_offsets[1:])
    ivf = rng.integers(0, n_docs, int(ivf_offsets[-1]), dtype=np.int32)
    arrays = {"codes": codes, "residuals": rng.integers(0, 256, (n_tokens, dim * nbits // 8), dtype=np.uint8),
              "inv_norms": np.ones(n_tokens, dtype=np.float16), "doc_offsets": doc_offsets, "ivf": ivf,
              "ivf_offsets": ivf_offsets}
    files = {file_name("seg000001", a): F.write_npy(folder, file_name("seg000001", a), x) for a, x in arrays.items()}
    return {"name": "seg000001", "doc_base": 0, "n_docs": n_docs, "n_tokens": n_tokens, "files": files}


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=8_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    dim, nbits, k, doc_len = 128, 2, 65536, 80
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        entry = _write_segment(folder, args.tokens, dim, nbits, k, doc_len)
        total = sum(e["bytes"] for e in entry["files"].values())

        def load(verify):
            return {a: F.load_npy(folder, file_name("seg000001", a), entry["files"][file_name("seg000001", a)], verify)
                    for a in ARRAYS}

        load(True)  # page cache warm
        mapped = load(False)
        timings = {"open without verify, no checks": _time(lambda: load(False), args.repeats),
                   "bounds checks (always on)": _time(lambda: check_bounds(folder, entry, mapped, k), args.repeats),
                   "open with verify (crc32)": _time(lambda: load(True), args.repeats)}
    print(f"segment: {args.tokens} tokens, {entry['n_docs']} docs, K={k}, dim={dim}, nbits={nbits}, "
          f"{total / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.2f}")
    medians = {}
    for name, values in timings.items():
        medians[name] = statistics.median(values)
        print(f"  {name:34s} median {medians[name] * 1e3:8.1f} ms  (min {min(values) * 1e3:.1f}, "
              f"max {max(values) * 1e3:.1f}, {args.repeats} repeats)")
    checks = medians["bounds checks (always on)"]
    print(f"  bounds checks: {checks / args.tokens * 1e9:.2f} ns/token, "
          f"{checks / medians['open with verify (crc32)']:.3f}x the verify=True open")


if __name__ == "__main__":
    main()
