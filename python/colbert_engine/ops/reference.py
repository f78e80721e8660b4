"""Pure-torch references: the specification of every kernel in ``colbert_engine.ops``.

Each function has the same signature as its op and favours clarity over speed. Tests
compare the kernels with these; nothing in the library's hot path calls them.
"""

from __future__ import annotations

import torch

# --------------------------------------------------------------------------- maxsim


def maxsim(queries, doc_emb, doc_offsets, *, doc_subset=None, out=None):
    """Reference of :func:`colbert_engine.ops.maxsim` (fp32 math, -inf for empty docs)."""
    queries = torch.as_tensor(queries)
    squeeze = queries.dim() == 2
    q = (queries.unsqueeze(0) if squeeze else queries).float()
    emb = torch.as_tensor(doc_emb).float()
    offsets = torch.as_tensor(doc_offsets).long()
    n_docs = offsets.numel() - 1
    docs = range(n_docs) if doc_subset is None else [int(d) for d in torch.as_tensor(doc_subset)]
    scores = torch.full((q.shape[0], len(docs)), float("-inf"), dtype=torch.float32, device=q.device)
    for col, d in enumerate(docs):
        begin, end = int(offsets[d]), int(offsets[d + 1])
        if end > begin:
            sim = q @ emb[begin:end].T  # (nq, Lq, len)
            scores[:, col] = sim.amax(dim=2).sum(dim=1)
    return scores[0] if squeeze else scores


def maxsim_topk(queries, doc_emb, doc_offsets, k, *, doc_subset=None):
    """Reference of :func:`colbert_engine.ops.maxsim_topk`: all scores, then the best k per
    query by (score descending, document id ascending); empty documents give (-inf, -1)."""
    scores = maxsim(queries, doc_emb, doc_offsets, doc_subset=doc_subset)
    squeeze = scores.dim() == 1
    scores = scores.unsqueeze(0) if squeeze else scores
    n_docs = torch.as_tensor(doc_offsets).numel() - 1
    ids = torch.arange(n_docs) if doc_subset is None else torch.as_tensor(doc_subset).long().cpu()
    ids = ids.to(scores.device)
    keep = min(k, ids.numel())
    by_id = torch.argsort(ids, stable=True)  # ties: lower id first, then a stable score sort
    scores, ids = scores[:, by_id], ids[by_id]
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
    top_scores = torch.gather(scores, 1, order)
    top_ids = torch.where(torch.isneginf(top_scores), torch.tensor(-1, device=scores.device), ids[order])
    return (top_scores[0], top_ids[0]) if squeeze else (top_scores, top_ids)
