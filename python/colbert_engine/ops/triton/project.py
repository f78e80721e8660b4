"""Triton kernel of :func:`colbert_engine.ops.project`: token projection hidden -> dim, L2
normalisation and the packing of kept tokens, in one pass over the hidden states.

One program handles ``BLOCK_M`` output rows. Row r of the output reads token
``rows[r]`` (a flat ``b * L + l`` index, so masked-out tokens are never read), accumulates
``x @ W[:dim].T`` in fp32 over ``BLOCK_K`` slices of the hidden size, adds the bias,
divides by ``max(||y||, 1e-12)`` and stores in the output dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _project_kernel(
    x_ptr,            # [B, L, H] any strides
    rows_ptr,         # [n_rows] int64 flat token indices (only read when HAS_ROWS)
    w_ptr,            # [>=D, H] same dtype as x
    b_ptr,            # [>=D] (only read when HAS_BIAS)
    out_ptr,          # [n_rows, D] contiguous
    n_rows, L, H, D,
    stride_xb, stride_xl, stride_xh,
    stride_wd, stride_wh,
    HAS_ROWS: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < n_rows
    if HAS_ROWS:
        tokens = tl.load(rows_ptr + offs_m, mask=m_ok, other=0).to(tl.int64)
    else:
        tokens = offs_m.to(tl.int64)
    x_rows = x_ptr + (tokens // L) * stride_xb + (tokens % L) * stride_xl
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < H
        x = tl.load(x_rows[:, None] + offs_k[None, :] * stride_xh,
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + offs_d[None, :] * stride_wd + offs_k[:, None] * stride_wh,
                    mask=d_ok[None, :] & k_ok[:, None], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=INPUT_PRECISION)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    norm = tl.sqrt(tl.sum(acc * acc, axis=1))
    acc = acc / tl.maximum(norm, 1e-12)[:, None]
    out_ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


def launch(hidden, rows, weight, bias, out, dim: int) -> None:
    """hidden ``(B, L, H)``; rows ``(n,)`` int64 or None (all B*L tokens); weight
    ``(>=dim, H)`` in hidden's dtype; bias ``(>=dim,)`` or None; out ``(n, dim)`` contiguous."""
    n_rows = out.shape[0]
    if n_rows == 0:
        return
    B, L, H = hidden.shape
    block_d = max(16, triton.next_power_of_2(dim))
    block_m = 64
    block_k = 64 if block_d <= 128 else 32
    precision = "ieee" if hidden.dtype.is_floating_point and hidden.element_size() == 4 else "tf32"
    grid = (triton.cdiv(n_rows, block_m),)
    _project_kernel[grid](
        hidden, rows if rows is not None else out, weight, bias if bias is not None else weight, out,
        n_rows, L, H, dim,
        hidden.stride(0), hidden.stride(1), hidden.stride(2),
        weight.stride(0), weight.stride(1),
        HAS_ROWS=rows is not None, HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_D=block_d, BLOCK_K=block_k, INPUT_PRECISION=precision,
        num_warps=4,
    )
