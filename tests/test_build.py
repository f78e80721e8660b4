"""The build and the plumbing: modules load, info() tells the truth, the op gate rejects
bad input with errors naming the argument, and CUDA ops fail clearly without a GPU."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import colbert_engine
from colbert_engine import _native, ops


def test_cpu_module_imports():
    cpu = _native.cpu()
    assert cpu.__name__ == "colbert_engine._C"
    assert cpu.isa() in ("scalar", "avx2", "avx512", "neon")


def test_info_is_truthful():
    report = ops.info()
    assert report["version"] == colbert_engine.__version__
    assert report["cpu_module"] is True
    assert report["threads"] == _native.cpu().max_threads() >= 1
    assert report["isa"] == _native.cpu().isa()
    try:
        importlib.import_module("colbert_engine._cuda")
        built = True
    except ImportError:
        built = False
    assert report["cuda_module"] is built
    assert report["cuda_devices"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def test_isa_can_be_capped_by_environment():
    code = "from colbert_engine import _native; print(_native.cpu().isa())"
    env = dict(os.environ, CE_ISA="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


@pytest.mark.skipif(os.environ.get("CE_REQUIRE_CUDA_BUILD") != "1" or shutil.which("nvcc") is None,
                    reason="CI sets CE_REQUIRE_CUDA_BUILD=1 where nvcc is present")
def test_cuda_module_was_built_when_nvcc_present():
    assert _native.cuda_built(), "nvcc is present but colbert_engine._cuda was not built"


def test_no_module_imports_the_package_root_from_below():
    """The library's layers (the subpackages and the root's leaf modules) take names from
    the module that defines them (``colbert_engine._version``, not the package root): the
    root imports ``ops``, so reading a root attribute from below works only by import order.
    The entry points (cli, demo, _quickbench) sit above the package and may use its
    public names."""
    root = os.path.dirname(colbert_engine.__file__)
    entry_points = {"__init__.py", "cli.py", "demo.py", "_quickbench.py", "__main__.py"}
    upward = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py") or (folder == root and name in entry_points):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "colbert_engine":
                    upward += [f"{os.path.relpath(path, root)}: {alias.name}" for alias in node.names
                               if importlib.util.find_spec(f"colbert_engine.{alias.name}") is None]
    assert not upward, f"root attributes imported from below: {upward}"


def test_version_has_one_source():
    from colbert_engine._version import __version__

    assert colbert_engine.__version__ == __version__ == ops.info()["version"]


def test_cli_info_json():
    out = subprocess.run([sys.executable, "-m", "colbert_engine.cli", "info", "--json"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["cpu_module"] is True and report["version"] == colbert_engine.__version__


def test_threads_roundtrip():
    before = ops.get_num_threads()
    try:
        ops.set_num_threads(1)
        assert ops.get_num_threads() == 1
    finally:
        ops.set_num_threads(before)
    with pytest.raises(ValueError, match="n"):
        ops.set_num_threads(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_op_without_gpu_raises_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        _native.cuda()


def _docs():
    emb = torch.randn(10, 16)
    offsets = torch.tensor([0, 4, 10])
    return emb, offsets


@pytest.mark.parametrize(
    "change, error, name",
    [
        (lambda q, e, o: (q.double(), e, o), TypeError, "queries"),
        (lambda q, e, o: (q, e.to(torch.int32), o), TypeError, "doc_emb"),
        (lambda q, e, o: (q[..., :8], e, o), ValueError, "queries"),
        (lambda q, e, o: (q, e.unsqueeze(0), o), ValueError, "doc_emb"),
        (lambda q, e, o: (q, e, o.float()), TypeError, "doc_offsets"),
        (lambda q, e, o: (q, e, torch.tensor([0, 5, 4])), ValueError, "doc_offsets"),
        (lambda q, e, o: (q, e, torch.tensor([0, 4, 11])), ValueError, "doc_offsets"),
        (lambda q, e, o: (q, e, torch.tensor([1, 4, 10])), ValueError, "doc_offsets"),
        (lambda q, e, o: (q.index_fill(2, torch.tensor([0]), float("nan")), e, o), ValueError, "queries"),
        (lambda q, e, o: (q, e.index_fill(1, torch.tensor([3]), float("inf")), o), ValueError, "doc_emb"),
        (lambda q, e, o: ([[1.0]], e, o), TypeError, "queries"),
        (lambda q, e, o: (q, e.to("meta"), o), ValueError, "doc_emb"),
        (lambda q, e, o: (q[:, :0], e, o), ValueError, "queries"),
    ],
)
def test_maxsim_rejects_bad_input(change, error, name):
    queries = torch.randn(2, 3, 16)
    emb, offsets = _docs()
    q, e, o = change(queries, emb, offsets)
    with pytest.raises(error, match=name):
        ops.maxsim(q, e, o)


def test_maxsim_rejects_subset_out_of_range():
    emb, offsets = _docs()
    with pytest.raises(ValueError, match="doc_subset"):
        ops.maxsim(torch.randn(3, 16), emb, offsets, doc_subset=torch.tensor([0, 2]))


def test_maxsim_numpy_in_numpy_out():
    emb, offsets = _docs()
    q = np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32)
    got = ops.maxsim(q, emb.numpy(), offsets.numpy())
    assert isinstance(got, np.ndarray) and got.shape == (2,)
    np.testing.assert_allclose(got, ops.reference.maxsim(torch.from_numpy(q), emb, offsets).numpy(), rtol=1e-5)
