"""Codec training: centroids by seeded spherical k-means, residual buckets by selection.

ColBERTv2's recipe (DESIGN.md section 4) without faiss and without ``torch.quantile``:

- documents sampled for training: ``min(1 + 16 * sqrt(120 * n_docs), n_docs)``;
- ``K = 2^floor(log2(16 * sqrt(n_tokens)))`` clamped to [16, 2^18] and to the number of
  sample tokens (a corpus of 40 tokens gets 40 centroids: every token its own cell);
- k-means in torch on the index's device, on at most ``max_points_per_centroid * K``
  random sample tokens (faiss's rule, which ColBERT inherits: 256). On CPU with
  K >= ``ops.codec.PROBE_MIN_CENTROIDS`` every assignment (k-means and compression) is
  the probed two-level search of :func:`colbert_engine.ops.codec.nearest_centroids_probed`
  (>= 99.5% exact argmax) instead of a dense ``n x K`` GEMM: that is what makes the full
  sample affordable (32 points per centroid, the old default, cost recall on hard data);
- bucket cutoffs at the j/2^b quantiles and weights at the (j + 1/2)/2^b quantiles of the
  residuals of held-out sample tokens over all dimensions (nearest rank, one sort)
  (``bucket_layout="pooled"``, ColBERT's); or (``"per_dim"``) the same quantiles of
  each dimension's residuals, then refined by
  16 Lloyd-Max steps per dimension (:func:`per_dim_bucket_tables`). Residual
  spread differs by dimension on anisotropic data; per-dimension tables cost no bytes
  per token (benchmarks/RESULTS.md, search quality, has the measurements);
- or, the default for new builds (``"codebook"``, product quantization at the same bytes
  per token), for each residual byte position p a codebook of 256 codewords over its
  ``8 / nbits`` dimensions, trained by k-means on up to ``CODEBOOK_TOKENS`` residual
  sub-vectors (the held-out tokens first) starting from the per-dimension grid
  (:func:`train_residual_codebook`); a byte is the index of the nearest codeword. The
  per-dimension scalar codes are the special case of a product grid of 2^nbits levels per
  dimension, so this is at least as expressive; it measured better at 1, 2 and 4 bits.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from colbert_engine import ops
from colbert_engine.index.memory import release_freed_memory
from colbert_engine.index.rotation import ROTATION_CODEBOOK_ITERS, train_rotation
from colbert_engine.ops import codec as ops_codec

# Scores matrix budget for one assignment chunk (floats): 2^22 = 16 MB of fp32.
_ASSIGN_BUDGET = 1 << 22
_MAX_HELDOUT_VALUES = 1 << 23
_ACCUMULATE_ROWS = 1 << 14  # rows per index_add_ in k-means (8 MB of fp32 at dim 128)
HELDOUT_TOKENS = 50_000  # ColBERTv2 holds out 5% of the sample, at most 50k tokens


def sample_doc_count(n_docs: int) -> int:
    """Documents ColBERT samples for codec training: ``min(1 + 16 sqrt(120 n), n)``."""
    return min(1 + int(16 * math.sqrt(120 * n_docs)), n_docs)


def num_centroids(n_tokens: int, n_sample_tokens: int) -> int:
    """``2^floor(log2(16 sqrt(n_tokens)))`` clamped to [16, 2^18] and to the sample size."""
    if n_tokens <= 0 or n_sample_tokens <= 0:
        raise ValueError("num_centroids: needs at least one token")
    k = 1 << int(math.floor(math.log2(16 * math.sqrt(n_tokens))))
    k = max(16, min(k, 1 << 18))
    return min(k, n_sample_tokens)


# Rows per probed-assignment call (the kernel does its own blocking; no n x K matrix).
_PROBE_CHUNK = 1 << 14  # 8 MB of fp32 rows at dim 128; k-means holds two while it gathers


class RowParts:
    """Several ``(n_i, dim)`` tensors seen as one ``(sum n_i, dim)`` collection that can be
    indexed by an int64 index tensor (rows come back as float32, in index order), without
    concatenating them: a streamed build trains on rows of its buffered batches this way
    instead of copying the sample (which doubled its peak memory)."""

    def __init__(self, parts: list):
        if not parts:
            raise ValueError("RowParts: needs at least one part")
        self.parts = parts
        lengths = torch.tensor([p.shape[0] for p in parts], dtype=torch.int64)
        self.starts = torch.zeros(len(parts) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=self.starts[1:])
        self.shape = torch.Size((int(self.starts[-1]), parts[0].shape[1]))
        self.device = parts[0].device

    def dim(self) -> int:
        return 2

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.int64).cpu().flatten()
        order = torch.argsort(index)
        sorted_index = index[order]
        bounds = torch.searchsorted(sorted_index, self.starts).tolist()
        out = torch.empty(index.numel(), self.shape[1], dtype=torch.float32, device=self.device)
        for p, part in enumerate(self.parts):
            lo, hi = bounds[p], bounds[p + 1]
            if lo < hi:
                out[order[lo:hi].to(self.device)] = part[(sorted_index[lo:hi] - self.starts[p]).to(part.device)].float()
        return out


def cells_for(centroids: torch.Tensor) -> "ops_codec.CentroidCells | None":
    """The probed search's coarse level for these centroids, or None where the dense
    exact path is used (K below ``ops.codec.PROBE_MIN_CENTROIDS``, or not on CPU)."""
    if centroids.device.type != "cpu" or centroids.shape[0] < ops_codec.PROBE_MIN_CENTROIDS:
        return None
    return ops_codec.centroid_cells(centroids)


def _assign(points: torch.Tensor, centroids: torch.Tensor, cells=None):
    """Nearest centroid by inner product (points and centroids unit length), chunked.

    points ``(n, dim)`` any float dtype (converted chunk by chunk), centroids fp32; with
    ``cells`` (:func:`cells_for`) the probed search on CPU.
    Returns (codes int64 (n,), best score float32 (n,)).
    """
    n, k = points.shape[0], centroids.shape[0]
    codes = torch.empty(n, dtype=torch.int64, device=points.device)
    best = torch.empty(n, dtype=torch.float32, device=points.device)
    if cells is not None:
        for start in range(0, n, _PROBE_CHUNK):
            x = points[start:start + _PROBE_CHUNK].float()
            got = ops_codec.nearest_centroids_probed(x, cells).long()
            codes[start:start + x.shape[0]] = got
            best[start:start + x.shape[0]] = (x * centroids[got]).sum(dim=1)
        return codes, best
    chunk = max(1, _ASSIGN_BUDGET // max(k, 1))
    for start in range(0, n, chunk):
        block = points[start:start + chunk].float() @ centroids.T
        best[start:start + chunk], codes[start:start + chunk] = block.max(dim=1)
    return codes, best


MAX_POINTS_PER_CENTROID = 256  # faiss's and ColBERT's rule


def kmeans(points: torch.Tensor, k: int, niters: int = 4, seed: int = 0,
           max_points_per_centroid: int = MAX_POINTS_PER_CENTROID, rows: torch.Tensor | None = None,
           device=None, exact: bool = False) -> torch.Tensor:
    """Seeded spherical k-means (assign by inner product, centroid = normalized mean).

    Args:
        points: ``(n, dim)`` float (any float dtype; kept as given, computed in fp32 chunk
            by chunk so no fp32 copy of all points and no ``n x K`` matrix is made), unit rows.
        k: number of centroids, ``1 <= k <= n``.
        max_points_per_centroid: train on at most this many random points per centroid.
        rows: optional int64 ``(m,)`` row indices of ``points`` to train on (default: all),
            on ``points.device``: a sample is a list of rows, never a copy.
        device: where to compute (default ``points.device``); chunks are moved there.
        exact: always assign by the dense GEMM (default: probed search for large K on CPU).
    Returns:
        float32 ``(k, dim)`` L2-normalized centroids on ``device``.
    """
    device = points.device if device is None else torch.device(device)
    n = points.shape[0] if rows is None else rows.numel()
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k must lie in [1, {n}] (number of points), got {k}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if n > max_points_per_centroid * k:
        pick = torch.randperm(n, generator=gen)[: max_points_per_centroid * k].to(points.device)
        rows = pick if rows is None else rows[pick]
    n = n if rows is None else rows.numel()

    def gather(index):
        return points[index if rows is None else rows[index]].to(device, torch.float32)

    def rows_of(start, stop):
        return (points[start:stop] if rows is None else points[rows[start:stop]]).to(device, torch.float32)

    centroids = gather(torch.randperm(n, generator=gen)[:k].to(points.device))
    codes = torch.empty(n, dtype=torch.int64, device=device)
    for _ in range(niters):
        cells = None if exact else cells_for(centroids)  # rebuilt: the centroids moved
        # assignment and accumulation in one pass over each chunk (the gather of sampled
        # rows is paid once), few large calls: on a busy machine every parallel call pays
        # a barrier
        sums = torch.zeros_like(centroids)
        step = _PROBE_CHUNK if cells is not None else max(_ACCUMULATE_ROWS, _ASSIGN_BUDGET // k)
        for start in range(0, n, step):
            x = rows_of(start, start + step)
            if cells is not None:  # the sample was checked finite with the input
                got = ops_codec._probed(x, cells, ops_codec.default_nprobe(cells.n_cells)).long()
            else:
                got = torch.empty(x.shape[0], dtype=torch.int64, device=device)
                chunk = max(1, _ASSIGN_BUDGET // k)
                for lo in range(0, x.shape[0], chunk):
                    got[lo:lo + chunk] = (x[lo:lo + chunk] @ centroids.T).argmax(dim=1)
            codes[start:start + x.shape[0]] = got
            ops_codec.accumulate_rows(x, got, sums)
        counts = torch.bincount(codes, minlength=k)
        empty = counts == 0
        if bool(empty.any()):
            # re-seed empty cells with random points so every centroid stays in use
            refill = torch.randint(0, n, (int(empty.sum()),), generator=gen).to(points.device)
            sums[empty] = gather(refill)
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids


def _kth_smallest(sorted_values: torch.Tensor, fraction: float) -> float:
    # nearest-rank quantile of sorted values (torch.quantile refuses more than 2^24 values);
    # one sort for all 2^(b+1) - 1 quantiles (a kthvalue pass per quantile took 3.5 s for
    # the 31 of 4 bits over 6.4M values, the sort 0.7 s)
    k = min(sorted_values.numel(), max(1, int(round(fraction * (sorted_values.numel() - 1))) + 1))
    return float(sorted_values[k - 1])


def bucket_tables(residuals: torch.Tensor, nbits: int):
    """Bucket cutoffs ``(2^b - 1,)`` and weights ``(2^b,)`` float32 from residual values.

    residuals: any float tensor (flattened; all dimensions pooled, as in ColBERTv2).
    """
    values = residuals.float().flatten()
    if values.numel() > _MAX_HELDOUT_VALUES:
        gen = torch.Generator(device="cpu").manual_seed(1)
        values = values[torch.randint(0, values.numel(), (_MAX_HELDOUT_VALUES,), generator=gen).to(values.device)]
    values = torch.from_numpy(np.sort(values.cpu().numpy()))  # values only: torch's sort adds int64 indices
    levels = 1 << nbits
    cutoffs = [_kth_smallest(values, j / levels) for j in range(1, levels)]
    weights = [_kth_smallest(values, (j + 0.5) / levels) for j in range(levels)]
    return torch.tensor(cutoffs, dtype=torch.float32), torch.tensor(weights, dtype=torch.float32)


# Residual table layouts: "pooled" (ColBERT's, one bucket table for all dimensions),
# "per_dim" (one bucket table row per dimension) and "codebook" (a trained byte codebook,
# product quantization). New builds use DEFAULT_BUCKET_LAYOUT; an index records its layout
# in the manifest (absent: pooled, every index written before the field).
BUCKET_LAYOUTS = ("pooled", "per_dim", "codebook")
# "codebook": higher exact-on-codes and default-search recall@10 than "per_dim" on every
# suite member measured at 1, 2 and 4 bits, same bytes per token; its training costs build
# time (benchmarks/RESULTS.md, search quality).
DEFAULT_BUCKET_LAYOUT = "codebook"
# The default by nbits where it differs from DEFAULT_BUCKET_LAYOUT (none today).
DEFAULT_LAYOUT_BY_NBITS: dict = {}


def default_bucket_layout(nbits: int) -> str:
    """The layout a new build at ``nbits`` uses when none is given."""
    return DEFAULT_LAYOUT_BY_NBITS.get(nbits, DEFAULT_BUCKET_LAYOUT)
# Lloyd-Max iterations after the per-dimension quantiles (0: quantiles only). 16: from 4 to
# 16 lifted exact-on-codes recall@10 by up to 0.024 (aniso-stop-3k, 2 bits); 32 and 64 did
# not lift it further (benchmarks/RESULTS.md, search quality). Each step is a searchsorted
# into the sorted columns, far cheaper than their sort.
DEFAULT_LLOYD_ITERS = 16


# k-means steps of the "codebook" layout's per-position codebooks (the experiment's 20).
DEFAULT_CODEBOOK_ITERS = 20
# Residual sub-vectors the codebooks train on: the held-out tokens, then sample tokens after
# them up to this many (200k: lower held-out error and higher recall than 50k, RESULTS.md).
CODEBOOK_TOKENS = 200_000
# "codebook" codecs learn a rotation of the space by default (index/rotation.py).
DEFAULT_ROTATE = True
# Rows rotated at a time by Codec.compress (32 MB of fp32 at dim 128).
_ROTATE_ROWS = 1 << 16
# Residual values per assignment chunk of codebook training (16 MB of fp32 rows).
_CODEBOOK_CHUNK_VALUES = 1 << 22


def train_residual_codebook(residuals: torch.Tensor, nbits: int, iters: int = DEFAULT_CODEBOOK_ITERS,
                            seed: int = 0, init: torch.Tensor | None = None) -> torch.Tensor:
    """Byte codebook float32 ``(dim * nbits / 8, 256, 8 / nbits)`` by k-means per byte position.

    residuals: ``(n, dim)`` float. Position p's codewords are 256 centres of the sub-vectors
    ``residuals[:, p*k:(p+1)*k]`` (``k = 8 / nbits``). Start: ``init`` (a byte codebook, e.g.
    the expansion of per-dimension scalar tables), or the sub-vectors of 256 seeded random
    rows (with repeats when n < 256). Each step assigns every sub-vector its nearest
    codeword with the encoding kernel itself (``ops.compress_residuals`` against a zero
    centroid: squared L2, ties to the lowest index, all positions of a row in one pass) and
    moves each codeword to its members' mean (``ops.codec.accumulate_rows``, fixed order); a
    codeword without members keeps its place. Deterministic for a seed.
    """
    if residuals.dim() != 2 or residuals.shape[0] == 0:
        raise ValueError(f"residuals: expected a non-empty (n, dim) tensor, got shape {tuple(residuals.shape)}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters: expected an int >= 0, got {iters!r}")
    n, dim = residuals.shape
    nbits = ops_codec.check_nbits(nbits, dim)
    per_byte = 8 // nbits
    positions = dim // per_byte
    x = residuals.to(torch.float32).contiguous()
    if init is not None:
        codebook = ops_codec.check_codebook(init, nbits, dim, x.device, "init").clone()
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        start = torch.randperm(n, generator=gen)
        start = start.repeat((256 + n - 1) // n)[:256].to(x.device)
        codebook = x[start].view(256, positions, per_byte).transpose(0, 1).contiguous()  # (P, 256, k)
    zero = torch.zeros(1, dim, dtype=torch.float32, device=x.device)
    slots = torch.arange(positions, dtype=torch.int32, device=x.device) * 256
    chunk = max(1, _CODEBOOK_CHUNK_VALUES // dim)
    for _ in range(iters):
        sums = torch.zeros(positions * 256, per_byte, device=x.device)
        counts = torch.zeros(positions * 256, dtype=torch.int64, device=x.device)
        for first in range(0, n, chunk):
            rows = x[first:first + chunk]
            _, nearest, _ = ops.compress_residuals(rows, zero, None, codebook, nbits)      # (m, P) uint8
            assigned = (nearest.to(torch.int32) + slots).flatten()  # row t*P + p: residual t, position p
            ops_codec.accumulate_rows(rows.view(-1, per_byte), assigned, sums)
            counts += torch.bincount(assigned, minlength=positions * 256)
        counts = counts.view(positions, 256, 1)
        means = sums.view(positions, 256, per_byte) / counts.clamp(min=1)
        codebook = torch.where(counts > 0, means, codebook).contiguous()
    return codebook


def check_residual_codebook(codebook, nbits: int, dim: int, where: str = "residual codebook") -> torch.Tensor:
    """Validate a "codebook" codec's byte codebook ``(dim * nbits / 8, 256, 8 / nbits)`` of
    finite floats; returns it as float32. ``where`` names the source in the ValueError."""
    codebook = torch.as_tensor(codebook)
    want = (dim * nbits // 8, 256, 8 // nbits)
    if tuple(codebook.shape) != want:
        raise ValueError(f"{where}: shape {tuple(codebook.shape)}, expected (dim * nbits / 8, 256, 8 / nbits) = "
                         f"{want} for dim {dim}, nbits {nbits}")
    if not codebook.is_floating_point() or not bool(torch.isfinite(codebook).all()):
        raise ValueError(f"{where}: the residual codebook must hold finite floats")
    return codebook.float()


def check_bucket_layout(bucket_layout, nbits: int | None = None) -> str:
    """``bucket_layout`` as given, or for None the default (:func:`default_bucket_layout` of
    ``nbits``, DEFAULT_BUCKET_LAYOUT without); ValueError naming it."""
    if bucket_layout is None:
        return DEFAULT_BUCKET_LAYOUT if nbits is None else default_bucket_layout(nbits)
    if bucket_layout not in BUCKET_LAYOUTS:
        raise ValueError(f"bucket_layout: expected one of {BUCKET_LAYOUTS} or None, got {bucket_layout!r:.40}")
    return bucket_layout


def _check_lloyd_iters(lloyd_iters) -> int:
    if isinstance(lloyd_iters, bool) or not isinstance(lloyd_iters, int) or lloyd_iters < 0:
        raise ValueError(f"lloyd_iters: expected an int >= 0, got {lloyd_iters!r}")
    return lloyd_iters


def per_dim_bucket_tables(residuals: torch.Tensor, nbits: int, lloyd_iters: int = DEFAULT_LLOYD_ITERS):
    """Per-dimension bucket cutoffs ``(dim, 2^b - 1)`` and weights ``(dim, 2^b)`` float32.

    residuals: ``(n, dim)`` float held-out residuals. Start: the pooled rule
    (:func:`bucket_tables`: nearest-rank j/2^b and (j + 1/2)/2^b quantiles) applied to each
    dimension's column alone. Then ``lloyd_iters`` Lloyd-Max (1-D k-means) steps per
    dimension: each weight becomes the mean of the residuals in its bucket (an empty bucket
    keeps its weight), each cutoff the midpoint of its two weights. The bucket rule is the
    kernels' (a value equal to a cutoff falls in the lower bucket). Deterministic.
    """
    if residuals.dim() != 2 or residuals.shape[0] == 0:
        raise ValueError(f"residuals: expected a non-empty (n, dim) tensor, got shape {tuple(residuals.shape)}")
    _check_lloyd_iters(lloyd_iters)
    values = residuals.float()
    n, dim = values.shape
    max_rows = max(1, _MAX_HELDOUT_VALUES // dim)
    if n > max_rows:
        gen = torch.Generator(device="cpu").manual_seed(1)
        values = values[torch.randperm(n, generator=gen)[:max_rows].to(values.device)]
        n = max_rows
    # (dim, n), each row sorted in place by numpy: torch's sort would add an int64 index per
    # value (51 MB at 50k x 128, the build's peak at 1M tokens)
    columns_np = values.cpu().T.contiguous().numpy()
    columns_np.sort(axis=1)
    columns = torch.from_numpy(columns_np)
    levels = 1 << nbits

    def quantile(fraction: float) -> torch.Tensor:  # _kth_smallest's nearest rank, per row
        return columns[:, min(n - 1, max(0, int(round(fraction * (n - 1)))))]

    cutoffs = torch.stack([quantile(j / levels) for j in range(1, levels)], dim=1)
    weights = torch.stack([quantile((j + 0.5) / levels) for j in range(levels)], dim=1)
    if lloyd_iters:
        # rows are independent: a few dimensions at a time keeps the fp64 prefix sums small
        for first in range(0, dim, _LLOYD_ROWS):
            rows = slice(first, min(dim, first + _LLOYD_ROWS))
            cutoffs[rows], weights[rows] = _lloyd_rows(columns[rows], cutoffs[rows], weights[rows], lloyd_iters)
    return cutoffs.contiguous(), weights.contiguous()


_LLOYD_ROWS = 16


def _lloyd_rows(columns: torch.Tensor, cutoffs: torch.Tensor, weights: torch.Tensor, lloyd_iters: int):
    """Lloyd-Max steps for rows of sorted values ``columns`` (rows, n)."""
    n_rows, n = columns.shape
    # bucket sums from prefix sums of the sorted rows (fp64: n values summed)
    prefix = torch.zeros(n_rows, n + 1, dtype=torch.float64)
    torch.cumsum(columns.double(), dim=1, out=prefix[:, 1:])
    rows = torch.arange(n_rows).unsqueeze(1)
    for _ in range(lloyd_iters):
        # bucket j holds sorted positions [ends[j-1], ends[j]): ends = count of values <= cutoff
        ends = torch.searchsorted(columns, cutoffs.contiguous(), right=True)
        bounds = torch.cat([torch.zeros(n_rows, 1, dtype=torch.int64), ends,
                            torch.full((n_rows, 1), n, dtype=torch.int64)], dim=1)
        counts = bounds[:, 1:] - bounds[:, :-1]
        sums = prefix[rows, bounds[:, 1:]] - prefix[rows, bounds[:, :-1]]
        means = (sums / counts.clamp(min=1)).float()
        weights = torch.where(counts > 0, means, weights)
        weights = torch.cummax(weights, dim=1).values  # ordered, so the cutoffs are too
        cutoffs = (weights[:, 1:] + weights[:, :-1]) * 0.5
    return cutoffs, weights


def check_bucket_tables(cutoffs, weights, nbits: int, dim: int, where: str = "bucket tables"):
    """Validate a codec's bucket tables; returns (cutoffs, weights) as float32 tensors.

    Pooled: cutoffs ``(2^b - 1,)``, weights ``(2^b,)``; per dimension: ``(dim, 2^b - 1)``
    and ``(dim, 2^b)``; both of one layout, finite, cutoffs non-decreasing along each row.
    ``where`` names the source in the ValueError (a file, or the arguments).
    """
    levels = 1 << nbits
    cutoffs, weights = torch.as_tensor(cutoffs), torch.as_tensor(weights)
    pooled = ((levels - 1,), (levels,))
    per_dim = ((dim, levels - 1), (dim, levels))
    shapes = (tuple(cutoffs.shape), tuple(weights.shape))
    if shapes not in (pooled, per_dim):
        raise ValueError(f"{where}: bucket_cutoffs/bucket_weights have shapes {shapes[0]}/{shapes[1]}, expected "
                         f"{pooled[0]}/{pooled[1]} (pooled) or {per_dim[0]}/{per_dim[1]} (per dimension) "
                         f"for dim {dim}, nbits {nbits}")
    for name, t in (("bucket_cutoffs", cutoffs), ("bucket_weights", weights)):
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: {name} must be finite floats")
    cutoffs, weights = cutoffs.float(), weights.float()
    if cutoffs.shape[-1] > 1 and bool((cutoffs[..., 1:] < cutoffs[..., :-1]).any()):
        raise ValueError(f"{where}: bucket_cutoffs must be non-decreasing along each row")
    return cutoffs, weights


@dataclass
class Codec:
    """Centroids and residual tables: everything needed to (de)compress token vectors.

    centroids float32 ``(K, dim)`` (unit rows); then one of (:attr:`bucket_layout`)
    scalar bucket tables float32, pooled (ColBERT's layout) ``bucket_cutoffs
    (2^nbits - 1,)`` and ``bucket_weights (2^nbits,)``, or per dimension ``(dim, 2^nbits -
    1)`` and ``(dim, 2^nbits)``; or (``"codebook"``) no bucket tables (None) and a trained
    ``residual_codebook`` ``(dim * nbits / 8, 256, 8 / nbits)``. Every layout decodes
    through :attr:`byte_codebook` (built once per codec).

    ``rotation``: None, or (``"codebook"`` only) an orthogonal float32 ``(dim, dim)`` the
    codec's space is rotated by (index/rotation.py): centroids are stored rotated, and
    :meth:`compress` and :meth:`rotate` (queries) apply it; decoded vectors live in the
    rotated space (:meth:`unrotate` maps them back).
    """

    centroids: torch.Tensor
    bucket_cutoffs: torch.Tensor | None
    bucket_weights: torch.Tensor | None
    nbits: int
    residual_codebook: torch.Tensor | None = None
    rotation: torch.Tensor | None = None
    # The byte codebook the kernels decode with, expanded once from the scalar tables
    # (kept with the tables it came from: train_codec sets them after construction).
    _byte_codebook: object = field(default=None, init=False, repr=False, compare=False)
    _byte_codebook_of: object = field(default=None, init=False, repr=False, compare=False)
    # Built on first use by compress(); a pure function of the centroids (seeded), so
    # every build, add and compaction assigns a token the same code.
    _cells: object = field(default=None, init=False, repr=False, compare=False)
    _cells_built: bool = field(default=False, init=False, repr=False, compare=False)
    # Seconds spent in compress() since creation (the build's time split).
    compress_seconds: float = field(default=0.0, init=False, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def bucket_layout(self) -> str:
        """"pooled" (one table for all dimensions), "per_dim" (a row per dimension) or
        "codebook" (a trained byte codebook, product quantization)."""
        if self.residual_codebook is not None:
            return "codebook"
        return "per_dim" if self.bucket_weights.dim() == 2 else "pooled"

    @property
    def byte_codebook(self) -> torch.Tensor:
        """float32 ``(dim * nbits / 8, 256, 8 / nbits)`` on the codec's device: what every
        decode (decompression, lut_maxsim) reads; :func:`ops.codec.byte_codebook` of the
        scalar tables, or the trained codebook."""
        if self.residual_codebook is not None:
            return self.residual_codebook
        if self._byte_codebook is None or self._byte_codebook_of is not self.bucket_weights:
            self._byte_codebook = ops_codec.byte_codebook(self.bucket_weights, self.nbits, self.dim)
            self._byte_codebook_of = self.bucket_weights
        return self._byte_codebook

    @property
    def cells(self):
        """The probed search's coarse level (None where compression is dense and exact)."""
        if not self._cells_built:
            self._cells = cells_for(self.centroids)
            self._cells_built = True
        return self._cells

    def rotate(self, vectors: torch.Tensor) -> torch.Tensor:
        """Vectors (``(..., dim)``, e.g. queries) in the codec's space: ``vectors @ rotation``
        in float32, or ``vectors`` unchanged without a rotation."""
        if self.rotation is None:
            return vectors
        return torch.matmul(vectors.to(torch.float32), self.rotation)

    def unrotate(self, vectors: torch.Tensor) -> torch.Tensor:
        """Decoded vectors back in the caller's space (inverse of :meth:`rotate`), same dtype."""
        if self.rotation is None:
            return vectors
        return torch.matmul(vectors.to(torch.float32), self.rotation.T).to(vectors.dtype)

    def compress(self, emb: torch.Tensor):
        """(codes, residuals, inv_norms) of token vectors: :func:`ops.compress_residuals`
        with this codec's centroid cells (probed assignment for large K on CPU), after the
        codec's rotation (in row chunks: a rotated copy of a whole batch would double it)."""
        start = time.perf_counter()
        cells = self.cells if emb.device.type == "cpu" else None
        if self.rotation is None or not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            # (anything else: compress_residuals names the argument's problem)
            out = ops.compress_residuals(emb, self.centroids, self.bucket_cutoffs, self.byte_codebook, self.nbits,
                                         cells=cells)
        else:
            parts = [ops.compress_residuals(self.rotate(emb[first:first + _ROTATE_ROWS]), self.centroids,
                                            self.bucket_cutoffs, self.byte_codebook, self.nbits, cells=cells)
                     for first in range(0, max(1, emb.shape[0]), _ROTATE_ROWS)]
            out = tuple(torch.cat(column) for column in zip(*parts)) if len(parts) > 1 else parts[0]
        self.compress_seconds += time.perf_counter() - start
        return out

    def to(self, device) -> "Codec":
        def moved(t):
            return None if t is None else t.to(device)
        return Codec(self.centroids.to(device), moved(self.bucket_cutoffs), moved(self.bucket_weights), self.nbits,
                     moved(self.residual_codebook), moved(self.rotation))


def train_codec(sample: torch.Tensor, n_tokens: int, nbits: int, seed: int = 0, niters: int = 4,
                n_centroids: int | None = None, max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
                rows: torch.Tensor | None = None, device=None, timings: dict | None = None,
                bucket_layout: str | None = None, lloyd_iters: int | None = None,
                codebook_tokens: int | None = None, rotate: bool | None = None) -> Codec:
    """Train a codec on sample token vectors.

    Args:
        sample: ``(n, dim)`` float token vectors (unit rows) of the sampled documents, or,
            with ``rows``, the whole packed collection and ``rows`` int64 ``(m,)`` the sample's
            token indices into it (no copy of the sample is made).
        n_tokens: tokens in the whole collection (sets K); ``n_centroids`` overrides K.
        device: where k-means runs (default ``sample.device``).
        timings: optional dict that receives the seconds of "kmeans" and "buckets".
        bucket_layout: "codebook" (product quantization), "per_dim" or "pooled" (ColBERT's);
            default :func:`default_bucket_layout`.
        lloyd_iters: Lloyd-Max steps of the per-dimension tables (default
            ``DEFAULT_LLOYD_ITERS``; 0 keeps the quantiles).
        codebook_tokens: residuals the "codebook" layout trains on (default
            ``CODEBOOK_TOKENS``): the held-out tokens, then sample tokens after them.
        rotate: "codebook" only: learn a rotation of the space (index/rotation.py), kept
            where it lowers the residuals' coding error (default ``DEFAULT_ROTATE``).
    Returns:
        a :class:`Codec` on ``device``.
    """
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits: must be 1, 2 or 4, got {nbits}")
    bucket_layout = check_bucket_layout(bucket_layout, nbits)
    lloyd_iters = _check_lloyd_iters(DEFAULT_LLOYD_ITERS if lloyd_iters is None else lloyd_iters)
    wanted = CODEBOOK_TOKENS if codebook_tokens is None else codebook_tokens
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise ValueError(f"codebook_tokens: expected an int >= 1, got {wanted!r}")
    n = sample.shape[0] if rows is None else rows.numel()
    if sample.dim() != 2 or n == 0:
        raise ValueError(f"codec training needs at least one token vector, got shape {tuple(sample.shape)}")
    device = sample.device if device is None else torch.device(device)
    dim = sample.shape[1]
    if dim % 8 or (dim * nbits) % 8:
        raise ValueError(f"dim: must be a multiple of 8 for bit packing, got {dim}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(n, generator=gen).to(sample.device)
    if rows is not None:
        order = rows.to(sample.device)[order]
    # ColBERTv2 holds out 5% (at most 50k tokens) for the bucket statistics
    n_heldout = min(int(0.05 * n), HELDOUT_TOKENS) if n >= 40 else 0
    heldout_rows = order[:n_heldout] if n_heldout else order
    train_rows = order[n_heldout:]
    k = n_centroids if n_centroids is not None else num_centroids(n_tokens, train_rows.numel())
    k = min(k, train_rows.numel())
    start = time.perf_counter()
    centroids = kmeans(sample, k, niters=niters, seed=seed, max_points_per_centroid=max_points_per_centroid,
                       rows=train_rows, device=device)
    mid = time.perf_counter()
    release_freed_memory()  # k-means' chunks, before the held-out vectors are gathered
    codec = Codec(centroids, None, None, nbits)
    # gathered after k-means, residuals in place: at 1M tokens the held-out vectors (25 MB)
    # and their copies were a third of the build's peak memory
    if bucket_layout == "codebook":
        if n_heldout:  # the held-out tokens, then sample tokens after them, gathered once
            heldout_rows = torch.cat([heldout_rows, train_rows[:max(0, wanted - n_heldout)]])[:wanted]
    heldout = sample[heldout_rows].to(device, torch.float32)
    del order, heldout_rows, train_rows
    codes, _ = _assign(heldout, centroids, codec.cells)
    residuals = heldout.sub_(centroids[codes])
    if bucket_layout == "codebook":
        # start from the per-dimension grid (a product codebook already): lower error than
        # random rows at every iteration count measured (RESULTS.md, search quality)
        _, grid_weights = per_dim_bucket_tables(residuals, nbits, lloyd_iters)
        grid = ops_codec.byte_codebook(grid_weights.to(residuals.device), nbits, dim)
        codebook = train_residual_codebook(residuals, nbits, seed=seed, init=grid)
        if DEFAULT_ROTATE if rotate is None else rotate:
            def retrain(rotated, init):
                return train_residual_codebook(rotated, nbits, iters=ROTATION_CODEBOOK_ITERS, seed=seed, init=init)
            rotation, codebook = train_rotation(residuals, nbits, codebook, retrain)
            if rotation is not None:  # the space is rotated: centroids stored as C R
                codec = Codec(torch.matmul(centroids, rotation.to(centroids.device)), None, None, nbits,
                              rotation=rotation.to(device))
        codec.residual_codebook = codebook.to(device)
    else:
        if bucket_layout == "per_dim":
            cutoffs, weights = per_dim_bucket_tables(residuals, nbits, lloyd_iters)
        else:
            cutoffs, weights = bucket_tables(residuals, nbits)
        codec.bucket_cutoffs, codec.bucket_weights = cutoffs.to(device), weights.to(device)
    if timings is not None:
        timings["kmeans"] = mid - start
        timings["buckets"] = time.perf_counter() - mid
    return codec


_LOG = logging.getLogger("colbert_engine.build")


class BuildClock:
    """The build's time split: seconds per stage (sampling, kmeans, buckets, compression,
    writing = IVF, files and ids), logged to ``colbert_engine.build`` as each stage ends and
    stored in the manifest as ``build_seconds`` (``Index.stats()``: ``build_s_<stage>``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = self._mark = time.perf_counter()

    def restart(self) -> None:
        self._mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._mark
        self._mark = now
        _LOG.info("build: %s %.2f s", stage, self.seconds[stage])

    def finish(self, compress_seconds: float) -> dict:
        """Close the split: compression is the codec's own count; the rest of the time
        since the codec was trained is writing (reading the stream, IVF, files, ids)."""
        now = time.perf_counter()
        self.seconds["compression"] = compress_seconds
        self.seconds["writing"] = max(0.0, now - self._mark - compress_seconds)
        self.seconds["total"] = now - self._start
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        _LOG.info("build: " + ", ".join(f"{k} {v:.2f} s" for k, v in out.items()))
        return out
