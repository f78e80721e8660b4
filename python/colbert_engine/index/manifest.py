"""Manifest validation: a manifest is checked against the format's rules before any file it
names is opened, with or without ``verify``, so that a crafted or damaged manifest can
neither point outside the folder nor make the reader allocate, index or map nonsense."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from colbert_engine.index import format as F
from colbert_engine.index.codec import BUCKET_LAYOUTS
from colbert_engine.index.codec_files import codec_files, codec_shapes
from colbert_engine.index.segment import ARRAYS, file_name

SEGMENT_NAME = re.compile(r"^seg\d{6,}$")
IDS_DB_NAME = re.compile(r"^ids\.\d{6,}\.sqlite$")
# Internal doc ids are int32 in the kernels and the inverted lists.
MAX_DOCS = (1 << 31) - 1
_MAX_INT = 1 << 62  # any count or size beyond this is corrupt (and would overflow int64 maths)


def _fail(path: Path, why: str):
    raise ValueError(f"{path}: corrupt manifest ({why})")


def _int(path: Path, value, what: str, lo: int = 0, hi: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _fail(path, f"{what} is {value!r:.60}, expected an integer in [{lo}, {hi}]")
    return value


def _entry(path: Path, name: str, entry, dtype: str, shape: tuple) -> None:
    """A file entry: the expected dtype and shape, and a byte count that is exactly the npy
    header plus the data (the reader then compares it with the file's real size)."""
    if not isinstance(entry, dict):
        _fail(path, f"entry of {name} is not an object")
    if entry.get("dtype") != dtype:
        _fail(path, f"{name} has dtype {entry.get('dtype')!r:.40}, expected {dtype}")
    got = entry.get("shape")
    if not isinstance(got, list) or [type(x) for x in got] != [int] * len(got) or tuple(got) != shape:
        _fail(path, f"{name} has shape {got!r:.80}, expected {list(shape)}")
    offset = _int(path, entry.get("data_offset"), f"{name} data_offset", 10, 1 << 20)
    _int(path, entry.get("crc32"), f"{name} crc32", 0, (1 << 32) - 1)
    data = math.prod(shape) * np.dtype(dtype).itemsize
    if _int(path, entry.get("bytes"), f"{name} bytes") != offset + data:
        _fail(path, f"{name} is {entry.get('bytes')} bytes, its header and shape make {offset + data}")


def check_manifest(folder: Path, body: dict) -> dict:
    """Check a parsed manifest (see FORMAT.md); returns it, or ValueError naming the file."""
    path = folder / F.MANIFEST
    _int(path, body.get("generation"), "generation", 1)
    dim = _int(path, body.get("dim"), "dim", 8, 1 << 16)
    nbits = _int(path, body.get("nbits"), "nbits", 1, 4)
    if nbits == 3 or dim % 8:
        _fail(path, f"dim {dim} / nbits {nbits} is not a packable codec (nbits 1, 2 or 4, dim a multiple of 8)")
    k = _int(path, body.get("n_centroids"), "n_centroids", 1, 1 << 24)
    n_docs = _int(path, body.get("n_docs"), "n_docs", 0, MAX_DOCS)
    n_tokens = _int(path, body.get("n_tokens"), "n_tokens")
    _int(path, body.get("n_deleted"), "n_deleted", 0, n_docs)

    layout = body.get("bucket_layout", "pooled")  # absent: written before the field existed
    if layout not in BUCKET_LAYOUTS:
        _fail(path, f"bucket_layout is {layout!r:.40}, expected one of {list(BUCKET_LAYOUTS)}")
    names = codec_files(layout)
    codec = body.get("codec")
    if not isinstance(codec, dict) or set(codec) != set(names.values()):
        _fail(path, f"codec names {sorted(codec) if isinstance(codec, dict) else codec!r:.120}, "
                    f"expected {sorted(names.values())} (bucket_layout {layout!r})")
    for key, shape in codec_shapes(layout, nbits, dim, k).items():
        _entry(path, names[key], codec[names[key]], "<f4", shape)

    segments = body.get("segments")
    if not isinstance(segments, list) or not segments:
        _fail(path, "segments must be a non-empty list")
    doc_base, tokens, names = 0, 0, set()
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict):
            _fail(path, f"segment {i} is not an object")
        name = seg.get("name")
        if not isinstance(name, str) or not SEGMENT_NAME.match(name) or name in names:
            _fail(path, f"segment {i} name {name!r:.80} is not a unique seg<generation> name")
        names.add(name)
        if _int(path, seg.get("doc_base"), f"{name} doc_base", 0, MAX_DOCS) != doc_base:
            _fail(path, f"{name} doc_base {seg['doc_base']}, expected {doc_base} (segments must be contiguous)")
        seg_docs = _int(path, seg.get("n_docs"), f"{name} n_docs", 0, MAX_DOCS - doc_base)
        seg_tokens = _int(path, seg.get("n_tokens"), f"{name} n_tokens")
        files = seg.get("files")
        expected = {file_name(name, a): a for a in ARRAYS}
        if not isinstance(files, dict) or set(files) != set(expected):
            _fail(path, f"{name} files {sorted(files) if isinstance(files, dict) else files!r:.160}, "
                        f"expected {sorted(expected)}")
        ivf = files[file_name(name, "ivf")]
        n_postings = ivf.get("shape", [None])[0] if isinstance(ivf, dict) and isinstance(ivf.get("shape"), list) \
            and ivf["shape"] else None
        n_postings = _int(path, n_postings, f"{name} ivf length")
        shapes = {"codes": ("<i4", (seg_tokens,)), "residuals": ("|u1", (seg_tokens, dim * nbits // 8)),
                  "inv_norms": ("<f2", (seg_tokens,)), "doc_offsets": ("<i8", (seg_docs + 1,)),
                  "ivf": ("<i4", (n_postings,)), "ivf_offsets": ("<i8", (k + 1,))}
        for file, array in expected.items():
            _entry(path, file, files[file], *shapes[array])
        doc_base += seg_docs
        tokens += seg_tokens
    if doc_base != n_docs or tokens != n_tokens:
        _fail(path, f"segments hold {doc_base} docs and {tokens} tokens, the manifest says {n_docs} and {n_tokens}")
    ids_db = body.get("ids_db")
    if not isinstance(ids_db, str) or not IDS_DB_NAME.match(ids_db):
        _fail(path, f"ids_db {ids_db!r:.80} is not an ids.<generation>.sqlite name")
    return body


def read_checked_manifest(folder: Path) -> dict:
    return check_manifest(folder, F.read_manifest(folder))
