"""A learned rotation of the vector space for the "codebook" codec (OPQ, Ge et al. 2013).

Product quantization codes each residual byte position's ``8 / nbits`` dimensions on their
own, so what it can capture depends on which dimensions share a byte and how the residual
energy spreads over positions. A rotation ``R`` (orthogonal, ``(dim, dim)``) applied to the
whole space before coding changes neither inner products nor the centroid a token is
assigned (``<x R, C R> = <x, C>``), only what the codebooks see: the index then stores
``x R`` against centroids ``C R`` and a search scores ``q R`` (:meth:`Codec.rotate`), so the
kernels are those of every other layout.

Training alternates (non-parametric OPQ): codebooks for the rotated residuals, then the
rotation that best maps the residuals onto their decoded codes (orthogonal Procrustes, one
SVD of a ``(dim, dim)`` matrix). Identity is the starting point and stays unless a rotation
cuts the training residuals' coding error by ``MIN_ERROR_GAIN``: on MiniLM vectors of real
text it cut it by 7% (XQuAD-R) and lifted exact-on-codes recall@10 at 2 bits; on the
synthetic members, whose anisotropy is along the axes, by 2% with no recall change beyond
noise (benchmarks/RESULTS.md, search quality), so those keep no rotation and pay nothing at
search time.
"""

from __future__ import annotations

import torch

from colbert_engine import ops

# Procrustes steps (each: encode, one SVD, codebooks re-trained from the previous ones).
ROTATION_STEPS = 6
# k-means steps per codebook re-training inside the alternation (warm-started).
ROTATION_CODEBOOK_ITERS = 8
# A rotation must lower the coding error by this fraction to be kept (identity otherwise:
# nothing to apply). Gains seen: 7.2% XQuAD-R MiniLM, 1.8-2.1% synthetic members (2 bits).
MIN_ERROR_GAIN = 0.05
# Steps after which the alternation stops unless it has reached half of MIN_ERROR_GAIN (a
# collection a rotation cannot help costs 2 steps of training, not ROTATION_STEPS).
EARLY_STOP_STEPS = 2


def coding_error(residuals: torch.Tensor, codebook: torch.Tensor, nbits: int) -> float:
    """Mean squared L2 error of coding ``residuals`` (n, dim) with a byte codebook."""
    return _squared_error(residuals, decode(residuals, codebook, nbits))


def _squared_error(x: torch.Tensor, decoded: torch.Tensor) -> float:
    return float((x - decoded).pow_(2).sum(1).mean())


def decode(residuals: torch.Tensor, codebook: torch.Tensor, nbits: int) -> torch.Tensor:
    """The codebook's nearest codes of ``residuals`` (n, dim), decoded (no normalisation)."""
    dim = residuals.shape[1]
    zero = torch.zeros(1, dim, dtype=torch.float32, device=residuals.device)
    codes, packed, _ = ops.compress_residuals(residuals, zero, None, codebook, nbits)
    return ops.decompress_residuals(codes, packed, zero, codebook, nbits, normalize=False)


def check_rotation(rotation, dim: int, where: str = "rotation") -> torch.Tensor:
    """A stored rotation: float ``(dim, dim)``, finite and orthogonal (``R R^T = I`` to 1e-3);
    ValueError naming ``where`` otherwise. Returns it as float32."""
    rotation = torch.as_tensor(rotation)
    if tuple(rotation.shape) != (dim, dim):
        raise ValueError(f"{where}: shape {tuple(rotation.shape)}, expected ({dim}, {dim})")
    if not rotation.is_floating_point() or not bool(torch.isfinite(rotation).all()):
        raise ValueError(f"{where}: the rotation must hold finite floats")
    rotation = rotation.float()
    gram = rotation.double() @ rotation.double().T
    if float((gram - torch.eye(dim, dtype=torch.float64, device=rotation.device)).abs().max()) > 1e-3:
        raise ValueError(f"{where}: not orthogonal (R R^T differs from the identity by more than 1e-3)")
    return rotation


def train_rotation(residuals: torch.Tensor, nbits: int, codebook: torch.Tensor, train_codebook,
                   steps: int = ROTATION_STEPS):
    """(rotation or None, codebook): the OPQ alternation from the identity.

    residuals: ``(n, dim)`` float32 training residuals; ``codebook`` their codebook without
    rotation; ``train_codebook(rotated_residuals, init)`` re-trains codebooks (warm start).
    Returns ``(None, codebook)`` unless a rotation lowers the coding error by
    ``MIN_ERROR_GAIN``; else the best rotation seen and the codebook trained for it.
    """
    x = residuals.to(torch.float32).contiguous()
    # each step's decode serves its error and the next step's Procrustes fit
    decoded = decode(x, codebook, nbits)
    base_error = _squared_error(x, decoded)
    best = (base_error, None, codebook)
    current = codebook
    for step in range(steps):
        if step == EARLY_STOP_STEPS and best[0] > base_error * (1 - MIN_ERROR_GAIN / 2):
            break
        # Procrustes: the orthogonal R minimising ||x R - decoded||: U V^T of x^T decoded.
        u, _, vt = torch.linalg.svd((x.T.double() @ decoded.double()))
        rotation = (u @ vt).float()
        rotated = x @ rotation
        current = train_codebook(rotated, current)
        decoded = decode(rotated, current, nbits)
        error = _squared_error(rotated, decoded)
        if error < best[0]:
            best = (error, rotation, current)
    if best[1] is None or best[0] > base_error * (1 - MIN_ERROR_GAIN):
        return None, codebook
    return best[1], best[2]
