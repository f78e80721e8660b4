"""The codec's bucket layout on disk: per-dimension tables, pooled tables (ColBERT's; every
older index), the manifest's ``bucket_layout`` field and the checks that refuse bad tables
naming the file. (The default for new builds, ``"codebook"``: test_codec_codebook.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.index import format as F
from colbert_engine.index.codec import DEFAULT_BUCKET_LAYOUT, train_codec
from colbert_engine.index.codec_files import CODEC_FILES

ROOT = Path(__file__).resolve().parents[2]


def _manifest(path: Path) -> dict:
    return json.loads((path / F.MANIFEST).read_text())


def _ids(results):
    return [[i for i, _ in r] for r in results]


@pytest.fixture(scope="module")
def per_dim_index(collection, tmp_path_factory):
    """A read-only 2-bit index with per-dimension bucket tables."""
    path = tmp_path_factory.mktemp("per_dim") / "base"
    Index.build(path, collection.doc_emb, collection.doc_offsets, ids=[f"doc-{i}" for i in range(collection.n_docs)],
                nbits=2, bucket_layout="per_dim").close()
    return path


@pytest.fixture
def index_copy(per_dim_index, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(per_dim_index, path)
    return path


def test_per_dim_build_round_trips(per_dim_index, collection, tmp_path):
    assert DEFAULT_BUCKET_LAYOUT == "codebook"
    built_index = per_dim_index
    body = _manifest(built_index)
    assert body["bucket_layout"] == "per_dim"
    dim, levels = body["dim"], 1 << body["nbits"]
    assert body["codec"][CODEC_FILES["bucket_cutoffs"]]["shape"] == [dim, levels - 1]
    assert body["codec"][CODEC_FILES["bucket_weights"]]["shape"] == [dim, levels]
    queries = collection.queries[:6]
    with Index.open(built_index, verify=True) as index:
        codec = index.codec
        assert codec.bucket_layout == "per_dim" and codec.bucket_weights.shape == (dim, levels)
        assert index.stats()["bucket_layout"] == "per_dim"
        exact = index.search(queries, k=10, exact=True)
        default = index.search(queries, k=10)
    # a copy (no process state) answers the same, and add() compresses with the same tables
    shutil.copytree(built_index, tmp_path / "copy")
    with Index.open(tmp_path / "copy") as index:
        assert _ids(index.search(queries, k=10, exact=True)) == _ids(exact)
        assert _ids(index.search(queries, k=10)) == _ids(default)
        n = 5
        index.add(collection.doc_emb[: int(collection.doc_offsets[n])], collection.doc_offsets[: n + 1],
                  ids=[f"new-{i}" for i in range(n)])
    with Index.open(tmp_path / "copy") as index:
        assert _manifest(tmp_path / "copy")["bucket_layout"] == "per_dim"
        hits = index.search(collection.doc_emb[int(collection.doc_offsets[2]):int(collection.doc_offsets[3])],
                            k=2, exact=True)
        assert {"doc-2", "new-2"} == {i for i, _ in hits}


def test_exact_search_scores_the_per_dim_decode(collection, tmp_path):
    # Ground truth from the library's own pieces: decompress with the stored per-dimension
    # weights and inverse norms, then exhaustive MaxSim; exact=True must agree.
    n_docs = 120
    end = int(collection.doc_offsets[n_docs])
    emb, offsets = collection.doc_emb[:end], collection.doc_offsets[: n_docs + 1]
    with Index.build(tmp_path / "i", emb, offsets, nbits=2, bucket_layout="per_dim") as index:
        codec, seg = index.codec, index.segments[0]
        assert codec.bucket_layout == "per_dim"
        decoded = ops.decompress_residuals(seg.codes, seg.residuals, codec.centroids, codec.bucket_weights,
                                           codec.nbits, inv_norms=seg.inv_norms)
        queries = collection.queries[:5]
        want_scores, want_ids = ops.maxsim_topk(queries, decoded, seg.doc_offsets, 5)
        got = index.search(queries, k=5, exact=True)
        assert _ids(got) == want_ids.tolist()
        np.testing.assert_allclose([[s for _, s in r] for r in got], want_scores.numpy(), rtol=1e-5, atol=1e-5)


def test_pooled_codec_builds_a_pooled_index(collection, tmp_path):
    n_docs = 80
    end = int(collection.doc_offsets[n_docs])
    emb, offsets = collection.doc_emb[:end], collection.doc_offsets[: n_docs + 1]
    codec = train_codec(emb, end, 2, bucket_layout="pooled")
    assert codec.bucket_layout == "pooled" and codec.bucket_weights.shape == (4,)
    with Index.build(tmp_path / "p", emb, offsets, nbits=2, codec=codec) as index:
        assert index.codec.bucket_layout == "pooled"
        before = index.search(collection.queries[:3], k=5)
    assert _manifest(tmp_path / "p")["bucket_layout"] == "pooled"
    assert _manifest(tmp_path / "p")["format_version"] == 1  # what every older reader opens
    with Index.open(tmp_path / "p") as index:
        assert index.codec.bucket_layout == "pooled" and _ids(index.search(collection.queries[:3], k=5)) == \
            _ids(before)


def test_build_takes_the_layout(collection, tmp_path):
    n_docs = 60
    end = int(collection.doc_offsets[n_docs])
    emb, offsets = collection.doc_emb[:end], collection.doc_offsets[: n_docs + 1]
    with Index.build(tmp_path / "p", emb, offsets, bucket_layout="pooled") as index:
        assert index.codec.bucket_layout == "pooled" and index.stats()["format_version"] == 1
    batches = [(emb[: int(offsets[30])], offsets[:31])]  # a stream is trained the same way
    with Index.build(tmp_path / "s", iter(batches), bucket_layout="pooled") as index:
        assert index.codec.bucket_layout == "pooled"
    with pytest.raises(ValueError, match="bucket_layout"):
        Index.build(tmp_path / "bad", emb, offsets, bucket_layout="per-dim")
    codec = train_codec(emb, end, 2, bucket_layout="pooled")
    with pytest.raises(ValueError, match="bucket_layout"):
        Index.build(tmp_path / "mismatch", emb, offsets, codec=codec, bucket_layout="per_dim")


def test_per_dim_index_is_version_2_and_older_readers_say_newer(per_dim_index, monkeypatch):
    built_index = per_dim_index
    assert _manifest(built_index)["format_version"] == 2
    monkeypatch.setattr(F, "FORMAT_VERSION", 1)  # a reader from before per-dimension tables
    with pytest.raises(ValueError, match="newer than this colbert-engine reads"):
        Index.open(built_index)


def test_committed_version_1_folder_reads_as_pooled(tmp_path):
    shutil.copytree(ROOT / "tests" / "index" / "data" / "v1", tmp_path / "v1")
    assert "bucket_layout" not in _manifest(tmp_path / "v1")
    with Index.open(tmp_path / "v1") as index:
        assert index.codec.bucket_layout == "pooled" and index.stats()["bucket_layout"] == "pooled"
        assert index.codec.bucket_cutoffs.dim() == 1


def test_bad_training_arguments():
    emb = torch.nn.functional.normalize(torch.randn(200, 16), dim=1)
    with pytest.raises(ValueError, match="bucket_layout"):
        train_codec(emb, 200, 2, bucket_layout="per_token")
    with pytest.raises(ValueError, match="lloyd_iters"):
        train_codec(emb, 200, 2, lloyd_iters=-2)


# ----------------------------------------------------------------------------- refused


def _rewrite_table(path: Path, key: str, array: np.ndarray, layout: str | None = "keep") -> None:
    """Replace a codec array and re-commit the manifest (valid checksums), so only the
    table's content or the layout field is wrong."""
    body = _manifest(path)
    name = CODEC_FILES[key]
    body["codec"][name] = F.write_npy(path, name, torch.from_numpy(np.ascontiguousarray(array)))
    if layout is None:
        body.pop("bucket_layout", None)
    elif layout != "keep":
        body["bucket_layout"] = layout
    body.pop("checksum", None)
    F.write_manifest(path, body)


def _cutoffs(path: Path) -> np.ndarray:
    return np.load(path / CODEC_FILES["bucket_cutoffs"]).copy()


@pytest.mark.parametrize("verify", [True, False])
def test_decreasing_cutoff_row_is_refused_naming_the_file(index_copy, verify):
    cutoffs = _cutoffs(index_copy)
    cutoffs[5] = cutoffs[5][::-1] + np.array([0.0, 0.0, 1.0], dtype=np.float32)
    _rewrite_table(index_copy, "bucket_cutoffs", cutoffs)
    with pytest.raises(ValueError, match=r"codec\.bucket_cutoffs\.npy.*non-decreasing"):
        Index.open(index_copy, verify=verify)


def test_non_finite_weights_are_refused_naming_the_file(index_copy):
    weights = np.load(index_copy / CODEC_FILES["bucket_weights"]).copy()
    weights[3, 1] = np.inf
    _rewrite_table(index_copy, "bucket_weights", weights)
    with pytest.raises(ValueError, match=r"codec\.bucket_weights\.npy.*non-finite"):
        Index.open(index_copy)


def test_layout_and_shapes_must_agree(index_copy):
    # per-dimension arrays under a manifest that says pooled (or says nothing): refused at
    # the manifest check, naming the manifest
    _rewrite_table(index_copy, "bucket_cutoffs", _cutoffs(index_copy), layout="pooled")
    with pytest.raises(ValueError, match=r"manifest\.json.*codec\.bucket_cutoffs\.npy has shape"):
        Index.open(index_copy)
    _rewrite_table(index_copy, "bucket_cutoffs", _cutoffs(index_copy), layout=None)
    with pytest.raises(ValueError, match=r"manifest\.json.*codec\.bucket_cutoffs\.npy has shape"):
        Index.open(index_copy)
    _rewrite_table(index_copy, "bucket_cutoffs", _cutoffs(index_copy), layout="per_token")
    with pytest.raises(ValueError, match=r"manifest\.json.*bucket_layout"):
        Index.open(index_copy)
    # pooled-shaped arrays under per_dim
    _rewrite_table(index_copy, "bucket_cutoffs", _cutoffs(index_copy)[0], layout="per_dim")
    with pytest.raises(ValueError, match=r"manifest\.json.*codec\.bucket_cutoffs\.npy has shape"):
        Index.open(index_copy)
