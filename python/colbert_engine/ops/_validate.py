"""Argument checks shared by the public ops. Every failure names the argument and the value
it got, as ValueError (bad value or shape) or TypeError (bad type or dtype)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Codes of csrc/common/dtype.h (ce::DType).
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def as_tensor(x, name: str) -> torch.Tensor:
    """Accept a torch tensor or a numpy array (zero copy); anything else is a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.float16 or x.dtype.kind in "fiub":
            return torch.from_numpy(np.ascontiguousarray(x))
        raise TypeError(f"{name}: numpy dtype {x.dtype} is not supported")
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_dtype(x: torch.Tensor, name: str, allowed: Iterable[torch.dtype]) -> None:
    allowed = tuple(allowed)
    if x.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name}: dtype {str(x.dtype).replace('torch.', '')} is not supported; expected one of {names}")


def check_ndim(x: torch.Tensor, name: str, ndims: Iterable[int]) -> None:
    ndims = tuple(ndims)
    if x.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(x.shape)}")


def check_size(x: torch.Tensor, name: str, axis: int, expected: int, what: str) -> None:
    if x.shape[axis] != expected:
        raise ValueError(f"{name}: size {x.shape[axis]} on axis {axis} does not match {what} ({expected}); shape {tuple(x.shape)}")


def check_finite(x: torch.Tensor, name: str) -> None:
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_same_device(device: torch.device, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{name}: on device {t.device}, expected {device} like the other inputs")


def check_device_supported(device: torch.device, name: str) -> None:
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: device {device} is not supported (cpu or cuda)")


def offsets_tensor(offsets: torch.Tensor, name: str) -> torch.Tensor:
    """The checks of :func:`check_offsets` that need no look at the values (no device
    synchronisation): int64 (int32 widened), 1-D, non-empty. Returns contiguous int64."""
    if offsets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: dtype {offsets.dtype} is not supported; expected int64")
    check_ndim(offsets, name, (1,))
    if offsets.numel() == 0:
        raise ValueError(f"{name}: must have n_docs + 1 >= 1 entries, got none")
    return offsets.to(torch.int64).contiguous()


def check_offsets(offsets: torch.Tensor, name: str, n_rows: int) -> torch.Tensor:
    """Packed-layout offsets: int64 (int32 accepted and widened), 1-D, starts at 0,
    non-decreasing, ends at n_rows. Returns a contiguous int64 tensor."""
    offsets = offsets_tensor(offsets, name)
    if int(offsets[0]) != 0:
        raise ValueError(f"{name}: must start at 0, got {int(offsets[0])}")
    if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"{name}: must be non-decreasing (document lengths >= 0)")
    if int(offsets[-1]) != n_rows:
        raise ValueError(f"{name}: last offset {int(offsets[-1])} does not equal the number of token rows ({n_rows})")
    return offsets


def index_tensor(idx: torch.Tensor, name: str) -> torch.Tensor:
    """The checks of :func:`check_index_range` that need no look at the values: an integer
    dtype, 1-D. Returns a contiguous int64 tensor."""
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name}: dtype {idx.dtype} is not supported; expected an integer dtype")
    check_ndim(idx, name, (1,))
    return idx.to(torch.int64).contiguous()


def check_index_range(idx: torch.Tensor, name: str, upper: int) -> torch.Tensor:
    """Integer indices in [0, upper): returns a contiguous int64 tensor."""
    idx = index_tensor(idx, name)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        raise ValueError(f"{name}: values must lie in [0, {upper}), got range [{int(idx.min())}, {int(idx.max())}]")
    return idx


def stream_of(device: torch.device) -> int:
    """The current CUDA stream handle of `device`, as the integer the bindings take."""
    return torch.cuda.current_stream(device).cuda_stream
