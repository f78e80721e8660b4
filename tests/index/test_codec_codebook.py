"""The product-quantized codec layout on disk (``bucket_layout: "codebook"``): its files,
format_version 3, round trips through build / open / add / search, older readers saying
"newer", and bad codebook files refused naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.index import codec as C
from colbert_engine.index import format as F
from colbert_engine.index.codec_files import CODEBOOK_CODEC_FILES, CODEC_FILES

N_DOCS = 200


def _manifest(path: Path) -> dict:
    return json.loads((path / F.MANIFEST).read_text())


def _ids(results):
    return [[i for i, _ in r] for r in results]


@pytest.fixture(scope="module")
def codebook_index(collection, tmp_path_factory):
    """A read-only 2-bit "codebook" index over the first documents of the collection."""
    path = tmp_path_factory.mktemp("codebook") / "base"
    end = int(collection.doc_offsets[N_DOCS])
    Index.build(path, collection.doc_emb[:end], collection.doc_offsets[:N_DOCS + 1], nbits=2,
                ids=[f"doc-{i}" for i in range(N_DOCS)], bucket_layout="codebook").close()
    return path


def test_codebook_index_files_and_version(codebook_index, collection):
    body = _manifest(codebook_index)
    assert body["bucket_layout"] == "codebook" and body["format_version"] == 3
    dim = body["dim"]
    assert set(body["codec"]) == set(CODEBOOK_CODEC_FILES.values())
    assert body["codec"][CODEBOOK_CODEC_FILES["residual_codebook"]]["shape"] == [dim * 2 // 8, 256, 4]
    for name in (CODEC_FILES["bucket_cutoffs"], CODEC_FILES["bucket_weights"]):
        assert not (codebook_index / name).exists()
    with Index.open(codebook_index, verify=True) as index:
        codec = index.codec
        assert codec.bucket_layout == "codebook" and codec.bucket_cutoffs is None
        assert codec.byte_codebook is codec.residual_codebook
        assert index.stats()["bucket_layout"] == "codebook" and index.stats()["format_version"] == 3


def test_exact_search_scores_the_codebook_decode(codebook_index, collection):
    # ground truth from the library's pieces: decompress with the stored codebook and
    # inverse norms, then exhaustive MaxSim; exact=True and the LUT path must agree
    with Index.open(codebook_index) as index:
        codec, seg = index.codec, index.segments[0]
        decoded = ops.decompress_residuals(seg.codes, seg.residuals, codec.centroids, codec.residual_codebook,
                                           codec.nbits, inv_norms=seg.inv_norms)
        queries = collection.queries[:5]
        # decoded vectors live in the codec's space (a learned rotation, index/rotation.py)
        want_scores, want_ids = ops.maxsim_topk(codec.rotate(queries), decoded, seg.doc_offsets, 5)
        got = index.search(queries, k=5, exact=True)
        assert [[int(i.split("-")[1]) for i in r] for r in _ids(got)] == want_ids.tolist()
        np.testing.assert_allclose([[s for _, s in r] for r in got], want_scores.numpy(), rtol=1e-5, atol=1e-5)
        # the residual bytes are the nearest codewords of the original vectors' residuals
        emb = collection.doc_emb[:int(collection.doc_offsets[N_DOCS])]
        codes, packed, inv = ops.compress_residuals(codec.rotate(emb), codec.centroids, None,
                                                    codec.residual_codebook, 2)
        agree = (codes == seg.codes) & (packed == seg.residuals).all(dim=1)
        assert float(agree.float().mean()) > 0.99  # the build's probed argmax may differ on near-ties


def test_codebook_index_copy_add_and_reopen(codebook_index, collection, tmp_path):
    queries = collection.queries[:6]
    with Index.open(codebook_index) as index:
        exact, default = index.search(queries, k=10, exact=True), index.search(queries, k=10)
    shutil.copytree(codebook_index, tmp_path / "copy")
    with Index.open(tmp_path / "copy") as index:
        assert _ids(index.search(queries, k=10, exact=True)) == _ids(exact)
        assert _ids(index.search(queries, k=10)) == _ids(default)
        lo, hi = int(collection.doc_offsets[N_DOCS]), int(collection.doc_offsets[N_DOCS + 5])
        index.add(collection.doc_emb[lo:hi], collection.doc_offsets[N_DOCS:N_DOCS + 6] - lo,
                  ids=[f"new-{i}" for i in range(5)])
    body = _manifest(tmp_path / "copy")
    assert body["bucket_layout"] == "codebook" and body["format_version"] == 3 and len(body["segments"]) == 2
    with Index.open(tmp_path / "copy", verify=True) as index:
        own = collection.doc_emb[int(collection.doc_offsets[N_DOCS + 2]):int(collection.doc_offsets[N_DOCS + 3])]
        assert index.search(own, k=1, exact=True)[0][0] == "new-2"


def test_codebook_codec_given_to_build(collection, tmp_path):
    end = int(collection.doc_offsets[60])
    emb, offsets = collection.doc_emb[:end], collection.doc_offsets[:61]
    codec = C.train_codec(emb, end, 4, bucket_layout="codebook", n_centroids=32)
    assert codec.bucket_layout == "codebook" and codec.residual_codebook.shape == (32, 256, 2)
    with pytest.raises(ValueError, match="bucket_layout"):
        Index.build(tmp_path / "mismatch", emb, offsets, nbits=4, codec=codec, bucket_layout="per_dim")
    with Index.build(tmp_path / "c", emb, offsets, nbits=4, codec=codec) as index:
        assert index.codec.bucket_layout == "codebook" and index.stats()["format_version"] == 3
        assert torch.equal(index.codec.residual_codebook, codec.residual_codebook)


def test_older_readers_say_newer(codebook_index, monkeypatch):
    monkeypatch.setattr(F, "FORMAT_VERSION", 2)  # a reader from before product-quantized codecs
    with pytest.raises(ValueError, match="newer than this colbert-engine reads"):
        Index.open(codebook_index)


def test_default_build_is_codebook(built_index):
    assert C.DEFAULT_BUCKET_LAYOUT == "codebook" and C.default_bucket_layout(4) == "codebook"
    assert _manifest(built_index)["format_version"] == 3
    with Index.open(built_index, verify=True) as index:
        assert index.codec.bucket_layout == "codebook"
        assert index.codec.byte_codebook.shape == (index.codec.dim * 2 // 8, 256, 4)


# ----------------------------------------------------------------------------- refused


def _rewrite_codebook(path: Path, array: np.ndarray, layout: str = "codebook") -> None:
    body = _manifest(path)
    name = CODEBOOK_CODEC_FILES["residual_codebook"]
    body["codec"][name] = F.write_npy(path, name, torch.from_numpy(np.ascontiguousarray(array)))
    body["bucket_layout"] = layout
    body.pop("checksum", None)
    F.write_manifest(path, body)


@pytest.fixture
def codebook_copy(codebook_index, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(codebook_index, path)
    return path


@pytest.mark.parametrize("verify", [True, False])
def test_non_finite_codebook_is_refused_naming_the_file(codebook_copy, verify):
    codebook = np.load(codebook_copy / CODEBOOK_CODEC_FILES["residual_codebook"]).copy()
    codebook[3, 17, 1] = np.nan
    _rewrite_codebook(codebook_copy, codebook)
    with pytest.raises(ValueError, match=r"codec\.residual_codebook\.npy.*finite"):
        Index.open(codebook_copy, verify=verify)


def test_codebook_of_the_wrong_shape_or_layout_is_refused(codebook_copy):
    codebook = np.load(codebook_copy / CODEBOOK_CODEC_FILES["residual_codebook"]).copy()
    _rewrite_codebook(codebook_copy, codebook[:, :128])
    with pytest.raises(ValueError, match=r"manifest\.json.*codec\.residual_codebook\.npy has shape"):
        Index.open(codebook_copy)
    # the codebook's files under a manifest that says per_dim: the codec names are wrong
    _rewrite_codebook(codebook_copy, codebook, layout="per_dim")
    with pytest.raises(ValueError, match=r"manifest\.json.*codec names"):
        Index.open(codebook_copy)


def test_codebook_training_arguments(collection):
    emb = collection.doc_emb[:3000]
    with pytest.raises(ValueError, match="codebook_tokens"):
        C.train_codec(emb, 3000, 2, bucket_layout="codebook", codebook_tokens=0)
    small = C.train_codec(emb, 3000, 2, bucket_layout="codebook", codebook_tokens=500, n_centroids=16)
    again = C.train_codec(emb, 3000, 2, bucket_layout="codebook", codebook_tokens=500, n_centroids=16)
    assert torch.equal(small.residual_codebook, again.residual_codebook)  # seeded
    assert small.bucket_layout == "codebook" and small.bucket_weights is None
