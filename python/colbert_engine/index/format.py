"""On-disk format: file names, the JSON manifest, crash-safe writes, checked reads.

The format is documented in ``FORMAT.md`` beside this file; keep the two in step.
Every file is written to a temporary name, fsynced, renamed into place and the folder
fsynced; the manifest is written last and is the commit point: a reader only ever looks
at files the current manifest names, so a crash at any point leaves the previous
generation intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

FORMAT_NAME = "colbert-engine-index"
FORMAT_VERSION = 3  # the newest this reader reads; what a build writes: format_version_for()
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
# Fixed npy header length for streamed arrays (the shape is patched in at the end).
_STREAM_HEADER_BYTES = 128
_CHUNK = 1 << 24  # bytes per read when checksumming


class MissingFileError(ValueError):
    """A file the manifest names is not there (a reader racing a writer's garbage
    collection sees this and re-reads the manifest)."""


def named_os_error(path: Path, exc: OSError) -> OSError:
    """``exc`` (a failed write: disk full, quota, I/O error) as an OSError naming ``path``;
    numpy's own message ("6798 requested and 5088 written") names no file."""
    err = OSError(exc.errno, f"{path}: write failed ({exc.strerror or exc})")
    err.filename = str(path)
    return err


def crash_point(name: str) -> None:
    """Test hook: ``COLBERT_ENGINE_CRASH_AT=<name>`` SIGKILLs the process here.

    Lets the tests kill a writer between any two durable steps, like a power cut.
    """
    if os.environ.get("COLBERT_ENGINE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def commit_file(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, atomically rename it to ``final``, fsync the folder."""
    _fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _data_crc32(f, data_offset: int) -> int:
    crc = 0
    f.seek(data_offset)
    while True:
        block = f.read(_CHUNK)
        if not block:
            return crc
        crc = zlib.crc32(block, crc)


def _npy_header(path: Path, f=None):
    """(shape, dtype, data offset) of an .npy file (read from ``f`` when given), or
    ValueError naming it."""
    try:
        with contextlib.nullcontext(f) if f is not None else open(path, "rb") as f:
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported npy version {version}")
            offset = f.tell()
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds (tokenize.TokenError)
        raise ValueError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if fortran:
        raise ValueError(f"{path}: Fortran-ordered arrays are not part of the format")
    return tuple(shape), dtype, offset


def write_npy(folder: Path, name: str, array) -> dict:
    """Write ``array`` to ``folder/name`` crash-safely; returns its manifest entry."""
    array = np.ascontiguousarray(array.numpy() if isinstance(array, torch.Tensor) else array)
    final = folder / name
    tmp = folder / (name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, array, allow_pickle=False)
        commit_file(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the cleanup must not hide why the write failed
            tmp.unlink(missing_ok=True)
        raise named_os_error(tmp, exc) from exc
    _, _, offset = _npy_header(final)
    crc = zlib.crc32(memoryview(array).cast("B")) if array.size else 0
    return {"dtype": array.dtype.str, "shape": list(array.shape), "bytes": final.stat().st_size, "crc32": crc,
            "data_offset": offset}


class NpyAppender:
    """Streams rows into an .npy file of unknown final length.

    Writes a fixed-size header placeholder, appends row blocks, then patches the real
    shape into the header; the crc32 of the data bytes is computed on the fly. Keeps no
    rows in memory, so a build's peak RAM does not grow with the collection.
    """

    def __init__(self, folder: Path, name: str, dtype, row_shape=()):
        self.folder, self.name = folder, name
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self.crc = 0
        self.tmp = folder / (name + TMP_SUFFIX)
        self.file = open(self.tmp, "wb")
        self.file.write(b"\0" * _STREAM_HEADER_BYTES)

    def append(self, block) -> None:
        block = np.ascontiguousarray(block.numpy() if isinstance(block, torch.Tensor) else block,
                                     dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.name}: row shape {block.shape[1:]} != {self.row_shape}")
        raw = memoryview(block).cast("B") if block.size else b""
        try:
            self.file.write(raw)
        except OSError as exc:
            raise named_os_error(self.tmp, exc) from exc
        self.crc = zlib.crc32(raw, self.crc)
        self.rows += block.shape[0]

    def close(self) -> dict:
        """Patch the header, fsync and rename into place; returns the manifest entry."""
        shape = (self.rows,) + self.row_shape
        header = {"descr": self.dtype.str, "fortran_order": False, "shape": shape}
        text = repr(header).encode("latin1")
        # magic (6) + version (2) + length (2) + text + padding + newline
        pad = _STREAM_HEADER_BYTES - 10 - len(text) - 1
        if pad < 0:
            raise ValueError(f"{self.name}: shape {shape} does not fit the streamed npy header")
        final = self.folder / self.name
        try:
            self.file.seek(0)
            self.file.write(b"\x93NUMPY\x01\x00" + (_STREAM_HEADER_BYTES - 10).to_bytes(2, "little")
                            + text + b" " * pad + b"\n")
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, final)
            fsync_dir(self.folder)
        except OSError as exc:
            raise named_os_error(self.tmp, exc) from exc
        return {"dtype": self.dtype.str, "shape": list(shape), "bytes": final.stat().st_size, "crc32": self.crc,
                "data_offset": _STREAM_HEADER_BYTES}

    def abort(self) -> None:
        """Best-effort removal after a failure: errors here (closing a file on a full
        disk fails to flush) must not replace the error being raised."""
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


def load_npy(folder: Path, name: str, entry: dict, verify: bool) -> np.ndarray:
    """Memory-map ``folder/name`` after checking it against its manifest entry.

    Always checks (cheap, O(1)): the file exists, its size, npy header, dtype and shape.
    With ``verify`` also the crc32 of the data (reads the whole file once).
    """
    path = folder / name
    # Everything is read through one open file: a writer's garbage collection may remove
    # the name meanwhile, the open file (and the map made from it) stays valid.
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: missing (named in the manifest)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be opened ({exc})") from None
    with f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file")
        if info.st_size != entry["bytes"]:
            raise ValueError(f"{path}: size {info.st_size} bytes, manifest says {entry['bytes']} "
                             "(truncated or replaced)")
        shape, dtype, offset = _npy_header(path, f)
        if offset != entry["data_offset"]:
            raise ValueError(f"{path}: data starts at byte {offset}, manifest says {entry['data_offset']}")
        if dtype.str != entry["dtype"] or list(shape) != list(entry["shape"]):
            raise ValueError(f"{path}: holds {dtype.str} {list(shape)}, manifest says "
                             f"{entry['dtype']} {entry['shape']}")
        if verify and _data_crc32(f, offset) != entry["crc32"]:
            raise ValueError(f"{path}: checksum mismatch (crc32 of its data differs from the manifest): corrupt file")
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype)
        try:
            return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot be memory-mapped ({exc})") from None


def as_torch(array: np.ndarray) -> torch.Tensor:
    """Zero-copy torch view of a (read-only, memory-mapped) numpy array.

    torch warns that it cannot protect read-only memory; nothing in the index writes
    through these views (writes would fault), so the warning is silenced here only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def manifest_checksum(body: dict) -> int:
    """crc32 of a manifest's JSON body without its ``checksum`` field (sorted keys)."""
    payload = json.dumps({k: v for k, v in body.items() if k != "checksum"}, sort_keys=True).encode()
    return zlib.crc32(payload)


def write_json_manifest(folder: Path, name: str, body: dict, crash_label: str) -> None:
    """Write a checksummed JSON manifest crash-safely (temp, fsync, rename, fsync dir); the
    index manifest and the sharded index's ``sharded.json`` are both written this way."""
    body = dict(body)
    body["checksum"] = manifest_checksum(body)
    tmp = folder / (name + TMP_SUFFIX)
    try:
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1, sort_keys=True)
            f.write("\n")
        crash_point(crash_label)
        commit_file(tmp, folder / name)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise named_os_error(tmp, exc) from exc


def read_json_manifest(folder: Path, name: str, format_name: str, max_version: int, kind: str) -> dict:
    """Parse and check a manifest written by :func:`write_json_manifest` (format name,
    version, checksum); ValueError naming the file on anything wrong. ``kind`` names the
    folder type in the errors ("index", "sharded index")."""
    path = folder / name
    missing = f"{path}: no {kind} manifest here (not a colbert-engine {kind} folder)"
    if not path.is_file():
        raise ValueError(missing)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(missing) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: corrupt manifest, not valid JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != format_name:
        raise ValueError(f"{path}: not a colbert-engine {kind} manifest (format field {body.get('format')!r})"
                         if isinstance(body, dict) else f"{path}: corrupt manifest (not a JSON object)")
    version = body.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{path}: corrupt manifest (format_version {version!r})")
    if version > max_version:
        raise ValueError(f"{path}: format_version {version} is newer than this colbert-engine reads "
                         f"({max_version}); upgrade colbert-engine")
    if version < 1:
        raise ValueError(f"{path}: format_version {version} is not a known version")
    if body.get("checksum") != manifest_checksum(body):
        raise ValueError(f"{path}: corrupt manifest (checksum mismatch)")
    return body


def format_version_for(bucket_layout: str) -> int:
    """Version 2 marks per-dimension bucket tables and 3 a product-quantized residual
    codebook, so that a reader from before them says "newer than this colbert-engine reads"
    instead of "corrupt"; pooled indexes stay 1 (what every older reader, and colbert-ai's
    layout, read)."""
    return {"per_dim": 2, "codebook": 3}.get(bucket_layout, 1)


def write_manifest(folder: Path, body: dict) -> None:
    """The commit point: write the manifest crash-safely (temp, fsync, rename, fsync dir)."""
    write_json_manifest(folder, MANIFEST, body, "manifest_tmp_written")


def read_manifest(folder: Path) -> dict:
    """Parse and check the manifest; ValueError naming the file on anything wrong."""
    return read_json_manifest(folder, MANIFEST, FORMAT_NAME, FORMAT_VERSION, "index")
