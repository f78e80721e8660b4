"""Shared fixtures: devices present, seeded generators, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# COLBERT_ENGINE_SHARED_DATA overrides it (helpers' worktrees sit one level deeper than main).
SHARED_DATA = Path(os.environ.get("COLBERT_ENGINE_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _cuda_usable() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        from colbert_engine import _native

        _native.cuda()
    except RuntimeError:
        return False
    return True


CUDA = _cuda_usable()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device and colbert_engine._cuda")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every device present: cpu always, cuda when a GPU and the CUDA module are there."""
    return request.param


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_report_header(config):
    from colbert_engine.ops import info

    report = info()
    return (f"colbert_engine {report['version']}: isa={report.get('isa')} threads={report.get('threads')} "
            f"cuda_module={report['cuda_module']} cuda_devices={report['cuda_devices']} "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}")
