"""``colbert-engine bench``: each kernel against its torch reference, small sizes, same run.

Every case runs ``ops.<name>`` and ``ops.reference.<name>`` on the same inputs (both have
the same signature), checks they agree, and reports median wall times and their ratio.
Sizes are chosen so the whole table takes well under a minute on 2 cores. The
pytest-benchmark suites in ``benchmarks/`` are the thorough version (``--full``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Case:
    op: str       # name in colbert_engine.ops and ops.reference
    shape: str    # what the sizes are, for the table
    make: Callable[[torch.Generator], tuple[tuple, dict]]  # -> (args, kwargs)


def _packed_docs(gen: torch.Generator, n_docs: int, mean_len: int, dim: int):
    lengths = torch.randint(1, 2 * mean_len, (n_docs,), generator=gen)
    offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    emb = torch.nn.functional.normalize(torch.randn(int(offsets[-1]), dim, generator=gen), dim=1)
    return emb, offsets


def _queries(gen: torch.Generator, nq: int, lq: int, dim: int):
    return torch.nn.functional.normalize(torch.randn(nq, lq, dim, generator=gen), dim=2)


def _maxsim_all(gen):
    emb, offsets = _packed_docs(gen, 500, 64, 128)
    return (_queries(gen, 4, 32, 128), emb, offsets), {}


def _maxsim_fp16(gen):
    emb, offsets = _packed_docs(gen, 500, 64, 128)
    return (_queries(gen, 4, 32, 128).half(), emb.half(), offsets), {}


def _maxsim_subset(gen):
    emb, offsets = _packed_docs(gen, 5000, 64, 128)
    subset = torch.randperm(5000, generator=gen)[:256]
    return (_queries(gen, 1, 32, 128), emb, offsets), {"doc_subset": subset}


def _codec_parts(gen, n_tokens=20000, dim=128, n_centroids=256, nbits=2):
    """Token vectors, centroids and bucket tables of the right shapes (not k-means trained:
    timings do not depend on the centroids' quality)."""
    emb = torch.nn.functional.normalize(torch.randn(n_tokens, dim, generator=gen), dim=1)
    centroids = torch.nn.functional.normalize(torch.randn(n_centroids, dim, generator=gen), dim=1)
    levels = 2 ** nbits
    weights = torch.linspace(-0.15, 0.15, levels)
    cutoffs = (weights[1:] + weights[:-1]) / 2
    return emb, centroids, cutoffs, weights, nbits


def _compress(gen):
    return _codec_parts(gen), {}


def _decompress(gen):
    from colbert_engine import ops

    emb, centroids, cutoffs, weights, nbits = _codec_parts(gen)
    codes, residuals, _ = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    return (codes, residuals, centroids, weights, nbits), {}


def _index_parts(gen, n_docs=2000, mean_len=64, dim=128, n_centroids=1024, nbits=2):
    """A small compressed collection and its inverted lists, for the search-stage kernels."""
    from colbert_engine import ops

    emb, offsets = _packed_docs(gen, n_docs, mean_len, dim)
    _, centroids, cutoffs, weights, _ = _codec_parts(gen, 1, dim, n_centroids, nbits)
    codes, residuals, inv_norms = ops.compress_residuals(emb, centroids, cutoffs, weights, nbits)
    doc_of_token = torch.repeat_interleave(torch.arange(n_docs), torch.diff(offsets))
    pairs = torch.unique(codes.long() * n_docs + doc_of_token)          # sorted by (code, doc)
    ivf = (pairs % n_docs).to(torch.int32)
    ivf_offsets = torch.zeros(n_centroids + 1, dtype=torch.int64)
    ivf_offsets[1:] = torch.cumsum(torch.bincount(pairs // n_docs, minlength=n_centroids), 0)
    query = _queries(gen, 1, 32, dim)[0]
    scores = (centroids @ query.T).contiguous()                           # (K, Lq)
    return dict(emb=emb, offsets=offsets, centroids=centroids, weights=weights, nbits=nbits, codes=codes,
                residuals=residuals, inv_norms=inv_norms, ivf=ivf, ivf_offsets=ivf_offsets, query=query,
                scores=scores, n_docs=n_docs)


def _centroid_scores(gen):
    p = _index_parts(gen)
    return (_queries(gen, 8, 32, 128), p["centroids"]), {}


def _candidates(gen):
    p = _index_parts(gen)
    return (p["scores"], p["ivf"], p["ivf_offsets"], 2, p["n_docs"]), {}


def _centroid_interaction(gen):
    from colbert_engine import ops

    p = _index_parts(gen)
    cands = ops.candidates(p["scores"], p["ivf"], p["ivf_offsets"], 2, p["n_docs"])
    return (p["scores"], p["codes"], p["offsets"], cands, 256), {"threshold": 0.1}


def _lut_maxsim(gen):
    p = _index_parts(gen)
    cands = torch.randperm(p["n_docs"], generator=gen)[:64].to(torch.int32)
    return (p["query"], p["scores"], p["codes"], p["residuals"], p["inv_norms"], p["offsets"], cands,
            p["weights"], p["nbits"]), {}


CASES = [
    Case("compress_residuals", "20k tokens, dim 128, 256 centroids, 2 bits", _compress),
    Case("decompress_residuals", "20k tokens, dim 128, 2 bits", _decompress),
    Case("centroid_scores", "8 q x 32 tok, 1024 centroids", _centroid_scores),
    Case("candidates", "1 q, nprobe 2, 1024 cells, 2k docs", _candidates),
    Case("centroid_interaction", "1 q, candidates of nprobe 2, keep 256", _centroid_interaction),
    Case("lut_maxsim", "1 q, 64 compressed docs x ~64 tok, 2 bits", _lut_maxsim),
    Case("maxsim", "4 q x 32 tok, 500 docs x ~64 tok, dim 128, fp32", _maxsim_all),
    Case("maxsim", "same, fp16", _maxsim_fp16),
    Case("maxsim", "1 q, rerank 256 of 5k docs (doc_subset)", _maxsim_subset),
]


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocation, thread pool start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _agree(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return all(_agree(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            return torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-3, equal_nan=True)
        return torch.equal(a, b)
    return a == b


def run_quick_benchmarks(repeats: int = 5, threads: int | None = None, cases=None) -> list[dict]:
    """Rows ``{op, shape, kernel_ms, reference_ms, speedup, agrees}`` for every case whose op
    exists in this build."""
    from colbert_engine import ops

    if threads is not None:
        ops.set_num_threads(threads)
    rows = []
    for case in cases or CASES:
        kernel = getattr(ops, case.op, None)
        reference = getattr(ops.reference, case.op, None)
        if kernel is None or reference is None:
            continue
        args, kwargs = case.make(torch.Generator().manual_seed(0))
        agrees = _agree(kernel(*args, **kwargs), reference(*args, **kwargs))
        kernel_ms = _median_ms(lambda: kernel(*args, **kwargs), repeats)
        reference_ms = _median_ms(lambda: reference(*args, **kwargs), repeats)
        rows.append({"op": case.op, "shape": case.shape, "kernel_ms": kernel_ms, "reference_ms": reference_ms,
                     "speedup": reference_ms / kernel_ms if kernel_ms > 0 else float("inf"), "agrees": agrees})
    return rows


def print_table(rows: list[dict]) -> None:
    from colbert_engine import ops

    report = ops.info()
    print(f"colbert-engine {report['version']}, torch {report['torch']}, isa {report.get('isa')}, "
          f"{report.get('threads')} threads (kernel = ops.<op>, reference = ops.reference.<op>, median ms)")
    op_w = max([len(r["op"]) for r in rows] + [2])
    shape_w = max([len(r["shape"]) for r in rows] + [5])
    print(f"{'op':<{op_w}}  {'shape':<{shape_w}}  {'kernel':>9}  {'reference':>9}  {'ratio':>6}  agrees")
    for r in rows:
        print(f"{r['op']:<{op_w}}  {r['shape']:<{shape_w}}  {r['kernel_ms']:9.2f}  {r['reference_ms']:9.2f}  "
              f"{r['speedup']:5.2f}x  {'yes' if r['agrees'] else 'NO'}")
