"""What this installation can do, reported truthfully (``colbert-engine info``)."""

from __future__ import annotations

import contextlib
import os

import torch

from colbert_engine import _native
from colbert_engine._version import __version__


def info() -> dict:
    """Version, built modules, OpenMP threads, the CPU ISA path chosen at run time, and the
    CUDA devices visible to both torch and ``colbert_engine._cuda``."""
    report = {"version": __version__, "torch": torch.__version__}
    try:
        cpu = _native.cpu()
        report.update(cpu_module=True, openmp=bool(cpu.openmp), threads=cpu.max_threads(),
                      isa=cpu.isa(), cpu_module_path=os.path.dirname(cpu.__file__))
    except RuntimeError as exc:
        report.update(cpu_module=False, cpu_module_error=str(exc))
    report["cuda_module"] = _native.cuda_built()
    devices = []
    if report["cuda_module"]:
        count = _native._load_cuda().device_count()
        report["cuda_runtime_devices"] = max(count, 0)
    if torch.cuda.is_available():
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report["cuda_devices"] = devices
    try:
        import triton  # noqa: F401

        report["triton"] = triton.__version__
    except ImportError:
        report["triton"] = None
    return report


def set_num_threads(n: int) -> None:
    """Threads the CPU kernels called from this thread use (like ``torch.set_num_threads``;
    until it is called they follow torch's / OpenMP's count)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    _native.cpu().set_num_threads(n)


def get_num_threads() -> int:
    return _native.cpu().max_threads()


@contextlib.contextmanager
def hold_num_threads(n: int | None = None):
    """Run the enclosed kernel calls of the calling thread on ``n`` threads (default: as many
    as now), whatever the enclosed code does to torch's count (``torch.set_num_threads``
    moves OpenMP's, which the kernels follow until :func:`set_num_threads` is called); the
    thread's own setting is given back after."""
    native = _native.cpu()
    setting = native.kernel_threads_setting()
    native.set_kernel_threads_setting(native.max_threads() if n is None else int(n))
    try:
        yield
    finally:
        native.set_kernel_threads_setting(setting)


def get_pool_spin_us() -> int:
    """How long idle threads of the kernels' pool spin before sleeping (microseconds)."""
    return _native.cpu().parallel_spin_us()


def set_pool_spin_us(microseconds: int) -> None:
    """Process-wide spin of the kernels' idle pool threads (csrc/cpu/parallel.h): longer keeps
    workers awake between the kernels of a query on a quiet machine, shorter leaves busy
    cores to other processes. The search shortens it while the machine is busy."""
    if isinstance(microseconds, bool) or not isinstance(microseconds, int) or microseconds < 0:
        raise ValueError(f"microseconds: expected an int >= 0, got {microseconds!r}")
    _native.cpu().set_parallel_spin_us(microseconds)


def wake_pool() -> None:
    """Wake the kernels' idle pool threads for the calling thread's thread count, without
    waiting: a search calls it first, so they spin when its first kernel starts."""
    _native.cpu().parallel_wake()
