"""The codec's files (by bucket layout), and the stored inverse-norm rule shared by every writer."""

from __future__ import annotations

from pathlib import Path

import torch

from colbert_engine.index import format as F
from colbert_engine.index.codec import BUCKET_LAYOUTS, Codec, check_residual_codebook
from colbert_engine.index.rotation import check_rotation

# The scalar layouts' files ("pooled", "per_dim"), by Codec field.
CODEC_FILES = {"centroids": "codec.centroids.npy", "bucket_cutoffs": "codec.bucket_cutoffs.npy",
               "bucket_weights": "codec.bucket_weights.npy"}
# The "codebook" layout's files: centroids, the byte codebook and the rotation of the space
# (the identity where training kept none), no bucket tables.
CODEBOOK_CODEC_FILES = {"centroids": "codec.centroids.npy", "residual_codebook": "codec.residual_codebook.npy",
                        "rotation": "codec.rotation.npy"}
# Largest float16: csrc/common/codec.h saturates the stored inverse norm here.
FP16_MAX = 65504.0


def inverse_norms(norms: torch.Tensor) -> torch.Tensor:
    """Stored inverse norms (float16) of token vectors with L2 norms ``norms``: the rule of
    codec.h's ``codec_inv_norm`` (0 for a zero vector, saturating at the fp16 maximum), so
    imported tokens score exactly like tokens compressed by the kernels."""
    norms = norms.float()
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    return inv.clamp(max=FP16_MAX).to(torch.float16)


def bucket_layout_of(manifest: dict) -> str:
    """The manifest's ``bucket_layout`` ("pooled" when absent: every index written before
    the field existed, and imported colbert-ai indexes, have pooled tables)."""
    return manifest.get("bucket_layout", "pooled")


def codec_files(layout: str) -> dict:
    """The codec's file names (by Codec field) for a bucket layout."""
    if layout not in BUCKET_LAYOUTS:
        raise ValueError(f"bucket_layout: expected one of {BUCKET_LAYOUTS}, got {layout!r:.40}")
    return CODEBOOK_CODEC_FILES if layout == "codebook" else CODEC_FILES


def codec_shapes(layout: str, nbits: int, dim: int, n_centroids: int) -> dict:
    """Expected shape of each codec array (by Codec field) for a bucket layout."""
    if layout not in BUCKET_LAYOUTS:
        raise ValueError(f"bucket_layout: expected one of {BUCKET_LAYOUTS}, got {layout!r:.40}")
    if layout == "codebook":
        return {"centroids": (n_centroids, dim), "residual_codebook": (dim * nbits // 8, 256, 8 // nbits),
                "rotation": (dim, dim)}
    rows = (dim,) if layout == "per_dim" else ()
    return {"centroids": (n_centroids, dim), "bucket_cutoffs": rows + ((1 << nbits) - 1,),
            "bucket_weights": rows + (1 << nbits,)}


def write_codec(folder: Path, codec: Codec) -> dict:
    """Write the codec's arrays crash-safely; returns the manifest's ``codec`` field (its
    ``bucket_layout`` field is ``codec.bucket_layout``)."""
    def array(key):
        if key == "rotation" and codec.rotation is None:
            return torch.eye(codec.dim, dtype=torch.float32)
        return getattr(codec, key).cpu()
    return {name: F.write_npy(folder, name, array(key)) for key, name in codec_files(codec.bucket_layout).items()}


def codec_from_arrays(arrays: dict, folder: Path, manifest: dict) -> Codec:
    """The codec of a manifest from its arrays (by Codec field, CPU tensors); ValueError
    naming the file whose array has the wrong shape for the manifest's ``bucket_layout``,
    is not finite, or (cutoffs) decreases along a row."""
    nbits, layout = manifest["nbits"], bucket_layout_of(manifest)
    names = codec_files(layout)
    shapes = codec_shapes(layout, nbits, manifest["dim"], manifest["n_centroids"])
    for key, name in names.items():
        if tuple(arrays[key].shape) != shapes[key]:
            raise ValueError(f"{folder / name}: shape {tuple(arrays[key].shape)}, expected {shapes[key]} "
                             f"(bucket_layout {layout!r})")
    if layout == "codebook":
        codebook = check_residual_codebook(arrays["residual_codebook"], nbits, manifest["dim"],
                                           str(folder / names["residual_codebook"]))
        rotation = check_rotation(arrays["rotation"], manifest["dim"], str(folder / names["rotation"]))
        identity = torch.equal(rotation, torch.eye(manifest["dim"], dtype=torch.float32))
        return Codec(arrays["centroids"], None, None, nbits, codebook, None if identity else rotation)
    for key in ("bucket_cutoffs", "bucket_weights"):
        if not bool(torch.isfinite(arrays[key]).all()):
            raise ValueError(f"{folder / CODEC_FILES[key]}: {key} holds non-finite values")
    cutoffs = arrays["bucket_cutoffs"]
    if cutoffs.shape[-1] > 1 and bool((cutoffs[..., 1:] < cutoffs[..., :-1]).any()):
        raise ValueError(f"{folder / CODEC_FILES['bucket_cutoffs']}: bucket cutoffs decrease along a row "
                         "(each row must be non-decreasing)")
    return Codec(arrays["centroids"], arrays["bucket_cutoffs"], arrays["bucket_weights"], nbits)


def load_codec(folder: Path, manifest: dict, verify: bool, device: torch.device) -> Codec:
    """The codec of a checked manifest (:func:`codec_from_arrays` says what is refused)."""
    arrays = {key: F.as_torch(F.load_npy(folder, name, manifest["codec"][name], verify)).clone()
              for key, name in codec_files(bucket_layout_of(manifest)).items()}
    return codec_from_arrays(arrays, folder, manifest).to(device)
