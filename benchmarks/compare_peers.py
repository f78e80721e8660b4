"""colbert-engine beside the engines users would otherwise pick, on the same vectors.

Systems (each measured when importable, skipped with a note otherwise):

- colbert-engine: ``Index.build`` (PLAID-style compressed index) and ``Index.search``.
- colbert-ai 0.2.22 (stanford ColBERTv2 / PLAID), driven with precomputed vectors: a
  ``CollectionIndexer`` whose encoder returns our vectors, searched with ``IndexScorer``
  through ``Searcher.dense_search`` (its defaults by k), as in ``shared/PEERS.md``.
- maxsim-cpu 0.1.0: exact MaxSim over float32 numpy arrays.
- torch exhaustive: one GEMM per query over all packed tokens + segment max + sum; its
  top-k is the ground truth for recall.

Metrics: build seconds, index bytes per token (all files in the index folder), p50 ms per
query (one query per call, k=10 by default), recall@k against exhaustive MaxSim. Ratios
are peer / colbert-engine (for ms and seconds > 1 means colbert-engine is faster).

colbert-ai needs its own environment (it must not see /work/venv); see PEERS.md:

    python3 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install torch==2.13.0 colbert-ai==0.2.22 faiss-cpu ninja maxsim-cpu numpy
    PYTHONPATH=python /work/venv-peers/bin/python benchmarks/compare_peers.py --size peers --markdown

colbert-ai JIT-compiles two C++ extensions on its first search (~100 s on 2 cores,
cached in ~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _p50_ms(fn, queries) -> tuple[float, list]:
    """Runs ``fn(query (1, Lq, dim))`` per query after one warm-up; (median ms, outputs)."""
    fn(queries[0:1])
    times, outputs = [], []
    for i in range(queries.shape[0]):
        start = time.perf_counter()
        outputs.append(fn(queries[i:i + 1]))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), outputs


def _recall(found: list, truth: list) -> float:
    return statistics.mean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth) if t)


# ----------------------------------------------------------------------------- truth

def exhaustive_torch(doc_emb, doc_offsets, queries, k):
    """Exact MaxSim in plain torch: (p50 ms, top-k doc indices per query)."""
    import torch

    lengths = torch.diff(doc_offsets)

    def search(q):
        sim = doc_emb @ q[0].T                                     # (T, Lq)
        per_doc = torch.segment_reduce(sim, "max", lengths=lengths, axis=0, unsafe=True)
        scores = per_doc.sum(1)
        scores[lengths == 0] = float("-inf")
        return scores.topk(min(k, scores.numel())).indices.tolist()

    return _p50_ms(search, queries)


# ----------------------------------------------------------------------------- systems

def run_colbert_engine(doc_emb, doc_offsets, queries, k, nbits, workdir):
    from colbert_engine import Index

    path = Path(workdir) / "colbert-engine"
    start = time.perf_counter()
    index = Index.build(path, doc_emb, doc_offsets, nbits=nbits, device="cpu")
    build_s = time.perf_counter() - start
    p50, results = _p50_ms(lambda q: [doc_id for doc_id, _ in index.search(q, k=k)[0]], queries)
    stats = index.stats()
    return {"build_s": build_s, "bytes_per_token": _folder_bytes(path) / doc_emb.shape[0], "p50_ms": p50,
            "found": results, "note": f"{stats['centroids']} centroids, segments {stats['bytes_per_token']:.1f} B/token"}


def run_colbert_engine_exact(doc_emb, doc_offsets, queries, k):
    from colbert_engine import ops

    def search(q):
        scores = ops.maxsim(q, doc_emb, doc_offsets)[0]
        return scores.topk(min(k, scores.numel())).indices.tolist()

    p50, results = _p50_ms(search, queries)
    return {"build_s": 0.0, "bytes_per_token": 4.0 * doc_emb.shape[1], "p50_ms": p50, "found": results,
            "note": "ops.maxsim over uncompressed fp32 vectors"}


def run_maxsim_cpu(doc_emb, doc_offsets, queries, k):
    import maxsim_cpu
    import numpy as np

    emb = doc_emb.numpy().astype(np.float32)
    offsets = doc_offsets.tolist()
    docs = [np.ascontiguousarray(emb[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]

    def search(q):
        scores = np.asarray(maxsim_cpu.maxsim_scores_variable(np.ascontiguousarray(q[0].numpy()), docs))
        return np.argsort(-scores, kind="stable")[:k].tolist()

    p50, results = _p50_ms(search, queries)
    return {"build_s": 0.0, "bytes_per_token": 4.0 * doc_emb.shape[1], "p50_ms": p50, "found": results,
            "note": "exact, float32 numpy list of docs"}


def run_colbert_ai(doc_emb, doc_offsets, queries, k, nbits, workdir):
    import torch
    from colbert.data.collection import Collection
    from colbert.indexing.collection_indexer import CollectionIndexer
    from colbert.indexing.index_saver import IndexSaver
    from colbert.infra import ColBERTConfig, Run, RunConfig
    from colbert.modeling.colbert import ColBERT
    from colbert.search.index_storage import IndexScorer
    from colbert.searcher import Searcher

    class PrecomputedEncoder:
        """Stands in for CollectionEncoder: passages are pid strings, vectors are ours."""

        def encode_passages(self, passages):
            pids = [int(p) for p in passages]
            parts = [doc_emb[int(doc_offsets[p]):int(doc_offsets[p + 1])] for p in pids]
            if not parts:
                return torch.empty(0, doc_emb.shape[1]), []
            return torch.cat(parts).float(), [part.shape[0] for part in parts]

    class PrecomputedIndexer(CollectionIndexer):
        def __init__(self, config, collection):  # no checkpoint: nothing to download
            self.verbose = 0
            self.config = config
            self.rank, self.nranks = config.rank, config.nranks
            self.use_gpu = False
            self.collection = Collection(data=collection)
            self.encoder = PrecomputedEncoder()
            self.saver = IndexSaver(config)

    path = Path(workdir) / "colbert-ai"
    path.mkdir(parents=True)
    n_docs = doc_offsets.numel() - 1
    with Run().context(RunConfig(nranks=1, gpus=0)):
        config = ColBERTConfig(nbits=nbits, dim=int(doc_emb.shape[1]), kmeans_niters=4, index_path=str(path),
                               doc_maxlen=int(torch.diff(doc_offsets).max()))
        start = time.perf_counter()
        PrecomputedIndexer(config, [str(i) for i in range(n_docs)]).run([[[None]]])
        build_s = time.perf_counter() - start
        index_bytes = _folder_bytes(path)

        searcher = Searcher.__new__(Searcher)
        searcher.verbose = 0
        searcher.config = ColBERTConfig.from_existing(ColBERTConfig.load_from_index(str(path)), Run().config)
        start = time.perf_counter()
        searcher.ranker = IndexScorer(str(path), use_gpu=False, load_index_with_mmap=False)
        ColBERT.try_load_torch_extensions(use_gpu=False)  # normally done by loading a checkpoint
        load_s = time.perf_counter() - start

        def search(q):
            pids, _, _ = searcher.dense_search(q.float(), k=k)
            return [int(p) for p in pids]

        p50, results = _p50_ms(search, queries)
    row = {"build_s": build_s, "bytes_per_token": index_bytes / doc_emb.shape[0], "p50_ms": p50,
           "found": results, "note": f"first load {load_s:.0f} s (JIT of its C++ extensions when not cached)"}

    # Interoperability: the same colbert-ai index read by colbert-engine (Index.from_colbert)
    # and searched with our funnel; "agree" = top-k overlap with colbert-ai's own answers.
    from colbert_engine import Index

    start = time.perf_counter()
    imported = Index.from_colbert(path, Path(workdir) / "imported", device="cpu")
    import_s = time.perf_counter() - start
    p50_imported, found = _p50_ms(lambda q: [doc_id for doc_id, _ in imported.search(q, k=k)[0]], queries)
    row["imported"] = {"build_s": import_s, "bytes_per_token": _folder_bytes(Path(workdir) / "imported")
                       / doc_emb.shape[0], "p50_ms": p50_imported, "found": found,
                       "note": f"import {import_s:.1f} s; top-{k} overlap with colbert-ai's answers "
                               f"{_recall(found, results):.3f}"}
    return row


# ----------------------------------------------------------------------------- report

def main(argv=None) -> int:
    from workload import SIZES, load_workload, make_workload

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES), help="workload size (benchmarks/workload.py)")
    parser.add_argument("--docs", type=int, help="override the size's number of documents")
    parser.add_argument("--queries", type=int, help="override the size's number of queries")
    parser.add_argument("--workload", help="a .pt file from benchmarks/workload.py instead of --size")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nbits", type=int, default=2, choices=(1, 2, 4))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and OpenMP threads (default: all)")
    parser.add_argument("--skip", action="append", default=[],
                        help="skip a system: colbert-engine, colbert-engine-exact, colbert-ai, maxsim-cpu")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for RESULTS.md)")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from colbert_engine import ops

    torch.set_num_threads(args.threads)
    ops.set_num_threads(args.threads)
    if args.workload:
        data = load_workload(args.workload)
        doc_emb, doc_offsets, queries = data["doc_emb"], data["doc_offsets"], data["queries"]
    else:
        overrides = {k: v for k, v in (("n_docs", args.docs), ("n_queries", args.queries)) if v is not None}
        data = make_workload(args.size, **overrides)
        doc_emb, doc_offsets, queries = data.doc_emb, data.doc_offsets, data.queries
    n_docs, n_tokens = doc_offsets.numel() - 1, doc_emb.shape[0]
    print(f"workload: {n_docs:,} docs, {n_tokens:,} tokens x {doc_emb.shape[1]}, {queries.shape[0]} queries x "
          f"{queries.shape[1]} tokens; k={args.k}, nbits={args.nbits}, {args.threads} threads", flush=True)

    truth_ms, truth = exhaustive_torch(doc_emb, doc_offsets, queries, args.k)
    rows = {"torch exhaustive": {"build_s": 0.0, "bytes_per_token": 4.0 * doc_emb.shape[1], "p50_ms": truth_ms,
                                 "recall": 1.0, "note": "ground truth"}}
    runners = {
        "colbert-engine": lambda w: run_colbert_engine(doc_emb, doc_offsets, queries, args.k, args.nbits, w),
        "colbert-engine-exact": lambda w: run_colbert_engine_exact(doc_emb, doc_offsets, queries, args.k),
        "colbert-ai": lambda w: run_colbert_ai(doc_emb, doc_offsets, queries, args.k, args.nbits, w),
        "maxsim-cpu": lambda w: run_maxsim_cpu(doc_emb, doc_offsets, queries, args.k),
    }
    module_of = {"colbert-ai": "colbert", "maxsim-cpu": "maxsim_cpu"}
    for name, runner in runners.items():
        if name in args.skip:
            continue
        module = module_of.get(name)
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                print(f"{name}: not installed, skipped", flush=True)
                continue
        workdir = tempfile.mkdtemp(prefix=f"compare-{name}-")
        try:
            print(f"{name}: running ...", flush=True)
            row = runner(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        extra = row.pop("imported", None)
        row["recall"] = _recall(row.pop("found"), truth)
        rows[name] = row
        if extra is not None:
            extra["recall"] = _recall(extra.pop("found"), truth)
            rows["colbert-engine on colbert-ai's index"] = extra
        print(f"{name}: build {row['build_s']:.1f} s, {row['bytes_per_token']:.1f} B/token, "
              f"p50 {row['p50_ms']:.2f} ms, recall@{args.k} {row['recall']:.3f}", flush=True)

    ours = rows.get("colbert-engine")
    header = ["system", "build s", "bytes/token", "p50 ms/query", f"recall@{args.k}", "p50 vs ours", "note"]
    table = []
    for name, row in rows.items():
        ratio = f"{row['p50_ms'] / ours['p50_ms']:.2f}x" if ours else "-"
        table.append([name, f"{row['build_s']:.1f}", f"{row['bytes_per_token']:.1f}", f"{row['p50_ms']:.2f}",
                      f"{row['recall']:.3f}", ratio, row.get("note", "")])
    if ours and "colbert-ai" in rows:
        peer = rows["colbert-ai"]
        print(f"\ncolbert-ai / colbert-engine: build {peer['build_s'] / ours['build_s']:.2f}x, "
              f"bytes/token {peer['bytes_per_token'] / ours['bytes_per_token']:.2f}x, "
              f"p50 {peer['p50_ms'] / ours['p50_ms']:.2f}x, recall {peer['recall']:.3f} vs {ours['recall']:.3f}")
    print()
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
        print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} threads; python {platform.python_version()}, torch {torch.__version__}; "
              f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
        for line in [header] + table:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
