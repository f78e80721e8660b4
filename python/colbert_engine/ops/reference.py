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


# --------------------------------------------------------------------------- codec
# Residual codec (csrc/common/codec.h): ColBERT's bucket rule and bit layout.


def _pack_buckets(buckets, nbits):
    """(T, dim) bucket indices -> (T, dim*nbits/8) uint8: each dimension's bits least
    significant first, dimensions in order, bytes filled most-significant bit first."""
    shifts = torch.arange(nbits, device=buckets.device)
    bits = (buckets.unsqueeze(-1) >> shifts) & 1                       # (T, dim, nbits)
    bits = bits.reshape(buckets.shape[0], buckets.shape[1] * nbits // 8, 8)  # (T, bytes, 8)
    place = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], device=buckets.device)
    return (bits * place).sum(dim=-1).to(torch.uint8)


def _unpack_buckets(residuals, nbits):
    """Inverse of :func:`_pack_buckets`: (T, dim*nbits/8) uint8 -> (T, dim) int64."""
    shifts = torch.arange(7, -1, -1, device=residuals.device)
    bits = (residuals.long().unsqueeze(-1) >> shifts) & 1             # (T, bytes, 8), MSB first
    bits = bits.reshape(residuals.shape[0], residuals.shape[1] * 8 // nbits, nbits)  # (T, dim, nbits)
    return (bits << torch.arange(nbits, device=residuals.device)).sum(dim=-1)


def per_dim_table(table, dim):
    """A bucket table as ``(dim, n)`` fp32: a pooled ``(n,)`` table (ColBERT's) repeated for
    every dimension, a per-dimension ``(dim, n)`` one as given."""
    table = torch.as_tensor(table).float()
    return table.expand(dim, -1) if table.dim() == 1 else table


def byte_codebook(bucket_weights, nbits, dim):
    """Reference of :func:`colbert_engine.ops.codec.byte_codebook`: entry ``[p, v, j]`` is the
    weight of dimension ``p*k + j`` for the bucket that byte value v holds in its j-th field,
    read with :func:`_unpack_buckets` (the bit layout's own inverse)."""
    weights = per_dim_table(bucket_weights, dim)
    per_byte = 8 // nbits
    fields = _unpack_buckets(torch.arange(256, dtype=torch.uint8).unsqueeze(1), nbits)  # (256, k)
    codebook = torch.empty(dim // per_byte, 256, per_byte)
    for p in range(dim // per_byte):
        for j in range(per_byte):
            codebook[p, :, j] = weights[p * per_byte + j, fields[:, j]]
    return codebook


def _as_codebook(bucket_weights, nbits, dim):
    """Scalar tables expanded to a byte codebook; a codebook (3-D) as given, fp32."""
    table = torch.as_tensor(bucket_weights).float()
    return table if table.dim() == 3 else byte_codebook(table, nbits, dim)


def _decode_codebook(codebook, residuals):
    """codebook ``(P, 256, k)``, residuals ``(T, P)`` uint8 -> decoded residuals ``(T, P*k)``."""
    residuals = torch.as_tensor(residuals).long()
    positions = torch.arange(codebook.shape[0])
    return codebook[positions, residuals].reshape(residuals.shape[0], codebook.shape[0] * codebook.shape[2])


def nearest_codewords(residual, codebook):
    """Product quantization: for residuals ``(T, P*k)`` the byte ``(T, P)`` uint8 whose
    codeword is nearest by squared L2 (ties -> lowest index)."""
    n_positions, _, per_byte = codebook.shape
    r = residual.reshape(residual.shape[0], n_positions, 1, per_byte)
    dist = ((r - codebook.unsqueeze(0)) ** 2).sum(dim=-1)                  # (T, P, 256)
    return dist.argmin(dim=-1).to(torch.uint8)  # argmin: the first minimum


def compress_residuals(emb, centroids, bucket_cutoffs, bucket_weights, nbits):
    """Reference of :func:`colbert_engine.ops.compress_residuals` (fp32 math).

    code = argmax_k <x, C_k> (first maximum), r = x - C[code]; with cutoffs, the bucket of
    dimension d = the count of cutoffs[d] strictly below r[d] (``torch.bucketize``
    right=False, as ColBERT), packed; without (``bucket_cutoffs`` None, a codebook given),
    each byte the nearest codeword (:func:`nearest_codewords`). inv_norm = 1/||C[code] +
    decoded residual|| in fp16 (0 for a zero vector). Tables pooled ``(n,)``, per dimension
    ``(dim, n)``, or a byte codebook ``(dim*nbits/8, 256, 8/nbits)``.
    """
    x = torch.as_tensor(emb).float()
    cents = torch.as_tensor(centroids).float()
    codebook = _as_codebook(bucket_weights, nbits, x.shape[1])
    codes = (x @ cents.T).argmax(dim=1) if x.shape[0] else torch.zeros(0, dtype=torch.int64)
    nearest = cents[codes]
    if bucket_cutoffs is None:
        packed = nearest_codewords(x - nearest, codebook)
    else:
        cutoffs = per_dim_table(bucket_cutoffs, x.shape[1])
        packed = _pack_buckets(((x - nearest).unsqueeze(-1) > cutoffs).sum(dim=-1), nbits)
    norms = torch.linalg.vector_norm(nearest + _decode_codebook(codebook, packed), dim=1)
    inv_norms = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms)).clamp(max=65504.0)
    return codes.to(torch.int32), packed, inv_norms.half()


def nearest_centroids_probed(emb, centroids, coarse, cell_of, nprobe):
    """Reference of :func:`colbert_engine.ops.codec.nearest_centroids_probed`.

    The ``nprobe`` cells of highest ``<x, coarse[c]>`` (ties -> lower cell, a stable
    sort), then the first maximum of ``<x, centroids[k]>`` over the centroids whose
    ``cell_of[k]`` is probed. int32 ``(T,)``.
    """
    x = torch.as_tensor(emb).float()
    cents = torch.as_tensor(centroids).float()
    coarse = torch.as_tensor(coarse).float()
    cell_of = torch.as_tensor(cell_of).long()
    nprobe = min(nprobe, coarse.shape[0])
    probes = torch.sort(x @ coarse.T, dim=1, descending=True, stable=True).indices[:, :nprobe]
    probed = torch.zeros(x.shape[0], coarse.shape[0], dtype=torch.bool).scatter_(1, probes, True)
    scores = (x @ cents.T).masked_fill(~probed[:, cell_of], float("-inf"))
    return scores.argmax(dim=1).to(torch.int32)


def accumulate_rows(x, codes, sums):
    """Reference of :func:`colbert_engine.ops.codec.accumulate_rows`: ``index_add_``."""
    return sums.index_add_(0, torch.as_tensor(codes).long(), torch.as_tensor(x).float())


def decompress_residuals(codes, residuals, centroids, bucket_weights, nbits, normalize=True,
                         out_dtype=torch.float32, *, inv_norms=None):
    """Reference of :func:`colbert_engine.ops.decompress_residuals`: C[code] + codebook[p, byte_p]
    (scalar tables expanded by :func:`byte_codebook`), scaled by the stored ``inv_norms`` when
    given, else L2-normalised (when ``normalize``)."""
    codes = torch.as_tensor(codes).long()
    cents = torch.as_tensor(centroids).float()
    codebook = _as_codebook(bucket_weights, nbits, cents.shape[1])
    x = cents[codes] + _decode_codebook(codebook, residuals)
    if normalize:
        if inv_norms is not None:
            x = x * torch.as_tensor(inv_norms).float().unsqueeze(1)
        else:
            x = torch.nn.functional.normalize(x, p=2, dim=-1)
    return x.to(out_dtype)


# --------------------------------------------------------------------------- lut_maxsim


def lut_maxsim(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, bucket_weights, nbits):
    """Reference of :func:`colbert_engine.ops.lut_maxsim`, densely:
    <q_i, x_t> = (S[c_t, i] + <q_i, codebook[p, byte_p]>) * inv_norm_t, then MaxSim."""
    queries = torch.as_tensor(queries)
    squeeze = queries.dim() == 2
    q = (queries.unsqueeze(0) if squeeze else queries).float()             # (nq, Lq, dim)
    s = torch.as_tensor(scores).float()
    s = s.unsqueeze(0) if squeeze else s                                   # (nq, K, Lq)
    codes = torch.as_tensor(codes).long()
    decoded = _decode_codebook(_as_codebook(bucket_weights, nbits, q.shape[2]), residuals)
    inv = torch.as_tensor(inv_norms).float()
    offsets = torch.as_tensor(doc_offsets).long()
    docs = [int(d) for d in torch.as_tensor(candidates)]
    out = torch.full((q.shape[0], len(docs)), float("-inf"), dtype=torch.float32)
    for col, d in enumerate(docs):
        begin, end = int(offsets[d]), int(offsets[d + 1])
        if end > begin:
            centroid_part = s[:, codes[begin:end], :].transpose(1, 2)     # (nq, Lq, len)
            sim = (centroid_part + q @ decoded[begin:end].T) * inv[begin:end]
            out[:, col] = sim.amax(dim=2).sum(dim=1)
    return out[0] if squeeze else out


def lut_maxsim_per_query(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, cand_offsets,
                         bucket_weights, nbits):
    """Reference of the per-query layout of ``lut_maxsim_launch`` (``cand_offsets``): query q
    scores ``candidates[cand_offsets[q]:cand_offsets[q + 1]]``; flat ``(cand_offsets[-1],)``."""
    bounds = [int(b) for b in torch.as_tensor(cand_offsets)]
    candidates = torch.as_tensor(candidates)
    out = torch.full((bounds[-1],), float("-inf"), dtype=torch.float32)
    for q in range(len(bounds) - 1):
        if bounds[q + 1] > bounds[q]:
            out[bounds[q]:bounds[q + 1]] = lut_maxsim(queries[q], scores[q], codes, residuals, inv_norms, doc_offsets,
                                                      candidates[bounds[q]:bounds[q + 1]], bucket_weights, nbits)
    return out


def topk_by_score(scores, ids, k):
    """Reference of :func:`colbert_engine.ops.maxsim.topk_by_score`: rows sorted by id, then
    stably by score descending, the first k."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), ids.gather(1, order)

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
