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
SHARDED_FORMAT_VERSION = 2  # the newest this reader reads; a build writes sharded_format_version_for()
SHARDED_MANIFEST = "sharded.json"
ROUTING = "crc32-mod-n"  # shard of an id: crc32(routing key of the id) mod n_shards


def sharded_format_version_for(bucket_layout: str) -> int:
    """2 for a shared "codebook" codec (its files differ, so an older reader says "newer"
    instead of failing on a missing file), 1 otherwise."""
    return 2 if bucket_layout == "codebook" else 1


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


def write_manifest(folder: Path, body: dict) -> None:
    body = dict(body)
    body["written_by"] = f"colbert-engine {__version__}"
    body["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    F.write_json_manifest(Path(folder), SHARDED_MANIFEST, body, "sharded_manifest_tmp_written")


def read_manifest(folder: Path) -> dict:
    """Parse and check ``sharded.json``; ValueError naming the file on anything wrong."""
    body = F.read_json_manifest(Path(folder), SHARDED_MANIFEST, SHARDED_FORMAT_NAME, SHARDED_FORMAT_VERSION,
                                "sharded index")
    path = Path(folder) / SHARDED_MANIFEST
    if body.get("routing") != ROUTING:
        raise ValueError(f"{path}: unknown id routing {body.get('routing')!r}")
    if not body.get("shards"):
        raise ValueError(f"{path}: corrupt manifest (no shards)")
    return body
