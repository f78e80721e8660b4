"""The native ops registered with ``torch.library`` (namespace ``colbert_engine``).

Each registration is a schema (from the type hints), the eager implementation (the public,
checked op of ``ops/<family>.py``, which dispatches by device) and a fake implementation
that only computes output shapes and dtypes, so ``torch.compile`` traces through the ops
without graph breaks and other compiled systems can call ``torch.ops.colbert_engine.*``.
No libtorch link: everything is Python-side (``torch.library.custom_op``).

Under ``torch.compile`` the public functions route to the registered ops themselves
(:func:`compile_aware`); in eager mode they run unchanged (numpy in/out, ``out=``).
Registered: maxsim, maxsim_topk, lut_maxsim, compress_residuals, decompress_residuals.
"""

from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch
from torch import Tensor

# By module path: ops/__init__ rebinds the package attributes maxsim and lut_maxsim to the
# functions of the same name.
_codec = importlib.import_module("colbert_engine.ops.codec")
_lut_maxsim = importlib.import_module("colbert_engine.ops.lut_maxsim")
_maxsim = importlib.import_module("colbert_engine.ops.maxsim")

NAMESPACE = "colbert_engine"


def _scores_shape(queries: Tensor, n_out):
    return (n_out,) if queries.dim() == 2 else (queries.shape[0], n_out)


# ------------------------------------------------------------------ maxsim family


@torch.library.custom_op(f"{NAMESPACE}::maxsim", mutates_args=())
def maxsim(queries: Tensor, doc_emb: Tensor, doc_offsets: Tensor, doc_subset: Optional[Tensor] = None) -> Tensor:
    """:func:`colbert_engine.ops.maxsim` as a registered op."""
    return _maxsim.maxsim(queries, doc_emb, doc_offsets, doc_subset=doc_subset)


@maxsim.register_fake
def _(queries, doc_emb, doc_offsets, doc_subset=None):
    n_out = doc_offsets.shape[0] - 1 if doc_subset is None else doc_subset.shape[0]
    return queries.new_empty(_scores_shape(queries, n_out), dtype=torch.float32)


@torch.library.custom_op(f"{NAMESPACE}::maxsim_topk", mutates_args=())
def maxsim_topk(queries: Tensor, doc_emb: Tensor, doc_offsets: Tensor, k: int,
                doc_subset: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """:func:`colbert_engine.ops.maxsim_topk` as a registered op."""
    return _maxsim.maxsim_topk(queries, doc_emb, doc_offsets, k, doc_subset=doc_subset)


@maxsim_topk.register_fake
def _(queries, doc_emb, doc_offsets, k, doc_subset=None):
    n_out = doc_offsets.shape[0] - 1 if doc_subset is None else doc_subset.shape[0]
    shape = _scores_shape(queries, torch.sym_min(k, n_out))
    return (queries.new_empty(shape, dtype=torch.float32), queries.new_empty(shape, dtype=torch.int64))


@torch.library.custom_op(f"{NAMESPACE}::lut_maxsim", mutates_args=())
def lut_maxsim(queries: Tensor, scores: Tensor, codes: Tensor, residuals: Tensor, inv_norms: Tensor,
               doc_offsets: Tensor, candidates: Tensor, bucket_weights: Tensor, nbits: int) -> Tensor:
    """:func:`colbert_engine.ops.lut_maxsim` as a registered op."""
    return _lut_maxsim.lut_maxsim(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates,
                                  bucket_weights, nbits)


@lut_maxsim.register_fake
def _(queries, scores, codes, residuals, inv_norms, doc_offsets, candidates, bucket_weights, nbits):
    return queries.new_empty(_scores_shape(queries, candidates.shape[0]), dtype=torch.float32)


# ------------------------------------------------------------------ codec


@torch.library.custom_op(f"{NAMESPACE}::compress_residuals", mutates_args=())
def compress_residuals(emb: Tensor, centroids: Tensor, bucket_cutoffs: Optional[Tensor], bucket_weights: Tensor,
                       nbits: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`colbert_engine.ops.compress_residuals` as a registered op."""
    return _codec.compress_residuals(emb, centroids, bucket_cutoffs, bucket_weights, nbits)


@compress_residuals.register_fake
def _(emb, centroids, bucket_cutoffs, bucket_weights, nbits):
    n_tokens, dim = emb.shape
    return (emb.new_empty((n_tokens,), dtype=torch.int32),
            emb.new_empty((n_tokens, dim * nbits // 8), dtype=torch.uint8),
            emb.new_empty((n_tokens,), dtype=torch.float16))


@torch.library.custom_op(f"{NAMESPACE}::decompress_residuals", mutates_args=())
def decompress_residuals(codes: Tensor, residuals: Tensor, centroids: Tensor, bucket_weights: Tensor, nbits: int,
                         normalize: bool = True, out_dtype: torch.dtype = torch.float32,
                         inv_norms: Optional[Tensor] = None) -> Tensor:
    """:func:`colbert_engine.ops.decompress_residuals` as a registered op."""
    return _codec.decompress_residuals(codes, residuals, centroids, bucket_weights, nbits, normalize, out_dtype,
                                       inv_norms=inv_norms)


@decompress_residuals.register_fake
def _(codes, residuals, centroids, bucket_weights, nbits, normalize=True, out_dtype=torch.float32,
      inv_norms=None):
    return centroids.new_empty((residuals.shape[0], centroids.shape[1]), dtype=out_dtype)


# ------------------------------------------------------------------ public entry points


def compile_aware(eager, registered):
    """``eager`` (a public op), except while ``torch.compile`` traces: then the registered
    op, so the call stays in the graph (an ``out=`` is filled from its result)."""

    @functools.wraps(eager)
    def op(*args, out=None, **kwargs):
        if not torch.compiler.is_compiling():
            return eager(*args, **kwargs) if out is None else eager(*args, out=out, **kwargs)
        result = registered(*args, **kwargs)
        return result if out is None else out.copy_(result)

    return op
