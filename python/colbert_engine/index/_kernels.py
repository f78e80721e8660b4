"""The ops the index and search call, by their fixed contracts.

Each name resolves to :mod:`colbert_engine.ops` when that op is present (C++ / CUDA
kernels). Until a kernel family lands on this branch, a private plain-torch stand-in with
the same contract is used instead; the stand-ins live here only and go away once the ops
exist (``USING_FALLBACK`` lists which are in use).
"""

from __future__ import annotations

import numpy as np
import torch

from colbert_engine import ops

USING_FALLBACK: list[str] = []


def _pick(name, fallback):
    op = getattr(ops, name, None)
    if op is None:
        USING_FALLBACK.append(name)
        return fallback
    return op


def _assign_codes(emb: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 14) -> torch.Tensor:
    codes = torch.empty(emb.shape[0], dtype=torch.int32, device=emb.device)
    for start in range(0, emb.shape[0], chunk):
        block = emb[start:start + chunk].float()
        codes[start:start + chunk] = (block @ centroids.T).argmax(dim=1).to(torch.int32)
    return codes


def _pack_buckets(buckets: torch.Tensor, nbits: int) -> torch.Tensor:
    # per dimension the bucket's nbits bits, least significant first; bytes MSB first
    shifts = torch.arange(nbits, device=buckets.device, dtype=torch.uint8)
    bits = (buckets.unsqueeze(-1) >> shifts) & 1  # (T, dim, nbits)
    packed = np.packbits(bits.reshape(buckets.shape[0], -1).cpu().numpy(), axis=1)
    return torch.from_numpy(packed).to(buckets.device)


def _unpack_buckets(residuals: torch.Tensor, dim: int, nbits: int) -> torch.Tensor:
    bits = np.unpackbits(residuals.cpu().numpy(), axis=1).reshape(residuals.shape[0], dim, nbits)
    weights = (1 << np.arange(nbits, dtype=np.int64))
    return torch.from_numpy((bits.astype(np.int64) * weights).sum(-1)).to(residuals.device)


def _compress_residuals(emb, centroids, bucket_cutoffs, bucket_weights, nbits):
    emb = torch.as_tensor(emb)
    centroids = centroids.float()
    codes = _assign_codes(emb, centroids)
    residual = emb.float() - centroids[codes.long()]
    buckets = torch.bucketize(residual, bucket_cutoffs.float()).to(torch.uint8)
    approx = centroids[codes.long()] + bucket_weights.float()[buckets.long()]
    inv_norms = (1.0 / approx.norm(dim=1).clamp_min(1e-12)).to(torch.float16)
    return codes, _pack_buckets(buckets, nbits), inv_norms


def _decompress_residuals(codes, residuals, centroids, bucket_weights, nbits, normalize=True,
                          out_dtype=torch.float32):
    dim = centroids.shape[1]
    buckets = _unpack_buckets(residuals, dim, nbits)
    out = centroids.float()[codes.long()] + bucket_weights.float()[buckets]
    if normalize:
        out = torch.nn.functional.normalize(out, dim=1)
    return out.to(out_dtype)


def _centroid_scores(queries, centroids):
    q = queries.float()
    if q.dim() == 2:
        return centroids.float() @ q.T
    return torch.einsum("kd,nld->nkl", centroids.float(), q).contiguous()


def _candidates_one(scores, ivf, ivf_offsets, nprobe, n_docs, subset):
    cells = scores.topk(min(nprobe, scores.shape[0]), dim=0).indices.flatten().unique()
    begins, ends = ivf_offsets[cells].long(), ivf_offsets[cells + 1].long()
    lengths = ends - begins
    if int(lengths.sum()) == 0:
        return torch.empty(0, dtype=torch.int32, device=scores.device)
    starts = torch.repeat_interleave(begins - torch.cumsum(lengths, 0) + lengths, lengths)
    positions = starts + torch.arange(int(lengths.sum()), device=scores.device)
    seen = torch.zeros(n_docs, dtype=torch.bool, device=scores.device)
    seen[ivf[positions].long()] = True
    if subset is not None:
        seen &= subset
    return seen.nonzero().flatten().to(torch.int32)


def _candidates(scores, ivf, ivf_offsets, nprobe, n_docs, subset=None):
    ivf, ivf_offsets = torch.as_tensor(ivf), torch.as_tensor(ivf_offsets)
    if scores.dim() == 3:
        return [_candidates_one(s, ivf, ivf_offsets, nprobe, n_docs, subset) for s in scores]
    return _candidates_one(scores, ivf, ivf_offsets, nprobe, n_docs, subset)


def _centroid_interaction(scores, doc_codes, doc_offsets, candidates, ndocs, threshold=None):
    device = scores.device
    candidates = candidates.long()
    if candidates.numel() == 0:
        return torch.empty(0, dtype=torch.float32, device=device), torch.empty(0, dtype=torch.int32, device=device)
    scores = scores.float()
    if threshold is not None:
        keep = scores.amax(dim=1) >= threshold
        scores = torch.where(keep.unsqueeze(1), scores, torch.zeros((), device=device))
    begins, ends = doc_offsets[candidates].long(), doc_offsets[candidates + 1].long()
    lengths = ends - begins
    starts = torch.repeat_interleave(begins - torch.cumsum(lengths, 0) + lengths, lengths)
    positions = starts + torch.arange(int(lengths.sum()), device=device)
    token_scores = scores[torch.as_tensor(doc_codes)[positions].long()]  # (tokens, Lq)
    owner = torch.repeat_interleave(torch.arange(candidates.numel(), device=device), lengths)
    per_doc = torch.full((candidates.numel(), scores.shape[1]), float("-inf"), device=device)
    per_doc.scatter_reduce_(0, owner.unsqueeze(1).expand_as(token_scores), token_scores, "amax")
    approx = per_doc.sum(dim=1)
    top = approx.topk(min(ndocs, approx.numel()))
    return top.values, candidates[top.indices].to(torch.int32)


def _lut_maxsim(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, bucket_weights, nbits):
    # <q, x> = (S[code, i] + <q_i, w[buckets]>) * inv_norm: the LUT identity, written densely.
    device = scores.device
    candidates = candidates.long()
    out = torch.full((candidates.numel(),), float("-inf"), device=device)
    if candidates.numel() == 0:
        return out
    begins, ends = doc_offsets[candidates].long(), doc_offsets[candidates + 1].long()
    lengths = ends - begins
    starts = torch.repeat_interleave(begins - torch.cumsum(lengths, 0) + lengths, lengths)
    positions = starts + torch.arange(int(lengths.sum()), device=device)
    dim = queries.shape[-1]
    weights = bucket_weights.float()[_unpack_buckets(residuals[positions], dim, nbits)]  # (tokens, dim)
    token_scores = (scores.float()[codes[positions].long()] + weights @ queries.float().T)
    token_scores *= inv_norms[positions].float().unsqueeze(1)
    owner = torch.repeat_interleave(torch.arange(candidates.numel(), device=device), lengths)
    per_doc = torch.full((candidates.numel(), scores.shape[1]), float("-inf"), device=device)
    per_doc.scatter_reduce_(0, owner.unsqueeze(1).expand_as(token_scores), token_scores, "amax")
    return per_doc.sum(dim=1)


compress_residuals = _pick("compress_residuals", _compress_residuals)
decompress_residuals = _pick("decompress_residuals", _decompress_residuals)
centroid_scores = _pick("centroid_scores", _centroid_scores)
candidates = _pick("candidates", _candidates)
centroid_interaction = _pick("centroid_interaction", _centroid_interaction)
lut_maxsim = _pick("lut_maxsim", _lut_maxsim)
maxsim = ops.maxsim
