"""Token projection of the ColBERT head, fused: linear hidden -> dim, L2 normalisation per
token, and the drop of masked tokens into the packed layout (DESIGN.md section 1).

Backends: the Triton kernel in ``ops/triton/project.py`` when the input is on CUDA (and
Triton is installed) or when ``TRITON_INTERPRET=1`` is set (the interpreter, on CPU, for
tests); a torch fallback otherwise. ``project.last_backend`` says which ran last
(``"triton"`` or ``"torch"``); :func:`project_backend` says which would run.
Reference: :func:`colbert_engine.ops.reference.project`.
"""

from __future__ import annotations

import numbers
import os
import warnings

import torch

from colbert_engine.ops import _validate as V

_MAX_TRITON_DIM = 256


def _kernels():
    from colbert_engine.ops.triton import project as kernels

    return kernels


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_active() -> bool:
    """True when Triton kernels run in its interpreter (CPU). ``triton.jit`` reads
    TRITON_INTERPRET when a kernel is decorated, so it must be set before triton is first
    imported; set later, triton's own library stays compiled and the interpreter cannot run."""
    if not _interpret_requested() or not _triton_available():
        return False
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(standard.cdiv, InterpretedFunction):
        return True
    global _warned_late_interpret
    if not _warned_late_interpret:
        warnings.warn("TRITON_INTERPRET is set but triton was imported before it was; the Triton "
                      "interpreter is inactive and ops.project uses its torch fallback on CPU", RuntimeWarning)
        _warned_late_interpret = True
    return False


_warned_late_interpret = False


def project_backend(device, dim: int = 128, has_weight: bool = True) -> str:
    """``"triton"`` or ``"torch"``: what :func:`project` runs for inputs on ``device``."""
    device = torch.device(device)
    if not has_weight or dim > _MAX_TRITON_DIM or not _triton_available():
        return "torch"
    if device.type == "cuda" or (device.type == "cpu" and interpreter_active()):
        return "triton"
    return "torch"


def project(hidden, weight, bias=None, mask=None, dim=None, out_dtype=torch.float32):
    """Project token states to ColBERT vectors, normalise, and pack the kept tokens.

    Args:
        hidden: ``(B, L, H)`` float32/float16/bfloat16 last hidden states (any strides).
        weight: ``(D0, H)`` head weight (``linear.weight``), or None for the identity
            (plain encoders with no ColBERT head: output = normalised hidden states).
        bias: optional ``(D0,)`` head bias.
        mask: optional ``(B, L)`` bool, True = keep the token.
        dim: output size, ``1 <= dim <= D0`` (default D0): the first ``dim`` coordinates of
            the projection, renormalised (Matryoshka).
        out_dtype: float32, float16 or bfloat16. Math is fp32 (fp32 accumulation).

    Returns:
        Without ``mask``: ``(B, L, dim)`` ``out_dtype``. With ``mask``: ``(emb, offsets)``,
        ``emb (n_kept, dim)`` in row-major (b, l) order and ``offsets (B + 1,)`` int64
        (``offsets[b + 1] - offsets[b]`` = tokens kept in row b). Same device as ``hidden``.
        Vectors have unit L2 norm (a zero projection stays zero).
    """
    hidden = V.as_tensor(hidden, "hidden")
    V.check_dtype(hidden, "hidden", V.FLOAT_DTYPES)
    V.check_ndim(hidden, "hidden", (3,))
    device = hidden.device
    V.check_device_supported(device, "hidden")
    if out_dtype not in V.FLOAT_DTYPES:
        raise TypeError(f"out_dtype: {out_dtype} is not supported; expected float32, float16 or bfloat16")
    B, L, H = hidden.shape
    if weight is not None:
        weight = V.as_tensor(weight, "weight")
        V.check_dtype(weight, "weight", V.FLOAT_DTYPES)
        V.check_ndim(weight, "weight", (2,))
        V.check_size(weight, "weight", 1, H, "hidden's size H")
        V.check_same_device(device, weight=weight)
        V.check_finite(weight, "weight")
        full = weight.shape[0]
    else:
        full = H
        if bias is not None:
            raise ValueError("bias: given without weight")
    if dim is None:
        dim = full
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 1 <= dim <= full:
        raise ValueError(f"dim: expected an int in [1, {full}], got {dim!r}")
    dim = int(dim)
    if weight is None and dim != H:
        raise ValueError(f"dim: without a projection weight the output keeps all {H} hidden coordinates, got {dim}")
    if bias is not None:
        bias = V.as_tensor(bias, "bias")
        V.check_dtype(bias, "bias", V.FLOAT_DTYPES)
        V.check_ndim(bias, "bias", (1,))
        V.check_size(bias, "bias", 0, full, "weight's rows")
        V.check_same_device(device, bias=bias)
        V.check_finite(bias, "bias")
    if mask is not None:
        mask = V.as_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask: dtype {mask.dtype} is not supported; expected bool")
        V.check_ndim(mask, "mask", (2,))
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"mask: shape {tuple(mask.shape)} does not match hidden's (B, L) = {(B, L)}")
        V.check_same_device(device, mask=mask)
    V.check_finite(hidden, "hidden")

    rows = offsets = None
    if mask is not None:
        flat = mask.reshape(-1)
        rows = torch.nonzero(flat).squeeze(1)
        offsets = torch.zeros(B + 1, dtype=torch.int64, device=device)
        torch.cumsum(mask.sum(dim=1), dim=0, out=offsets[1:])
    n_rows = rows.numel() if rows is not None else B * L
    out = torch.empty((n_rows, dim), dtype=out_dtype, device=device)

    backend = project_backend(device, dim, weight is not None)
    if backend == "triton":
        if device.type == "cpu" and hidden.dtype == torch.bfloat16:
            hidden = hidden.float()  # the interpreter (numpy) has no bfloat16 matmul
        w = weight[:dim].to(hidden.dtype)
        b = None if bias is None else bias[:dim].float().contiguous()
        _kernels().launch(hidden, rows, w, b, out, dim)
    else:
        x = hidden.reshape(B * L, H) if rows is None else hidden.reshape(B * L, H).index_select(0, rows)
        x = x.float()
        y = x if weight is None else torch.nn.functional.linear(
            x, weight[:dim].float(), None if bias is None else bias[:dim].float())
        out.copy_(torch.nn.functional.normalize(y, p=2.0, dim=1, eps=1e-12))
    project.last_backend = backend
    if mask is None:
        return out.view(B, L, dim)
    return out, offsets


project.last_backend = None
