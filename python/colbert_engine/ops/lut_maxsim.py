"""Late interaction on compressed documents without decompressing them.

``<q_i, x> = (S[c, i] + sum_p LUT_i[p][byte_p]) * inv_norm`` with ``S = C @ q.T`` and
per-query lookup tables built from the queries and the byte codebook (PLAID's stage 4,
WARP's idea). Kernels: ``csrc/cpu/lut_maxsim.cpp`` (+ ``_avx2`` / ``_avx512`` builds) and
``csrc/cuda/lut_maxsim.cu``, contract in ``csrc/common/lut_maxsim.h``; reference:
:func:`colbert_engine.ops.reference.lut_maxsim`.
"""

from __future__ import annotations

import torch

from colbert_engine.ops import _validate as V
from colbert_engine.ops import codec as _codec
from colbert_engine.ops.plaid import device_guard, kernels_for

# Lookup tables take up to dim*nbits/8 * 256 * Lq fp32 per query (1 MiB at dim 128,
# nbits 2, Lq 32; the backend says how much); queries are scored in groups whose tables
# fit this workspace.
_LUT_WORKSPACE_BYTES = 1 << 26


def lut_maxsim(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, bucket_weights, nbits,
               *, out=None):
    """Exact-equivalent late-interaction scores of compressed candidate documents.

    ``score[q, m] = sum_i max_t <queries[q, i], x_t>`` over the tokens t of document
    ``candidates[m]``, x_t the decoded token ``(C[code] + codebook[p, byte_p]) * inv_norm``
    scaled by its *stored* fp16 inverse norm: equal, to float rounding, to
    ``maxsim(queries, decompress_residuals(..., inv_norms=inv_norms), doc_offsets)``. An
    empty document scores -inf.

    Args:
        queries: ``(Lq, dim)`` or ``(nq, Lq, dim)`` float32/float16/bfloat16.
        scores: centroid scores ``C @ q.T``: ``(K, Lq)`` for 2-D queries, ``(nq, K, Lq)``
            for 3-D (centroid-major, as ``ops.centroid_scores`` returns), float32.
        codes: ``(T,)`` int32 (int64 accepted) in ``[0, K)``.
        residuals: ``(T, dim * nbits / 8)`` uint8 (layout in :mod:`colbert_engine.ops.codec`).
        inv_norms: ``(T,)`` float16 stored inverse norms.
        doc_offsets: ``(n_docs + 1,)`` int64 over the packed tokens.
        candidates: ``(m,)`` int32/int64 document ids in ``[0, n_docs)``.
        bucket_weights: float32 ``(2^nbits,)`` pooled, ``(dim, 2^nbits)`` per dimension, or a
            byte codebook ``(dim * nbits / 8, 256, 8 / nbits)`` (:mod:`colbert_engine.ops.codec`).
        nbits: 1, 2 or 4.
        out: optional preallocated contiguous float32 output of the result's shape.

    Returns:
        float32 ``(m,)`` for 2-D queries, ``(nq, m)`` for 3-D. numpy in, numpy out.
    """
    return_numpy = not isinstance(queries, torch.Tensor) and not isinstance(residuals, torch.Tensor)
    queries = V.as_tensor(queries, "queries")
    device = queries.device
    V.check_device_supported(device, "queries")
    V.check_dtype(queries, "queries", V.FLOAT_DTYPES)
    V.check_ndim(queries, "queries", (2, 3))
    squeeze = queries.dim() == 2
    scores = V.as_tensor(scores, "scores")
    V.check_same_device(device, scores=scores)
    V.check_dtype(scores, "scores", V.FLOAT_DTYPES)
    V.check_ndim(scores, "scores", (2,) if squeeze else (3,))
    if squeeze:
        queries, scores = queries.unsqueeze(0), scores.unsqueeze(0)
    n_queries, query_len, dim = queries.shape
    if query_len == 0:
        raise ValueError(f"queries: needs at least one query token, got shape {tuple(queries.shape)}")
    if scores.shape[0] != n_queries or scores.shape[2] != query_len:
        raise ValueError(f"scores: expected shape (nq, K, Lq) = ({n_queries}, K, {query_len}) "
                         f"(centroid-major C @ q.T), got {tuple(scores.shape)}")
    n_centroids = scores.shape[1]
    nbits = _codec.check_nbits(nbits, dim)
    residuals = _codec.check_residuals(residuals, dim, nbits, device)
    n_tokens = residuals.shape[0]
    codes = _codec.check_codes(codes, n_tokens, n_centroids, device)
    inv_norms = _codec.check_inv_norms(inv_norms, n_tokens, device)
    doc_offsets = V.as_tensor(doc_offsets, "doc_offsets")
    V.check_same_device(device, doc_offsets=doc_offsets)
    doc_offsets = V.check_offsets(doc_offsets, "doc_offsets", n_tokens)
    n_docs = doc_offsets.numel() - 1
    candidates = V.as_tensor(candidates, "candidates")
    V.check_same_device(device, candidates=candidates)
    candidates = V.check_index_range(candidates, "candidates", n_docs)
    codebook = _codec.decode_codebook(bucket_weights, nbits, dim, device)
    V.check_finite(queries, "queries")
    V.check_finite(scores, "scores")

    shape = (n_queries, candidates.numel())
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=device)
    else:
        want = shape[1:] if squeeze else shape
        if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or tuple(out.shape) != want \
                or out.device != device or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous float32 tensor of shape {want} on {device}")
        out = out.view(shape)
    lut_maxsim_launch(queries.to(torch.float32).contiguous(), scores.to(torch.float32).contiguous(), codes,
                      residuals, inv_norms, doc_offsets, candidates, codebook, nbits, out)
    result = out[0] if squeeze else out
    return result.numpy() if return_numpy else result


def lut_maxsim_launch(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, codebook,
                      nbits, out, *, cand_offsets=None, host_offsets=None, backend=None) -> None:
    """Unchecked launch for callers that already validated (the index's search path).

    queries fp32 ``(nq, Lq, dim)``, scores fp32 ``(nq, K, Lq)``, codes int32 ``(T,)``,
    residuals uint8 ``(T, dim*nbits/8)``, inv_norms fp16 ``(T,)``, doc_offsets int64,
    candidates int64, codebook fp32 ``(dim*nbits/8, 256, 8/nbits)`` (the codec's byte
    codebook, :attr:`colbert_engine.index.codec.Codec.byte_codebook`, built once per codec);
    all contiguous and on one device.

    - ``cand_offsets`` None: every query scores every candidate (``(m,)``) into out fp32
      ``(nq, m)``.
    - ``cand_offsets`` int64 ``(nq + 1,)`` on the device with ``host_offsets``, the same
      values as a host sequence (the CUDA path knows them without reading the device): query
      q scores ``candidates[cand_offsets[q]:cand_offsets[q + 1]]`` into the same positions of
      a flat out ``(cand_offsets[nq],)``; one call for a batch whose queries have their own
      survivors.

    Allocates the lookup-table workspace itself and scores the queries in groups whose
    tables fit it (one native call per group: usually one per batch).
    """
    n_queries, query_len, dim = queries.shape
    if out.numel() == 0:
        return
    device = queries.device
    module = kernels_for(device, backend)
    if hasattr(module, "lut_workspace_floats"):
        per_query = module.lut_workspace_floats(dim=dim, nbits=nbits, query_len=query_len)
    else:  # a backend whose tables are one per residual byte, unpadded
        per_query = dim * nbits // 8 * 256 * query_len
    group = max(1, min(n_queries, _LUT_WORKSPACE_BYTES // (4 * per_query)))
    lut = torch.empty(group, per_query, dtype=torch.float32, device=device)
    on_cuda = (backend or device.type) == "cuda"
    for start in range(0, n_queries, group):
        stop = min(n_queries, start + group)
        if cand_offsets is None:
            out_ptr, offsets_ptr, n_pairs = out[start:stop].data_ptr(), 0, candidates.numel()
        else:
            n_pairs = int(host_offsets[stop]) - int(host_offsets[start])
            if n_pairs == 0:
                continue
            # Positions are absolute: the group passes its slice of the offsets, the whole out.
            out_ptr, offsets_ptr = out.data_ptr(), cand_offsets[start:].data_ptr()
        kwargs = dict(queries=queries[start:stop].data_ptr(), scores=scores[start:stop].data_ptr(),
                      codes=codes.data_ptr(), residuals=residuals.data_ptr(), inv_norms=inv_norms.data_ptr(),
                      doc_offsets=doc_offsets.data_ptr(), candidates=candidates.data_ptr(),
                      cand_offsets=offsets_ptr, codebook=codebook.data_ptr(), lut=lut.data_ptr(),
                      out=out_ptr, n_queries=stop - start, query_len=query_len, dim=dim,
                      n_centroids=scores.shape[1], n_tokens=codes.numel(), n_docs=doc_offsets.numel() - 1,
                      n_candidates=n_pairs, nbits=nbits)
        if on_cuda:
            with device_guard(device):
                module.lut_maxsim(**kwargs, stream=V.stream_of(device))
        else:
            module.lut_maxsim(**kwargs)
