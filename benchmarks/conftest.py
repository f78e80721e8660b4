"""Shared fixtures for the pytest-benchmark suites: named synthetic workloads and a built index.

Run a suite from the repository root after the in-place build, e.g.
``PYTHONPATH=python python -m pytest benchmarks/bench_search_suite.py``. Sizes are in
``benchmarks/workload.py``; ``CE_BENCH_SIZE=medium`` picks a larger one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import make_workload  # noqa: E402

BENCH_SIZE = os.environ.get("CE_BENCH_SIZE", "small")


@pytest.fixture(scope="module")
def one_thread():
    """torch and colbert_engine kernels on one thread for the module, restored afterwards."""
    import torch

    from colbert_engine import ops

    threads_torch, threads_ours = torch.get_num_threads(), ops.get_num_threads()
    torch.set_num_threads(1)
    ops.set_num_threads(1)
    yield
    torch.set_num_threads(threads_torch)
    ops.set_num_threads(threads_ours)


@pytest.fixture(scope="session")
def workload():
    """The ``CE_BENCH_SIZE`` clustered collection (default "small": 2,000 docs x ~100
    tokens, dim 128, 32 queries of 32 tokens)."""
    return make_workload(BENCH_SIZE)


@pytest.fixture(scope="session")
def built_index(workload, tmp_path_factory):
    """A 2-bit index of ``workload`` on the CPU (built once per session)."""
    from colbert_engine import Index

    return Index.build(tmp_path_factory.mktemp("bench-index") / "index", workload.doc_emb, workload.doc_offsets,
                       nbits=2, device="cpu")
