"""Import a stanford ColBERT (v2 / PLAID) index folder into our format.

Files read (all ``torch.load(weights_only=True)`` or JSON):

- ``metadata.json`` (or ``plan.json``): ``config.dim``, ``config.nbits``;
- ``centroids.pt``: float16/32 ``(K, dim)``;
- ``buckets.pt``: tuple ``(bucket_cutoffs (2^b - 1,), bucket_weights (2^b,))``;
- ``{i}.codes.pt``: int ``(n_i,)``; ``{i}.residuals.pt``: uint8 ``(n_i, dim*nbits/8)``
  (newer colbert-ai writes both as raw int32 / uint8 storage files instead of pickles;
  their length is ``codes_size`` or ``num_embeddings`` in ``{i}.metadata.json``);
- ``doclens.{i}.json``: token count of each passage of chunk i.

The residual bit layout is the same as ours, so codes and residuals are copied as they
are and decode to the same vectors. ``ivf.pid.pt`` / ``ivf.pt`` are not needed: the
inverted lists (unique passages per centroid) are rebuilt from the codes, which gives
exactly ColBERT's optimized ``ivf.pid.pt`` lists. Passage ids become the ids
``0..n-1`` in ColBERT's pid order. The inverse norms are computed here.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from colbert_engine import ops
from colbert_engine.index import format as F
from colbert_engine.index.codec import Codec, check_bucket_tables
from colbert_engine.index.codec_files import inverse_norms
from colbert_engine.index.writer import DEFAULT_LOCK_TIMEOUT_S, remove_leftovers, write_index, writer_lock

_CHUNK_TOKENS = 1 << 16


def _load_pt(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file's name
        raise ValueError(f"{path}: cannot be read as a torch file ({exc})") from None


def _load_chunk_array(path: Path, dtype, count: int | None, row: int):
    """A chunk's codes/residuals: a torch pickle, or colbert-ai's raw mmap storage file."""
    if zipfile.is_zipfile(path):
        return _load_pt(path)
    if count is None:
        raise ValueError(f"{path}: raw storage file but its chunk metadata gives no codes_size")
    data = np.fromfile(path, dtype=dtype)
    if data.size < count * row:
        raise ValueError(f"{path}: holds {data.size} values, expected {count * row}")
    return torch.from_numpy(data[:count * row].reshape((count, row) if row > 1 else (count,)))


def _config(folder: Path) -> dict:
    for name in ("metadata.json", "plan.json"):
        path = folder / name
        if path.is_file():
            try:
                body = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
            config = body.get("config", body) if isinstance(body, dict) else None
            # A missing or malformed dim/nbits used to surface as a bare KeyError: 'dim'.
            for key in ("dim", "nbits"):
                if not isinstance(config, dict) or isinstance(config.get(key), bool) \
                        or not isinstance(config.get(key), int):
                    raise ValueError(f"{path}: no integer config field {key!r} (not a ColBERT index config)")
            return config
    raise ValueError(f"{folder}: no metadata.json or plan.json (not a ColBERT index folder)")


def import_colbert(source: Path, path: Path, device: torch.device) -> None:
    """Write the ColBERT index folder ``source`` as a new colbert-engine index in ``path``."""
    if not source.is_dir():
        raise ValueError(f"colbert_index_dir: {source} is not a folder")
    config = _config(source)
    dim, nbits = int(config["dim"]), int(config["nbits"])
    centroids = _load_pt(source / "centroids.pt").float()
    cutoffs, weights = _load_pt(source / "buckets.pt")
    if centroids.dim() != 2 or centroids.shape[1] != dim:
        raise ValueError(f"{source / 'centroids.pt'}: shape {tuple(centroids.shape)}, expected (K, {dim})")
    cutoffs, weights = check_bucket_tables(cutoffs, weights, nbits, dim, str(source / "buckets.pt"))
    codec = Codec(centroids.contiguous(), cutoffs.contiguous(), weights.contiguous(), nbits)
    chunks = sorted(int(m.group(1)) for m in (re.match(r"^(\d+)\.codes\.pt$", f) for f in os.listdir(source)) if m)
    if not chunks:
        raise ValueError(f"{source}: no <i>.codes.pt chunk files")

    path.mkdir(parents=True, exist_ok=True)
    work = codec.to(device)
    packed = dim * nbits // 8

    def batches():
        for i in chunks:
            doclens = np.asarray(json.loads((source / f"doclens.{i}.json").read_text()), dtype=np.int64)
            meta_path = source / f"{i}.metadata.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            count = meta.get("codes_size", meta.get("num_embeddings"))
            codes = _load_chunk_array(source / f"{i}.codes.pt", np.int32, count, 1).to(torch.int32).flatten()
            residuals = _load_chunk_array(source / f"{i}.residuals.pt", np.uint8, count, packed)
            if residuals.shape != (codes.numel(), packed) or int(doclens.sum()) != codes.numel():
                raise ValueError(f"{source}: chunk {i} has {codes.numel()} codes, residuals "
                                 f"{tuple(residuals.shape)} and doclens summing to {int(doclens.sum())}")
            inv_norms = torch.empty(codes.numel(), dtype=torch.float16)
            for t0 in range(0, codes.numel(), _CHUNK_TOKENS):
                c = codes[t0:t0 + _CHUNK_TOKENS].to(device)
                r = residuals[t0:t0 + _CHUNK_TOKENS].contiguous().to(device)
                vectors = ops.decompress_residuals(c, r, work.centroids, work.bucket_weights, nbits, normalize=False)
                inv_norms[t0:t0 + c.numel()] = inverse_norms(vectors.norm(dim=1)).cpu()
            yield (codes.numpy(), residuals.contiguous().numpy(), inv_norms.numpy()), doclens, None, None

    with writer_lock(path, DEFAULT_LOCK_TIMEOUT_S):
        if (path / F.MANIFEST).exists():
            raise ValueError(f"{path}: already holds an index")
        remove_leftovers(path)
        write_index(path, codec, batches(), device, compressed=True)
