"""The codec's three files, and the stored inverse-norm rule shared by every writer."""

from __future__ import annotations

from pathlib import Path

import torch

from colbert_engine.index import format as F
from colbert_engine.index.codec import Codec

CODEC_FILES = {"centroids": "codec.centroids.npy", "bucket_cutoffs": "codec.bucket_cutoffs.npy",
               "bucket_weights": "codec.bucket_weights.npy"}
# Largest float16: csrc/common/codec.h saturates the stored inverse norm here.
FP16_MAX = 65504.0


def inverse_norms(norms: torch.Tensor) -> torch.Tensor:
    """Stored inverse norms (float16) of token vectors with L2 norms ``norms``: the rule of
    codec.h's ``codec_inv_norm`` (0 for a zero vector, saturating at the fp16 maximum), so
    imported tokens score exactly like tokens compressed by the kernels."""
    norms = norms.float()
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    return inv.clamp(max=FP16_MAX).to(torch.float16)


def write_codec(folder: Path, codec: Codec) -> dict:
    """Write the codec's arrays crash-safely; returns the manifest's ``codec`` field."""
    return {CODEC_FILES[key]: F.write_npy(folder, CODEC_FILES[key], getattr(codec, key).cpu())
            for key in ("centroids", "bucket_cutoffs", "bucket_weights")}


def load_codec(folder: Path, manifest: dict, verify: bool, device: torch.device) -> Codec:
    arrays = {key: F.as_torch(F.load_npy(folder, name, manifest["codec"][name], verify)).clone()
              for key, name in CODEC_FILES.items()}
    return Codec(arrays["centroids"], arrays["bucket_cutoffs"], arrays["bucket_weights"],
                 manifest["nbits"]).to(device)
