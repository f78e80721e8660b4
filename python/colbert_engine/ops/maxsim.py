"""Fused late-interaction (MaxSim) scoring over packed variable-length documents.

Kernels: ``csrc/cpu/maxsim.cpp`` (+ ``maxsim_avx2.cpp``, ``maxsim_avx512.cpp``, chosen at run
time) and ``csrc/cuda/maxsim.cu`` (contract in ``csrc/common/maxsim.h``); references:
:func:`colbert_engine.ops.reference.maxsim` and :func:`colbert_engine.ops.reference.maxsim_topk`.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch

from colbert_engine import _native
from colbert_engine.ops import _validate as V

# ce::kMaxSimNonFinite (csrc/common/maxsim.h): a similarity came out NaN or infinite.
_NON_FINITE = 1
# ce::kMaxSimBadInput: the device-side argument checks failed (CUDA status word).
_BAD_INPUT = 2
# Documents scored per CUDA call in maxsim_topk (bounds the (nq, chunk) score buffer).
_CUDA_TOPK_CHUNK = 1 << 16


def _prepare(queries, doc_emb, doc_offsets, doc_subset):
    """Shared checks of maxsim and maxsim_topk. Returns (queries fp32 (nq, Lq, dim)
    contiguous, doc_emb contiguous, doc_offsets int64, doc_subset int64 or None, squeeze,
    return_numpy, status).

    On CPU every value check runs here (it costs no synchronisation) and status is None.
    On CUDA the shape/dtype checks run here and the value checks (offsets, subset range,
    finite queries) are computed on the device into ``status``, a (1,) int32 status word
    that the kernel reads before touching anything (csrc/common/maxsim.h); the op reads it
    once after the launch (:func:`_check_status`), its only host synchronisation."""
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
    if queries.shape[2] == 0:  # the CUDA kernels reject dim 0; keep both devices alike
        raise ValueError(f"queries: needs dim >= 1, got shape {tuple(queries.shape)}")
    if device.type == "cuda" and queries.shape[1] > 512:
        raise ValueError(f"queries: at most 512 query tokens on CUDA, got {queries.shape[1]}")
    if doc_subset is not None:
        doc_subset = V.as_tensor(doc_subset, "doc_subset")
        V.check_same_device(device, doc_subset=doc_subset)
    status = None
    queries = queries.to(torch.float32).contiguous()
    if device.type == "cuda":
        doc_offsets = V.offsets_tensor(doc_offsets, "doc_offsets")
        if doc_subset is not None:
            doc_subset = V.index_tensor(doc_subset, "doc_subset")
        status = _device_checks(queries, doc_offsets, doc_subset, doc_emb.shape[0])
    else:
        # On CPU the kernels detect NaN/inf in the documents they score on the fly (see
        # csrc/cpu/maxsim_impl.h): a separate pass over doc_emb would cost more than scoring.
        V.check_finite(queries, "queries")
        doc_offsets = V.check_offsets(doc_offsets, "doc_offsets", doc_emb.shape[0])
        if doc_subset is not None:
            doc_subset = V.check_index_range(doc_subset, "doc_subset", doc_offsets.numel() - 1)
    return queries, doc_emb.contiguous(), doc_offsets, doc_subset, squeeze, return_numpy, status


def _device_checks(queries, doc_offsets, doc_subset, n_rows):
    """The value checks of :func:`_prepare` in one CUDA launch (no synchronisation): a (1,)
    int32 status word, ce::kMaxSimBadInput when an argument is invalid, else 0. ``queries``
    is fp32 contiguous."""
    status = torch.empty(1, dtype=torch.int32, device=queries.device)
    with torch.cuda.device(queries.device):
        _native.cuda().maxsim_check(
            queries=queries.data_ptr(), doc_offsets=doc_offsets.data_ptr(),
            doc_subset=0 if doc_subset is None else doc_subset.data_ptr(),
            n_queries=queries.shape[0], query_len=queries.shape[1], dim=queries.shape[2],
            n_docs=doc_offsets.numel() - 1, n_subset=0 if doc_subset is None else doc_subset.numel(),
            n_rows=n_rows, status=status.data_ptr(), stream=V.stream_of(queries.device))
    return status


def _check_status(status, queries, doc_emb, doc_offsets, doc_subset) -> None:
    """Reads the CUDA status word once; on a failure reruns the host-side checks to raise
    the error naming the argument."""
    if status is None:
        return
    code = int(status.item())
    if code & _BAD_INPUT:
        V.check_finite(queries, "queries")
        V.check_offsets(doc_offsets, "doc_offsets", doc_emb.shape[0])
        if doc_subset is not None:
            V.check_index_range(doc_subset, "doc_subset", doc_offsets.numel() - 1)
        # reached only if the device check and the host checks disagree (a bug): still refuse
        raise RuntimeError("maxsim: the device-side check flagged the arguments but the host-side checks "
                           "found nothing to name (please report this)")
    if code & _NON_FINITE:
        _raise_non_finite()


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _check_topk_memory(nq: int, k: int, n_out: int) -> None:
    """MemoryError naming k when the CPU top-k cannot fit in this machine's memory: its
    outputs (12 bytes per hit) plus per-thread heaps and their merge (2 * 16 bytes per hit
    per thread). Caught here, before anything is allocated, rather than by an allocation
    that the kernel (or the OS, after overcommitting) fails half-way."""
    threads = _native.cpu().max_threads()
    need = nq * k * (12 + 32 * threads)
    available = _physical_memory_bytes()
    if available is not None and need > available:
        raise MemoryError(
            f"k: the {k} best of {n_out} documents for {nq} queries need about {need / 2**30:.1f} GiB "
            f"(nq * k * (12 + 32 * {threads} threads) bytes), more than this machine's "
            f"{available / 2**30:.1f} GiB; ask for a smaller k or fewer queries per call")


def _check_scores_memory(shape, device) -> None:
    """MemoryError when the (nq, n_out) float32 scores cannot fit in this machine's memory."""
    need = 4 * shape[0] * shape[1]
    available = _physical_memory_bytes() if device.type == "cpu" else None
    if available is not None and need > available:
        raise MemoryError(
            f"queries, doc_offsets: the {shape[0]} x {shape[1]} float32 scores need about "
            f"{need / 2**30:.1f} GiB, more than this machine's {available / 2**30:.1f} GiB; "
            f"use maxsim_topk, a doc_subset, or fewer queries per call")


def _raise_non_finite() -> None:
    raise ValueError("doc_emb: contains NaN or infinite values (in the documents scored), "
                     "or a similarity overflows float32")


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

    Raises:
        ValueError / TypeError naming the argument. NaN or inf in doc_emb is reported for
        the documents scored (on CPU it is detected while scoring; ``out`` is then garbage).
        MemoryError when the scores cannot fit in the machine's memory (CPU).
    """
    queries, doc_emb, doc_offsets, doc_subset, squeeze, return_numpy, status = _prepare(
        queries, doc_emb, doc_offsets, doc_subset)
    device = doc_emb.device
    n_docs = doc_offsets.numel() - 1
    n_out = n_docs if doc_subset is None else doc_subset.numel()
    shape = (queries.shape[0], n_out)
    if out is None:
        _check_scores_memory(shape, device)
        out = torch.empty(shape, dtype=torch.float32, device=device)
    else:
        if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or tuple(out.shape) != shape \
                or out.device != device or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous float32 tensor of shape {shape} on {device}")
    maxsim_launch(queries, doc_emb, doc_offsets, doc_subset, out, status=status)
    _check_status(status, queries, doc_emb, doc_offsets, doc_subset)
    result = out[0] if squeeze else out
    return result.numpy() if return_numpy else result


def maxsim_launch(queries, doc_emb, doc_offsets, doc_subset, out, *, status=None) -> None:
    """Unchecked launch for callers that already validated (the index's search path).

    queries fp32 ``(nq, Lq, dim)``, doc_emb ``(T, dim)``, doc_offsets int64, doc_subset
    int64 or None, out fp32 ``(nq, n_out)``; all contiguous and on one device. On CPU a NaN
    or inf met in a scored document still raises ValueError (the check is free there). On
    CUDA ``status`` is an optional (1,) int32 device status word (see :func:`_prepare`).
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
            _native.cuda().maxsim(*args, stream=V.stream_of(doc_emb.device),
                                  status=0 if status is None else status.data_ptr())
    elif _native.cpu().maxsim(*args) == _NON_FINITE:
        _raise_non_finite()


def maxsim_topk(queries, doc_emb, doc_offsets, k, *, doc_subset=None):
    """The k best documents per query by late-interaction score, best first.

    Same scoring as :func:`maxsim`, without materialising the ``(nq, n_docs)`` scores on
    CPU (per-thread bounded heaps merged at the end; memory O(threads * nq * k)). On CUDA
    the documents are scored in chunks of 65,536 and a running top-k is kept.

    Order and ties: higher score first; equal scores by lower document id. Empty documents
    (-inf) are never returned: when fewer than k' documents are non-empty, the remaining
    slots hold index -1 and score -inf.

    Args:
        queries: ``(nq, Lq, dim)`` or ``(Lq, dim)`` float32/float16/bfloat16.
        doc_emb: ``(T, dim)`` float32/float16/bfloat16, packed documents.
        doc_offsets: ``(n_docs + 1,)`` int64 offsets into doc_emb.
        k: number of documents to keep, a positive int; ``k' = min(k, n_out)`` are returned.
        doc_subset: optional ``(m,)`` integer document ids to consider (rerank candidates);
            the returned indices are document ids (entries of doc_subset), and an id repeated
            in doc_subset may come back repeatedly.

    Returns:
        ``(scores, indices)``: float32 ``(nq, k')`` and int64 ``(nq, k')`` (``(k',)`` each
        for 2-D queries), on the inputs' device. numpy in, numpy out.

    Raises:
        ValueError / TypeError naming the argument, as :func:`maxsim`. MemoryError naming k
        when the outputs and per-thread heaps cannot fit in the machine's memory (CPU); an
        allocation the kernel cannot make is also MemoryError, never an abort.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    k = int(k)
    queries, doc_emb, doc_offsets, doc_subset, squeeze, return_numpy, status = _prepare(
        queries, doc_emb, doc_offsets, doc_subset)
    device = doc_emb.device
    n_docs = doc_offsets.numel() - 1
    n_out = n_docs if doc_subset is None else doc_subset.numel()
    nq = queries.shape[0]
    k_out = min(k, n_out)
    if device.type == "cpu":
        _check_topk_memory(nq, k_out, n_out)
    top_scores = torch.empty((nq, k_out), dtype=torch.float32, device=device)
    top_indices = torch.empty((nq, k_out), dtype=torch.int64, device=device)
    if nq and k_out:
        if device.type == "cuda":
            _cuda_topk(queries, doc_emb, doc_offsets, doc_subset, k_out, top_scores, top_indices, status)
        else:
            cpu_status = _native.cpu().maxsim_topk(
                queries.data_ptr(), doc_emb.data_ptr(), doc_offsets.data_ptr(),
                0 if doc_subset is None else doc_subset.data_ptr(),
                nq, queries.shape[1], queries.shape[2], n_docs,
                0 if doc_subset is None else doc_subset.numel(), V.DTYPE_CODE[doc_emb.dtype],
                k_out, top_scores.data_ptr(), top_indices.data_ptr())
            if cpu_status == _NON_FINITE:
                _raise_non_finite()
    _check_status(status, queries, doc_emb, doc_offsets, doc_subset)
    if squeeze:
        top_scores, top_indices = top_scores[0], top_indices[0]
    if return_numpy:
        return top_scores.numpy(), top_indices.numpy()
    return top_scores, top_indices


# Rows up to this wide (or 4k for k > 256) are sorted whole on the host; wider ones are
# narrowed by topk first.
_HOST_SORT_WIDTH = 1024


def topk_by_score(scores, ids, k: int):
    """The best ``k`` entries of every row by (score descending, id ascending): the one
    tie-ordering rule of the library's results (the C++ kernels apply the same order).

    ``scores`` float ``(n, m)`` and ``ids`` int64 ``(n, m)`` (or 1-D, one row); returns
    ``(scores, ids)`` of ``(n, min(k, m))``, best first, on the same device. A row's entries
    that tie with its k-th best are all considered, so the result does not depend on how the
    row was assembled. On the CPU: one lexicographic sort of each row by numpy (wide rows
    first narrowed by ``topk`` to the entries >= the k-th best); a dozen torch ops on a
    single query's row cost ~0.1 ms, a tenth of its search. On CUDA two stable sorts of the
    whole rows (no host synchronisation).
    """
    squeeze = scores.dim() == 1
    if squeeze:
        scores, ids = scores.unsqueeze(0), ids.unsqueeze(0)
    keep = min(k, scores.shape[1])
    if scores.device.type == "cuda":
        by_id = torch.argsort(ids, dim=1, stable=True)
        scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
        scores, ids = scores.gather(1, order), ids.gather(1, order)
    else:
        if scores.shape[1] > max(_HOST_SORT_WIDTH, 4 * keep):
            # Everything >= the k-th best score: the topk of the widest row's count of such entries.
            kth = scores.topk(keep, dim=1).values[:, -1:]
            width = int((scores >= kth).sum(dim=1).max())
            top = scores.topk(width, dim=1)
            scores, ids = top.values, ids.gather(1, top.indices)
        host_scores, host_ids = scores.numpy(), ids.numpy()
        order = np.lexsort((host_ids, -host_scores), axis=-1)[:, :keep]  # last key first: -score, then id
        scores = torch.from_numpy(np.take_along_axis(host_scores, order, axis=1))
        ids = torch.from_numpy(np.take_along_axis(host_ids, order, axis=1))
    return (scores[0], ids[0]) if squeeze else (scores, ids)


def _cuda_topk(queries, doc_emb, doc_offsets, doc_subset, k, top_scores, top_indices, status=None):
    """Chunks of documents through the CUDA maxsim kernel, merged into a running top-k."""
    device = doc_emb.device
    n_docs = doc_offsets.numel() - 1
    ids_all = doc_subset if doc_subset is not None else torch.arange(n_docs, device=device)
    nq = queries.shape[0]
    best_scores = torch.empty((nq, 0), dtype=torch.float32, device=device)
    best_ids = torch.empty((nq, 0), dtype=torch.int64, device=device)
    for start in range(0, ids_all.numel(), _CUDA_TOPK_CHUNK):
        chunk = ids_all[start:start + _CUDA_TOPK_CHUNK].contiguous()
        scores = torch.empty((nq, chunk.numel()), dtype=torch.float32, device=device)
        maxsim_launch(queries, doc_emb, doc_offsets, chunk, scores, status=status)
        best_scores, best_ids = topk_by_score(torch.cat([best_scores, scores], dim=1),
                                              torch.cat([best_ids, chunk.to(torch.int64).expand(nq, -1)], dim=1), k)
    best_ids = torch.where(torch.isneginf(best_scores), torch.full_like(best_ids, -1), best_ids)
    top_scores.copy_(best_scores)
    top_indices.copy_(best_ids)
