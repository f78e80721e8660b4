"""Residual codec (ColBERTv2 / PLAID): token vectors <-> (code, packed residual, inverse norm).

Kernels: ``csrc/cpu/codec.cpp`` and ``csrc/cuda/codec.cu`` (contract, bucket rule and bit
layout in ``csrc/common/codec.h``); references: :func:`colbert_engine.ops.reference.compress_residuals`
and :func:`colbert_engine.ops.reference.decompress_residuals`.

Layout (ColBERT's, so existing indexes decode byte-identically): the bucket of a residual
value r is the number of cutoffs strictly below r (``torch.bucketize(r, cutoffs)``,
right=False); each dimension contributes its bucket's ``nbits`` bits least-significant
first, dimensions in order, and the bit stream is packed most-significant bit first into
bytes (``numpy.packbits``): ``dim * nbits / 8`` bytes per token.

Bucket tables are pooled (ColBERT's: cutoffs ``(2^nbits - 1,)`` and weights ``(2^nbits,)``
for every dimension) or per dimension (``(dim, 2^nbits - 1)`` and ``(dim, 2^nbits)``,
dimension d bucketed by row d).

One decoding contract for every layout: byte p of a token covers dimensions
``p*k .. p*k + k - 1`` (``k = 8 / nbits``) and decodes through a *byte codebook* float32
``(dim * nbits / 8, 256, k)``, entry ``[p, v, j]`` the residual value of dimension ``p*k + j``
when byte p is v. Scalar bucket weights are expanded to it here (:func:`byte_codebook`, with
the bit layout above), so pooled and per-dimension tables decode bit-identically to a
per-bucket lookup; a product-quantized codec (layout ``"codebook"``) trains the codebook
itself and encodes each byte as the nearest of its 256 codewords (squared L2, ties to the
lowest index) instead of by cutoffs. Where an op takes ``bucket_weights`` it accepts any of
the three forms: ``(2^nbits,)``, ``(dim, 2^nbits)`` or a codebook ``(dim * nbits / 8, 256, k)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from colbert_engine import _native
from colbert_engine.ops import _validate as V

NBITS = (1, 2, 4)
# Bytes of the (block, K) fp32 similarity matrix materialised per step of the centroid
# argmax (reused across blocks), with at least 64 rows so the GEMM stays efficient for
# large K. 1-16 MiB measured within noise of each other at K = 4096 and 65536.
_ARGMAX_BLOCK_BYTES = 1 << 23


def check_nbits(nbits, dim: int | None = None) -> int:
    # numpy integers (np.int64(2) read from a file) are ints too.
    if isinstance(nbits, bool) or not isinstance(nbits, numbers.Integral) or nbits not in NBITS:
        raise ValueError(f"nbits: must be 1, 2 or 4, got {nbits!r}")
    if dim is not None and dim < 1:  # the CUDA kernels reject dim 0; keep both devices alike
        raise ValueError(f"dim: needs dim >= 1, got {dim}")
    nbits = int(nbits)
    if dim is not None and (dim * nbits) % 8:
        raise ValueError(f"nbits: dim * nbits must be a multiple of 8, got dim {dim} and nbits {nbits}")
    return nbits


def _check_centroids(centroids, device) -> torch.Tensor:
    centroids = V.as_tensor(centroids, "centroids")
    V.check_same_device(device, centroids=centroids)
    V.check_dtype(centroids, "centroids", V.FLOAT_DTYPES)
    V.check_ndim(centroids, "centroids", (2,))
    if centroids.shape[0] == 0:
        raise ValueError(f"centroids: needs at least one centroid, got shape {tuple(centroids.shape)}")
    V.check_finite(centroids, "centroids")
    return centroids.to(torch.float32).contiguous()


def _check_buckets(values, name: str, count: int, dim: int, device) -> torch.Tensor:
    """A bucket table as the kernels take it: fp32 contiguous ``(dim, count)``. A pooled
    ``(count,)`` table (ColBERT's, one for all dimensions) is repeated for every dimension
    here, so the kernels have one per-dimension code path and pooled tables decode exactly
    as before; a per-dimension table is ``(dim, count)``."""
    values = V.as_tensor(values, name)
    V.check_same_device(device, **{name: values})
    V.check_dtype(values, name, V.FLOAT_DTYPES)
    V.check_ndim(values, name, (1, 2))
    if values.dim() == 1 and values.numel() != count:
        raise ValueError(f"{name}: expected {count} entries for this nbits (a pooled table), got {values.numel()}")
    if values.dim() == 2 and tuple(values.shape) != (dim, count):
        raise ValueError(f"{name}: a per-dimension table must have shape (dim, 2^nbits{' - 1' if count % 2 else ''})"
                         f" = ({dim}, {count}), got {tuple(values.shape)}")
    V.check_finite(values, name)
    return values.to(torch.float32).expand(dim, count).contiguous()


def check_bucket_weights(bucket_weights, nbits: int, dim: int, device) -> torch.Tensor:
    """bucket_weights pooled ``(2^nbits,)`` or per dimension ``(dim, 2^nbits)`` ->
    fp32 contiguous ``(dim, 2^nbits)`` (what the kernels read)."""
    return _check_buckets(bucket_weights, "bucket_weights", 1 << nbits, dim, device)


def _byte_buckets(nbits: int, device=None) -> torch.Tensor:
    """int64 ``(256, 8 / nbits)``: the bucket of the j-th dimension a byte value holds
    (csrc/common/codec.h: bit b of dimension j's bucket is bit ``k*j + b`` from the MSB)."""
    per_byte = 8 // nbits
    values = torch.arange(256, device=device).unsqueeze(1)                       # (256, 1)
    shifts = 7 - (torch.arange(per_byte, device=device).unsqueeze(1) * nbits
                  + torch.arange(nbits, device=device).unsqueeze(0))              # (k, nbits)
    bits = (values.unsqueeze(-1) >> shifts) & 1                                  # (256, k, nbits)
    return (bits << torch.arange(nbits, device=device)).sum(dim=-1)


def byte_codebook(bucket_weights, nbits: int, dim: int) -> torch.Tensor:
    """The byte codebook of scalar bucket weights: fp32 contiguous ``(dim * nbits / 8, 256, k)``,
    ``k = 8 / nbits``, entry ``[p, v, j] = bucket_weights[p*k + j, bucket_j(v)]`` where
    ``bucket_j(v)`` is the bucket of the j-th dimension packed in byte value v (ColBERT's bit
    layout, module docstring). bucket_weights pooled ``(2^nbits,)`` or per dimension
    ``(dim, 2^nbits)``, on any device (the codebook is on the same one).
    Reference: :func:`colbert_engine.ops.reference.byte_codebook`.
    """
    nbits = check_nbits(nbits, dim)
    weights = V.as_tensor(bucket_weights, "bucket_weights")
    weights = check_bucket_weights(weights, nbits, dim, weights.device)                 # (dim, 2^b)
    per_byte = 8 // nbits
    per_position = weights.view(dim // per_byte, per_byte, 1 << nbits)                   # (P, k, 2^b)
    buckets = _byte_buckets(nbits, weights.device)                                      # (256, k)
    slot = torch.arange(per_byte, device=weights.device).expand(256, per_byte)
    return per_position[:, slot, buckets].contiguous()                                  # (P, 256, k)


def check_codebook(codebook, nbits: int, dim: int, device, name: str = "codebook") -> torch.Tensor:
    """A byte codebook ``(dim * nbits / 8, 256, 8 / nbits)`` of finite floats -> fp32 contiguous."""
    codebook = V.as_tensor(codebook, name)
    V.check_same_device(device, **{name: codebook})
    V.check_dtype(codebook, name, V.FLOAT_DTYPES)
    want = (dim * nbits // 8, 256, 8 // nbits)
    if tuple(codebook.shape) != want:
        raise ValueError(f"{name}: a byte codebook must have shape (dim * nbits / 8, 256, 8 / nbits) = {want}, "
                         f"got {tuple(codebook.shape)}")
    V.check_finite(codebook, name)
    return codebook.to(torch.float32).contiguous()


def decode_codebook(bucket_weights, nbits: int, dim: int, device) -> torch.Tensor:
    """What the kernels decode with: a given byte codebook (3-D) checked, or scalar bucket
    weights (pooled / per dimension) expanded by :func:`byte_codebook`."""
    weights = V.as_tensor(bucket_weights, "bucket_weights")
    if weights.dim() == 3:
        return check_codebook(weights, nbits, dim, device, "bucket_weights")
    V.check_same_device(device, bucket_weights=weights)
    return byte_codebook(weights, nbits, dim)


def check_bucket_cutoffs(bucket_cutoffs, nbits: int, dim: int, device) -> torch.Tensor:
    """bucket_cutoffs pooled ``(2^nbits - 1,)`` or per dimension ``(dim, 2^nbits - 1)``,
    each row non-decreasing -> fp32 contiguous ``(dim, 2^nbits - 1)``."""
    cutoffs = _check_buckets(bucket_cutoffs, "bucket_cutoffs", (1 << nbits) - 1, dim, device)
    if cutoffs.shape[1] > 1:
        bad = (cutoffs[:, 1:] < cutoffs[:, :-1]).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"bucket_cutoffs: must be non-decreasing along each row, got {cutoffs[row].tolist()}"
                             f" for dimension {row}")
    return cutoffs


def check_codes(codes, n_tokens: int, n_centroids: int, device) -> torch.Tensor:
    codes = V.as_tensor(codes, "codes")
    V.check_same_device(device, codes=codes)
    if codes.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"codes: dtype {codes.dtype} is not supported; expected int32 (or int64)")
    V.check_ndim(codes, "codes", (1,))
    if codes.numel() != n_tokens:
        raise ValueError(f"codes: {codes.numel()} codes for {n_tokens} residual rows")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n_centroids):
        raise ValueError(f"codes: values must lie in [0, {n_centroids}), got range "
                         f"[{int(codes.min())}, {int(codes.max())}]")
    return codes.to(torch.int32).contiguous()


def check_residuals(residuals, dim: int, nbits: int, device) -> torch.Tensor:
    residuals = V.as_tensor(residuals, "residuals")
    V.check_same_device(device, residuals=residuals)
    if residuals.dtype != torch.uint8:
        raise TypeError(f"residuals: dtype {residuals.dtype} is not supported; expected uint8")
    V.check_ndim(residuals, "residuals", (2,))
    width = dim * nbits // 8
    if residuals.shape[1] != width:
        raise ValueError(f"residuals: expected {width} bytes per token (dim {dim} x nbits {nbits} / 8), "
                         f"got shape {tuple(residuals.shape)}")
    return residuals.contiguous()


def check_inv_norms(inv_norms, n_tokens: int, device) -> torch.Tensor:
    inv_norms = V.as_tensor(inv_norms, "inv_norms")
    V.check_same_device(device, inv_norms=inv_norms)
    if inv_norms.dtype != torch.float16:
        raise TypeError(f"inv_norms: dtype {inv_norms.dtype} is not supported; expected float16")
    V.check_ndim(inv_norms, "inv_norms", (1,))
    if inv_norms.numel() != n_tokens:
        raise ValueError(f"inv_norms: {inv_norms.numel()} values for {n_tokens} tokens")
    V.check_finite(inv_norms, "inv_norms")
    return inv_norms.contiguous()


def nearest_centroids(emb: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """int32 ``(T,)``: argmax_k <emb[t], centroids[k]>, the first maximum on ties.

    A blocked fp32 GEMM in torch (its BLAS is as fast as anything we would hand-write for
    this dense product), each block's row argmax in our kernel on CPU (about 4x faster than
    torch's, which took a fifth of the time at K = 4096) and in torch on CUDA.
    emb ``(T, dim)`` any float dtype, centroids ``(K, dim)`` fp32 contiguous.
    """
    n_tokens, n_centroids = emb.shape[0], centroids.shape[0]
    codes = torch.empty(n_tokens, dtype=torch.int32, device=emb.device)
    block = max(64, _ARGMAX_BLOCK_BYTES // (4 * n_centroids))
    on_cpu = emb.device.type == "cpu"
    sims = torch.empty(min(block, n_tokens), n_centroids, dtype=torch.float32, device=emb.device)
    for start in range(0, n_tokens, block):
        rows = min(block, n_tokens - start)
        torch.matmul(emb[start:start + rows].to(torch.float32), centroids.T, out=sims[:rows])
        if on_cpu:
            _native.cpu().argmax_rows(sims.data_ptr(), rows, n_centroids, codes[start:].data_ptr())
        else:
            codes[start:start + rows] = sims[:rows].argmax(dim=1)
    return codes


# ----------------------------------------------------------------------------- probed argmax
# Two-level nearest centroid (csrc/common/codec.h, ProbedArgmaxParams): a coarse k-means
# groups the K centroids into cells; a token scores the coarse centroids, probes its
# `nprobe` best cells and takes the exact argmax inside them. Cost per token ~
# (n_cells + nprobe * K / n_cells) * dim instead of K * dim.

# Below this K the dense GEMM + argmax is as cheap as probing, and exact.
PROBE_MIN_CENTROIDS = 2048
# Rows per coarse-score GEMM + kernel call: 16k x 512 cells x 4 B = 32 MiB at most.
_PROBE_ROWS = 1 << 14


def default_cells(n_centroids: int) -> int:
    """Cells of the coarse level for K centroids: ~2 sqrt(K) (so ~sqrt(K)/2 per cell)."""
    return max(1, min(n_centroids, int(round(2 * math.sqrt(n_centroids)))))


def default_nprobe(n_cells: int) -> int:
    """Cells probed per token: enough for >= 99.5% exact argmax on the measured workloads
    (benchmarks/bench_build.py --agreement reports the agreement)."""
    return max(1, min(n_cells, 8 + n_cells // 32))


@dataclass(frozen=True)
class CentroidCells:
    """The coarse level over a centroid table (build with :func:`centroid_cells`).

    coarse ``(n_cells, dim)`` fp32; cell c's centroids transposed as a ``[dim][width_c]``
    block at ``cell_data[cell_offsets[c] * dim:]`` (width a multiple of 16);
    ``cell_ids[col]`` the centroid's index in the original table, -1 for padding;
    ``cell_of`` int64 ``(K,)`` the cell of every centroid (for the reference);
    ``cell_data_bf16`` the same blocks in bf16 as ``[dim/2][width_c][2]`` (pairs of
    dimensions, the layout of the avx512_bf16 dot product; None for odd dim) and
    ``centroids`` the fp32 table (the bf16 screen's rescoring reads it).
    """

    coarse: torch.Tensor
    cell_data: torch.Tensor
    cell_offsets: torch.Tensor
    cell_ids: torch.Tensor
    cell_of: torch.Tensor
    n_centroids: int
    cell_data_bf16: torch.Tensor | None = None
    centroids: torch.Tensor | None = None

    @property
    def n_cells(self) -> int:
        return self.coarse.shape[0]

    @property
    def dim(self) -> int:
        return self.coarse.shape[1]


def centroid_cells(centroids, n_cells: int | None = None, *, niters: int = 4, seed: int = 0) -> CentroidCells:
    """Group centroids into cells by a seeded spherical k-means over them (inner product).

    ``n_cells`` defaults to :func:`default_cells`; empty cells are dropped, so the result
    may have fewer. Deterministic for a given seed. CPU tensors.
    """
    centroids = _check_centroids(centroids, torch.device("cpu"))
    n_centroids, dim = centroids.shape
    n_cells = default_cells(n_centroids) if n_cells is None else n_cells
    if isinstance(n_cells, bool) or not isinstance(n_cells, numbers.Integral) or not 1 <= n_cells <= n_centroids:
        raise ValueError(f"n_cells: expected an int in [1, {n_centroids}] (the number of centroids), got {n_cells!r}")
    gen = torch.Generator().manual_seed(seed)
    coarse = centroids[torch.randperm(n_centroids, generator=gen)[:n_cells]].clone()
    for _ in range(niters + 1):
        cell_of = nearest_centroids(centroids, coarse).long()
        sums = accumulate_rows(centroids, cell_of, torch.zeros_like(coarse))
        used = torch.bincount(cell_of, minlength=coarse.shape[0]) > 0
        # an empty cell keeps its old centre this round (dropped below if still empty)
        coarse = torch.where(used.unsqueeze(1), torch.nn.functional.normalize(sums, dim=1), coarse)
    cell_of = nearest_centroids(centroids, coarse).long()
    counts = torch.bincount(cell_of, minlength=coarse.shape[0])
    keep = counts > 0
    renumber = torch.cumsum(keep.long(), 0) - 1
    coarse, counts, cell_of = coarse[keep].contiguous(), counts[keep], renumber[cell_of]
    widths = (counts + 15) // 16 * 16
    offsets = torch.zeros(coarse.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(widths, 0, out=offsets[1:])
    # column of every centroid: its cell's first column + its rank inside the cell (stable)
    order = torch.sort(cell_of, stable=True).indices
    sorted_cells = cell_of[order]
    starts = torch.cumsum(counts, 0) - counts
    column = torch.empty(n_centroids, dtype=torch.int64)
    column[order] = offsets[:-1][sorted_cells] + torch.arange(n_centroids) - starts[sorted_cells]
    n_cols = int(offsets[-1])
    cell_ids = torch.full((n_cols,), -1, dtype=torch.int32)
    cell_ids[column] = torch.arange(n_centroids, dtype=torch.int32)
    # element (d, col) of cell c's [dim][width] block sits at col0 * dim + d * width + (col - col0)
    col0, width = offsets[:-1][cell_of], widths[cell_of]
    d = torch.arange(dim)
    flat = (col0 * dim + column - col0).unsqueeze(1) + d.unsqueeze(0) * width.unsqueeze(1)  # (K, dim)
    cell_data = torch.zeros(n_cols * dim, dtype=torch.float32)
    cell_data[flat.flatten()] = centroids.flatten()
    cell_data_bf16 = None
    if dim % 2 == 0:  # pairs of dimensions: element (d, col) at col0*dim + (d//2)*2*width + 2*(col-col0) + d%2
        flat2 = (col0 * dim + 2 * (column - col0)).unsqueeze(1) + (d // 2 * 2).unsqueeze(0) * width.unsqueeze(1) \
            + (d % 2).unsqueeze(0)
        cell_data_bf16 = torch.zeros(n_cols * dim, dtype=torch.bfloat16)
        cell_data_bf16[flat2.flatten()] = centroids.flatten().to(torch.bfloat16)
    return CentroidCells(coarse, cell_data, offsets, cell_ids, cell_of, n_centroids, cell_data_bf16, centroids)


def bf16_available() -> bool:
    """Whether the probed argmax can screen in bf16 here (avx512_bf16, not capped by CE_ISA)."""
    return bool(_native.cpu().probed_bf16_available())


def _check_nprobe(nprobe, cells: CentroidCells) -> int:
    if nprobe is None:
        return default_nprobe(cells.n_cells)
    if isinstance(nprobe, bool) or not isinstance(nprobe, numbers.Integral) or nprobe < 1:
        raise ValueError(f"nprobe: expected an int >= 1, got {nprobe!r}")
    return min(int(nprobe), cells.n_cells)


def nearest_centroids_probed(emb: torch.Tensor, cells: CentroidCells, nprobe: int | None = None, *,
                             bf16: bool = False) -> torch.Tensor:
    """int32 ``(T,)``: the nearest centroid among the ``nprobe`` best cells of each token.

    Reference: :func:`colbert_engine.ops.reference.nearest_centroids_probed`. The coarse
    scores are a torch GEMM; probe selection, the per-cell scoring and the argmax are one
    fused kernel (no ``(T, K)`` matrix). emb ``(T, dim)`` float on CPU, checked finite.
    ``bf16`` (where :func:`bf16_available`, else ignored): score the cells with bf16 dot
    products and rescore each token's 16 lane winners in fp32. Off by default: on the
    avx512_bf16 CPU measured (no AMX) it ran at ~0.85x the fp32 kernel (VDPBF16PS does
    not outrun two fp32 FMA ports), see benchmarks/bench_build.py agreement --bf16.
    """
    if not isinstance(cells, CentroidCells):
        raise TypeError(f"cells: expected a CentroidCells (ops.codec.centroid_cells), got {type(cells).__name__}")
    emb = V.as_tensor(emb, "emb")
    if emb.device.type != "cpu":
        raise ValueError(f"emb: the probed argmax runs on CPU, got a tensor on {emb.device}")
    V.check_dtype(emb, "emb", V.FLOAT_DTYPES)
    V.check_ndim(emb, "emb", (2,))
    V.check_size(emb, "emb", 1, cells.dim, "the cells' dim")
    V.check_finite(emb, "emb")
    nprobe = _check_nprobe(nprobe, cells)
    return _probed(emb, cells, nprobe, bf16)


def _probed(emb: torch.Tensor, cells: CentroidCells, nprobe: int, bf16: bool = False) -> torch.Tensor:
    n_tokens, dim = emb.shape
    use_bf16 = bool(bf16) and cells.cell_data_bf16 is not None and bf16_available()
    codes = torch.empty(n_tokens, dtype=torch.int32)
    block = min(_PROBE_ROWS, max(1, n_tokens))
    scores = torch.empty(block, cells.n_cells, dtype=torch.float32)
    native = _native.cpu()
    for start in range(0, n_tokens, block):
        rows = min(block, n_tokens - start)
        x = emb[start:start + rows].to(torch.float32).contiguous()
        torch.matmul(x, cells.coarse.T, out=scores[:rows])
        x_bf16 = x.to(torch.bfloat16) if use_bf16 else None
        native.probed_argmax(x.data_ptr(), scores.data_ptr(), cells.cell_data.data_ptr(),
                             cells.cell_offsets.data_ptr(), cells.cell_ids.data_ptr(), codes[start:].data_ptr(),
                             rows, dim, cells.n_cells, nprobe,
                             cells.cell_data_bf16.data_ptr() if use_bf16 else 0,
                             x_bf16.data_ptr() if use_bf16 else 0,
                             cells.centroids.data_ptr() if use_bf16 else 0)
    return codes


def accumulate_rows(x, codes, sums) -> torch.Tensor:
    """``sums[codes[i]] += x[i]`` for every row (the k-means update), in place; returns sums.

    Reference: :func:`colbert_engine.ops.reference.accumulate_rows` (``index_add_``, which
    on CPU costs about as much as the probed assignment itself). x ``(n, dim)`` float32,
    codes ``(n,)`` int32/int64 in ``[0, len(sums))``, sums ``(K, dim)`` float32 contiguous.
    On CUDA this is ``index_add_``. Deterministic: each sum adds its rows in row order.
    """
    x = V.as_tensor(x, "x")
    V.check_ndim(x, "x", (2,))
    if not isinstance(sums, torch.Tensor) or sums.dtype != torch.float32 or sums.dim() != 2 \
            or not sums.is_contiguous() or sums.shape[1] != x.shape[1] or sums.device != x.device:
        raise ValueError(f"sums: expected a contiguous float32 (K, {x.shape[1]}) tensor on {x.device}")
    codes = check_codes(codes, x.shape[0], sums.shape[0], x.device)
    if x.device.type != "cpu":
        return sums.index_add_(0, codes.long(), x.to(torch.float32))
    x = x.to(torch.float32).contiguous()
    if x.shape[0]:
        _native.cpu().accumulate_rows(x.data_ptr(), codes.data_ptr(), x.shape[0], x.shape[1], sums.data_ptr(),
                                      sums.shape[0])
    return sums


def compress_residuals(emb, centroids, bucket_cutoffs, bucket_weights, nbits, *, cells=None, nprobe=None):
    """Compress token vectors against centroids into (codes, residuals, inv_norms).

    Args:
        emb: ``(T, dim)`` float32/float16/bfloat16 token vectors (T may be 0).
        centroids: ``(K, dim)`` float32 (or float16/bfloat16, used as fp32).
        bucket_cutoffs: float32 ``(2^nbits - 1,)`` pooled (ColBERT's: one table for every
            dimension) or ``(dim, 2^nbits - 1)`` per dimension, each row non-decreasing; or
            None with a codebook: each byte is then the nearest codeword of its ``k``
            residual values (squared L2, ties to the lowest index: product quantization).
        bucket_weights: float32 ``(2^nbits,)`` pooled or ``(dim, 2^nbits)`` per dimension
            (the decoded value of each bucket), or a byte codebook ``(dim * nbits / 8, 256,
            8 / nbits)`` (module docstring). With cutoffs and a codebook, bytes come from the
            cutoffs and inverse norms from the codebook (a scalar codec's own expansion).
        nbits: 1, 2 or 4; ``dim * nbits`` must be a multiple of 8.
        cells: optional :class:`CentroidCells` of ``centroids`` (:func:`centroid_cells`):
            on CPU, codes come from the probed two-level search (>= 99.5% exact argmax
            with the default ``nprobe``, see :func:`nearest_centroids_probed`); on CUDA
            they are ignored (the dense GEMM is cheap there) and codes are exact.
        nprobe: cells probed per token with ``cells`` (default :func:`default_nprobe`).

    Returns:
        ``codes`` int32 ``(T,)``: nearest centroid by inner product (first maximum on ties);
        ``residuals`` uint8 ``(T, dim * nbits / 8)``: buckets of ``emb - centroids[codes]``
        in ColBERT's layout, or nearest codewords (module docstring); ``inv_norms`` float16
        ``(T,)``: ``1 / ||centroids[code] + decoded residual||`` (0 for a zero vector).
        numpy in, numpy out.
    """
    return_numpy = not isinstance(emb, torch.Tensor)
    emb = V.as_tensor(emb, "emb")
    device = emb.device
    V.check_device_supported(device, "emb")
    V.check_dtype(emb, "emb", V.FLOAT_DTYPES)
    V.check_ndim(emb, "emb", (2,))
    dim = emb.shape[1]
    nbits = check_nbits(nbits, dim)
    centroids = _check_centroids(centroids, device)
    V.check_size(centroids, "centroids", 1, dim, "emb's dim")
    codebook = decode_codebook(bucket_weights, nbits, dim, device)
    if bucket_cutoffs is None:
        if V.as_tensor(bucket_weights, "bucket_weights").dim() != 3:
            raise ValueError("bucket_cutoffs: None encodes by nearest codeword, which needs a byte codebook "
                             f"(dim * nbits / 8, 256, 8 / nbits) as bucket_weights, got scalar bucket weights")
        cutoffs = None
    else:
        cutoffs = check_bucket_cutoffs(bucket_cutoffs, nbits, dim, device)
    V.check_finite(emb, "emb")
    emb = emb.contiguous()

    n_tokens = emb.shape[0]
    if cells is not None and device.type == "cpu":
        if not isinstance(cells, CentroidCells):
            raise TypeError(f"cells: expected a CentroidCells (ops.codec.centroid_cells), got {type(cells).__name__}")
        if cells.n_centroids != centroids.shape[0] or cells.dim != dim:
            raise ValueError(f"cells: built for {cells.n_centroids} centroids of dim {cells.dim}, "
                             f"got centroids of shape {tuple(centroids.shape)}")
        codes = _probed(emb, cells, _check_nprobe(nprobe, cells))
    else:
        codes = nearest_centroids(emb, centroids)
    residuals = torch.empty(n_tokens, dim * nbits // 8, dtype=torch.uint8, device=device)
    inv_norms = torch.empty(n_tokens, dtype=torch.float16, device=device)
    if n_tokens:
        args = (emb.data_ptr(), centroids.data_ptr(), codes.data_ptr(), 0 if cutoffs is None else cutoffs.data_ptr(),
                codebook.data_ptr(), residuals.data_ptr(), inv_norms.data_ptr(), n_tokens, dim,
                centroids.shape[0], nbits, V.DTYPE_CODE[emb.dtype])
        if device.type == "cuda":
            with torch.cuda.device(device):
                _native.cuda().quantize_residuals(*args, V.stream_of(device))
        else:
            _native.cpu().quantize_residuals(*args)
    if return_numpy:
        return codes.numpy(), residuals.numpy(), inv_norms.numpy()
    return codes, residuals, inv_norms


def decompress_residuals(codes, residuals, centroids, bucket_weights, nbits, normalize=True,
                         out_dtype=torch.float32, *, inv_norms=None, out=None):
    """Token vectors back from (codes, residuals): ``centroids[code] + codebook[p, byte_p]``.

    Args:
        codes: ``(T,)`` int32 (int64 accepted) in ``[0, K)``.
        residuals: ``(T, dim * nbits / 8)`` uint8 in ColBERT's layout (module docstring).
        centroids: ``(K, dim)`` float32 (or float16/bfloat16).
        bucket_weights: float32 ``(2^nbits,)`` pooled, ``(dim, 2^nbits)`` per dimension, or a
            byte codebook ``(dim * nbits / 8, 256, 8 / nbits)`` (module docstring).
        nbits: 1, 2 or 4.
        normalize: L2-normalise each vector (ColBERT's decompress does). The norm is
            recomputed in fp32, unless ``inv_norms`` is given.
        out_dtype: float32, float16 or bfloat16.
        inv_norms: optional ``(T,)`` float16 stored inverse norms: with ``normalize`` the
            vectors are scaled by them instead (exactly what :func:`lut_maxsim` scores).
        out: optional preallocated contiguous ``(T, dim)`` tensor of ``out_dtype``.

    Returns:
        ``(T, dim)`` of ``out_dtype`` on the inputs' device. numpy in, numpy out.
    """
    return_numpy = not isinstance(residuals, torch.Tensor)
    residuals_t = V.as_tensor(residuals, "residuals")
    device = residuals_t.device
    V.check_device_supported(device, "residuals")
    if out_dtype not in V.FLOAT_DTYPES:
        raise TypeError(f"out_dtype: {out_dtype} is not supported; expected float32, float16 or bfloat16")
    if return_numpy and out_dtype == torch.bfloat16:
        raise TypeError("out_dtype: numpy has no bfloat16; pass torch tensors for bfloat16 output")
    centroids = _check_centroids(centroids, device)
    n_centroids, dim = centroids.shape
    nbits = check_nbits(nbits, dim)
    residuals = check_residuals(residuals_t, dim, nbits, device)
    n_tokens = residuals.shape[0]
    codes = check_codes(codes, n_tokens, n_centroids, device)
    codebook = decode_codebook(bucket_weights, nbits, dim, device)
    if inv_norms is not None:
        inv_norms = check_inv_norms(inv_norms, n_tokens, device)
    shape = (n_tokens, dim)
    if out is None:
        out = torch.empty(shape, dtype=out_dtype, device=device)
    elif not isinstance(out, torch.Tensor) or out.dtype != out_dtype or tuple(out.shape) != shape \
            or out.device != device or not out.is_contiguous():
        raise ValueError(f"out: expected a contiguous {out_dtype} tensor of shape {shape} on {device}")
    if n_tokens:
        args = (codes.data_ptr(), residuals.data_ptr(), centroids.data_ptr(), codebook.data_ptr(),
                0 if inv_norms is None else inv_norms.data_ptr(), out.data_ptr(), n_tokens, dim,
                n_centroids, nbits, bool(normalize), V.DTYPE_CODE[out_dtype])
        if device.type == "cuda":
            with torch.cuda.device(device):
                _native.cuda().decompress_residuals(*args, V.stream_of(device))
        else:
            _native.cpu().decompress_residuals(*args)
    return out.numpy() if return_numpy else out
