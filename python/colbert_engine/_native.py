"""Loading of the compiled modules.

``_C`` (CPU kernels) is always built with the package; if it is missing the first kernel
call says so, never silently falling back to the slow torch reference. ``_cuda`` is
optional: it is imported on the first CUDA call, and a machine with no driver or no GPU
gets a clear RuntimeError then, not at ``import colbert_engine``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_cpu_module: ModuleType | None = None
_cpu_error: BaseException | None = None
_cuda_module: ModuleType | None = None
_cuda_error: BaseException | None = None


def cpu() -> ModuleType:
    """The ``colbert_engine._C`` module, or RuntimeError saying why it cannot load."""
    global _cpu_module, _cpu_error
    if _cpu_module is None and _cpu_error is None:
        try:
            _cpu_module = importlib.import_module("colbert_engine._C")
        except ImportError as exc:  # pragma: no cover - only on a broken install
            _cpu_error = exc
    if _cpu_module is None:
        raise RuntimeError(
            "colbert_engine._C (the CPU kernels) is not available: "
            f"{_cpu_error}. Reinstall the package (pip install colbert-engine) so the "
            "extension is built; for a source checkout run "
            "`cmake -S . -B build -DCE_INPLACE=ON && cmake --build build`."
        )
    return _cpu_module


def cuda_built() -> bool:
    """Whether ``colbert_engine._cuda`` was built and imports."""
    try:
        _load_cuda()
    except RuntimeError:
        return False
    return True


def _load_cuda() -> ModuleType:
    global _cuda_module, _cuda_error
    if _cuda_module is None and _cuda_error is None:
        try:
            _cuda_module = importlib.import_module("colbert_engine._cuda")
        except ImportError as exc:
            _cuda_error = exc
    if _cuda_module is None:
        raise RuntimeError(
            "colbert_engine was built without its CUDA module (colbert_engine._cuda): "
            f"{_cuda_error}. Rebuild on a machine with nvcc (CE_CUDA=ON) to run ops on GPU."
        )
    return _cuda_module


def cuda() -> ModuleType:
    """The ``colbert_engine._cuda`` module, checked to see a CUDA device.

    Raises RuntimeError with the reason when the module was not built, or no driver or
    device is present.
    """
    module = _load_cuda()
    count = module.device_count()
    if count <= 0:
        reason = "no CUDA device is visible" if count == 0 else module.error_string(-count)
        raise RuntimeError(f"colbert_engine CUDA ops cannot run here: {reason}.")
    return module
