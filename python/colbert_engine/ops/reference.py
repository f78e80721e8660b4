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


# --------------------------------------------------------------------------- project


def project(hidden, weight, bias=None, mask=None, dim=None, out_dtype=torch.float32):
    """Reference of :func:`colbert_engine.ops.project`: fp32 ``hidden @ weight[:dim].T +
    bias[:dim]``, L2-normalised per token (``torch.nn.functional.normalize``, eps 1e-12),
    then the tokens where ``mask`` is True packed in row-major order.

    ``weight=None`` means the identity (``dim`` must then be None or hidden's size)."""
    h = torch.as_tensor(hidden).float()
    if weight is None:
        y = h if dim is None else h[..., :dim]
    else:
        w = torch.as_tensor(weight).float()
        d = w.shape[0] if dim is None else dim
        y = h @ w[:d].T
        if bias is not None:
            y = y + torch.as_tensor(bias).float()[:d]
    y = torch.nn.functional.normalize(y, p=2.0, dim=-1, eps=1e-12)
    if mask is None:
        return y.to(out_dtype)
    mask = torch.as_tensor(mask).bool()
    counts = mask.sum(dim=1).to(torch.int64)
    offsets = torch.zeros(mask.shape[0] + 1, dtype=torch.int64, device=y.device)
    offsets[1:] = torch.cumsum(counts, dim=0)
    return y[mask].to(out_dtype), offsets
