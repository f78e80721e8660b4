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


# --------------------------------------------------------------------------- plaid


def centroid_scores(queries, centroids):
    """Reference of :func:`colbert_engine.ops.centroid_scores`: ``(K, Lq)`` / ``(nq, K, Lq)``."""
    q = torch.as_tensor(queries).float()
    c = torch.as_tensor(centroids).float()
    if q.dim() == 2:
        return (c @ q.T).contiguous()
    return torch.stack([c @ qi.T for qi in q]) if len(q) else q.new_empty((0, c.shape[0], q.shape[1]))


def candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=None):
    """Reference of :func:`colbert_engine.ops.candidates`: per query token a stable
    descending sort of the centroid scores (ties: lower centroid id), union of the chosen
    cells' inverted lists, subset applied, ascending int32 ids."""
    scores = torch.as_tensor(scores).float()
    if scores.dim() == 3:
        return [candidates(s, ivf, ivf_offsets, nprobe, n_docs, subset) for s in scores]
    ivf = torch.as_tensor(ivf).long()
    ivf_offsets = torch.as_tensor(ivf_offsets).long()
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices[:nprobe]  # (nprobe, Lq)
    cells = torch.unique(order).tolist()
    lists = [ivf[int(ivf_offsets[c]):int(ivf_offsets[c + 1])] for c in cells]
    docs = torch.unique(torch.cat(lists)) if lists else ivf.new_empty(0)
    if subset is not None:
        docs = docs[torch.as_tensor(subset).bool()[docs]]
    return docs.to(torch.int32)


def centroid_interaction(scores, doc_codes, doc_offsets, candidates, ndocs, threshold=None):
    """Reference of :func:`colbert_engine.ops.centroid_interaction`: for every candidate the
    sum over query tokens of the max of ``scores[code, i]`` over its (kept) tokens, -inf for
    a document with no kept token; the best ``min(ndocs, m)`` by (score desc, doc id asc)."""
    scores = torch.as_tensor(scores).float()
    if scores.dim() == 3:
        return [centroid_interaction(s, doc_codes, doc_offsets, c, ndocs, threshold)
                for s, c in zip(scores, candidates)]
    codes = torch.as_tensor(doc_codes).long()
    offsets = torch.as_tensor(doc_offsets).long()
    cand = torch.as_tensor(candidates).long()
    m, query_len = cand.numel(), scores.shape[1]
    starts, lengths = offsets[cand], offsets[cand + 1] - offsets[cand]
    owner = torch.repeat_interleave(torch.arange(m), lengths)  # candidate of each gathered token
    first = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    token = torch.repeat_interleave(starts, lengths) + torch.arange(owner.numel()) - first
    token_codes = codes[token]
    if threshold is not None:
        kept = (scores.amax(dim=1) >= threshold)[token_codes]
        owner, token_codes = owner[kept], token_codes[kept]
    per_doc = torch.full((m, query_len), float("-inf"))
    per_doc.scatter_reduce_(0, owner[:, None].expand(-1, query_len), scores[token_codes], "amax")
    approx = per_doc.sum(dim=1)
    by_id = torch.argsort(cand, stable=True)
    order = by_id[torch.argsort(approx[by_id], descending=True, stable=True)][:min(ndocs, m)]
    return approx[order], cand[order].to(torch.int32)
