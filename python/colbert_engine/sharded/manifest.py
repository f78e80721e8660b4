"""The sharded index's top-level manifest ``sharded.json``, id routing, shard names.

Layout and rules are in ``FORMAT.md`` beside this file. The manifest is written like an
index manifest (temp file, fsync, rename, fsync folder) and always last: a crash before it
leaves the previous sharded generation (or no sharded index at all, for a build).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from colbert_engine._version import __version__
from colbert_engine.index import format as F
from colbert_engine.index.ids import normalize_id

SHARDED_FORMAT_NAME = "colbert-engine-sharded"
SHARDED_FORMAT_VERSION = 1
SHARDED_MANIFEST = "sharded.json"
ROUTING = "crc32-mod-n"  # shard of an id: crc32(routing key of the id) mod n_shards


def shard_name(i: int) -> str:
    return f"shard-{i:04d}"


def is_sharded(path) -> bool:
    return (Path(path) / SHARDED_MANIFEST).is_file()


def routing_key(doc_id) -> bytes:
    """Bytes hashed for routing: ``i<decimal>`` for an int id, ``s<utf-8>`` for a str id (the
    id database keeps 5 and "5" apart, so the routing does too)."""
    value = normalize_id(doc_id)
    return (b"i%d" % value) if isinstance(value, int) else b"s" + value.encode("utf-8", "surrogatepass")


def shard_of(doc_id, n_shards: int) -> int:
    """Index of the shard that holds (or receives) ``doc_id``; stable across processes."""
    return zlib.crc32(routing_key(doc_id)) % n_shards


def codec_checksum(codec_entries: dict) -> int:
    """crc32 over the codec files' data crc32s in name order: equal codecs, equal checksum."""
    return zlib.crc32(json.dumps([[name, codec_entries[name]["crc32"]] for name in sorted(codec_entries)]).encode())


def _checksum(body: dict) -> int:
    return zlib.crc32(json.dumps({k: v for k, v in body.items() if k != "checksum"}, sort_keys=True).encode())


def write_manifest(folder: Path, body: dict) -> None:
    body = dict(body)
    body["written_by"] = f"colbert-engine {__version__}"
    body["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body["checksum"] = _checksum(body)
    tmp = folder / (SHARDED_MANIFEST + F.TMP_SUFFIX)
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.write("\n")
    F.crash_point("sharded_manifest_tmp_written")
    F.commit_file(tmp, folder / SHARDED_MANIFEST)


def read_manifest(folder: Path) -> dict:
    """Parse and check ``sharded.json``; ValueError naming the file on anything wrong."""
    path = Path(folder) / SHARDED_MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: no sharded index manifest here (not a colbert-engine sharded index folder)")
    try:
        body = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupt manifest, not valid JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != SHARDED_FORMAT_NAME:
        raise ValueError(f"{path}: not a colbert-engine sharded manifest")
    version = body.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: corrupt manifest (format_version {version!r})")
    if version > SHARDED_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version} is newer than this colbert-engine reads "
                         f"({SHARDED_FORMAT_VERSION}); upgrade colbert-engine")
    if body.get("checksum") != _checksum(body):
        raise ValueError(f"{path}: corrupt manifest (checksum mismatch)")
    if body.get("routing") != ROUTING:
        raise ValueError(f"{path}: unknown id routing {body.get('routing')!r}")
    if not body.get("shards"):
        raise ValueError(f"{path}: corrupt manifest (no shards)")
    return body
