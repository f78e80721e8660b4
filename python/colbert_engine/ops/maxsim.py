"""Fused late-interaction (MaxSim) scoring over packed variable-length documents.

Kernels: ``csrc/cpu/maxsim.cpp`` and ``csrc/cuda/maxsim.cu`` (contract in
``csrc/common/maxsim.h``); reference: :func:`colbert_engine.ops.reference.maxsim`.
"""

from __future__ import annotations

import torch

from colbert_engine import _native
from colbert_engine.ops import _validate as V


def maxsim(queries, doc_emb, doc_offsets, *, doc_subset=None, out=None):
    """Late-interaction scores of every query against every (or a subset of) document.

    ``score[q, d] = sum_i max_j <queries[q, i], doc_emb[j]>`` over document d's tokens,
    the max starting at -inf: an empty document scores -inf.

    Args:
        queries: ``(nq, Lq, dim)`` or ``(Lq, dim)`` float32/float16/bfloat16 (computed in fp32;
            on CUDA with float16/bfloat16 documents the queries are rounded to the documents'
            dtype for the tensor-core products, which accumulate in fp32).
        doc_emb: ``(T, dim)`` float32/float16/bfloat16, all documents' tokens back to back.
        doc_offsets: ``(n_docs + 1,)`` int64, ``doc_offsets[0] == 0``, non-decreasing,
            ``doc_offsets[-1] == T``.
        doc_subset: optional ``(m,)`` integer document indices to score (reranking
            candidates from another system); the output then has m columns in that order.
        out: optional preallocated float32 output of the result's shape.

    Returns:
        float32 ``(nq, n_docs)`` (or ``(nq, m)`` with ``doc_subset``; ``(n_docs,)`` /
        ``(m,)`` for 2-D queries), on the inputs' device. numpy in, numpy out.
    """
    return_numpy = not isinstance(queries, torch.Tensor) and not isinstance(doc_emb, torch.Tensor)
    queries = V.as_tensor(queries, "queries")
    doc_emb = V.as_tensor(doc_emb, "doc_emb")
    doc_offsets = V.as_tensor(doc_offsets, "doc_offsets")
    device = doc_emb.device
    V.check_device_supported(device, "doc_emb")
    V.check_same_device(device, queries=queries, doc_offsets=doc_offsets)
    V.check_dtype(queries, "queries", V.FLOAT_DTYPES)
    V.check_dtype(doc_emb, "doc_emb", V.FLOAT_DTYPES)
    V.check_ndim(queries, "queries", (2, 3))
    V.check_ndim(doc_emb, "doc_emb", (2,))
    squeeze = queries.dim() == 2
    if squeeze:
        queries = queries.unsqueeze(0)
    V.check_size(queries, "queries", 2, doc_emb.shape[1], "doc_emb's dim")
    if queries.shape[1] == 0:
        raise ValueError(f"queries: needs at least one query token, got shape {tuple(queries.shape)}")
    if device.type == "cuda" and queries.shape[1] > 512:
        raise ValueError(f"queries: at most 512 query tokens on CUDA, got {queries.shape[1]}")
    V.check_finite(queries, "queries")
    V.check_finite(doc_emb, "doc_emb")
    doc_offsets = V.check_offsets(doc_offsets, "doc_offsets", doc_emb.shape[0])
    n_docs = doc_offsets.numel() - 1
    if doc_subset is not None:
        doc_subset = V.check_index_range(V.as_tensor(doc_subset, "doc_subset"), "doc_subset", n_docs)
        V.check_same_device(device, doc_subset=doc_subset)
    n_out = n_docs if doc_subset is None else doc_subset.numel()
    shape = (queries.shape[0], n_out)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=device)
    else:
        if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or tuple(out.shape) != shape \
                or out.device != device or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous float32 tensor of shape {shape} on {device}")
    maxsim_launch(queries.to(torch.float32).contiguous(), doc_emb.contiguous(), doc_offsets, doc_subset, out)
    result = out[0] if squeeze else out
    return result.numpy() if return_numpy else result


def maxsim_launch(queries, doc_emb, doc_offsets, doc_subset, out) -> None:
    """Unchecked launch for callers that already validated (the index's search path).

    queries fp32 ``(nq, Lq, dim)``, doc_emb ``(T, dim)``, doc_offsets int64, doc_subset
    int64 or None, out fp32 ``(nq, n_out)``; all contiguous and on one device.
    """
    n_docs = doc_offsets.numel() - 1
    args = (
        queries.data_ptr(), doc_emb.data_ptr(), doc_offsets.data_ptr(),
        0 if doc_subset is None else doc_subset.data_ptr(), out.data_ptr(),
        queries.shape[0], queries.shape[1], queries.shape[2], n_docs,
        0 if doc_subset is None else doc_subset.numel(), V.DTYPE_CODE[doc_emb.dtype],
    )
    if out.numel() == 0:
        return
    if doc_emb.device.type == "cuda":
        with torch.cuda.device(doc_emb.device):
            _native.cuda().maxsim(*args, V.stream_of(doc_emb.device))
    else:
        _native.cpu().maxsim(*args)
