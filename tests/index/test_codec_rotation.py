"""The "codebook" codec's learned rotation (index/rotation.py): trained where it lowers the
coding error, applied at the edges (compress, queries, embeddings), stored as
codec.rotation.npy (the identity where none was kept), refused when not orthogonal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.index import codec as C
from colbert_engine.index import format as F
from colbert_engine.index import rotation as R
from colbert_engine.index.codec_files import CODEBOOK_CODEC_FILES

DIM = 32


def _mixed_anisotropic(n: int, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    """Residual-like vectors whose variance decays along axes that a random rotation mixes
    over every dimension: product quantization of the raw dimensions wastes codewords, so a
    rotation pays."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=gen) * torch.logspace(0, -3, dim)
    mix, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    return (z @ mix.T).contiguous()


def _collection(n_docs: int = 120, doc_len: int = 20, seed: int = 1):
    """Unit token vectors around a few centres with mixed anisotropic offsets."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(16, DIM, generator=gen), dim=1)
    n = n_docs * doc_len
    emb = centres[torch.randint(0, 16, (n,), generator=gen)] + 0.3 * _mixed_anisotropic(n, seed=seed)
    emb = torch.nn.functional.normalize(emb, dim=1)
    offsets = torch.arange(0, n + 1, doc_len, dtype=torch.int64)
    queries = torch.nn.functional.normalize(emb[torch.randint(0, n, (6, 8), generator=gen)]
                                            + 0.05 * torch.randn(6, 8, DIM, generator=gen), dim=-1)
    return emb, offsets, queries


def _codebook_for(x: torch.Tensor, nbits: int = 2) -> torch.Tensor:
    return C.train_residual_codebook(x, nbits, iters=6, seed=0)


def test_rotation_lowers_the_coding_error_where_dimensions_are_mixed():
    x = _mixed_anisotropic(4000)
    codebook = _codebook_for(x)

    def retrain(rotated, init):
        return C.train_residual_codebook(rotated, 2, iters=4, seed=0, init=init)

    rotation, rotated_codebook = R.train_rotation(x, 2, codebook, retrain, steps=4)
    assert rotation is not None
    R.check_rotation(rotation, DIM)  # orthogonal
    before = R.coding_error(x, codebook, 2)
    after = R.coding_error(x @ rotation, rotated_codebook, 2)
    assert after <= before * (1 - R.MIN_ERROR_GAIN)


def test_no_rotation_is_kept_without_a_gain(monkeypatch):
    x = _mixed_anisotropic(2000)
    monkeypatch.setattr(R, "MIN_ERROR_GAIN", 1.0)  # nothing can gain 100%
    codebook = _codebook_for(x)
    rotation, kept = R.train_rotation(x, 2, codebook, lambda rotated, init: init, steps=2)
    assert rotation is None and kept is codebook


@pytest.mark.parametrize("bad, match", [
    (torch.eye(DIM)[:, :DIM - 1], "shape"),
    (torch.full((DIM, DIM), float("nan")), "finite"),
    (2.0 * torch.eye(DIM), "orthogonal"),
])
def test_check_rotation_names_the_source(bad, match):
    with pytest.raises(ValueError, match=f"where-it-came-from.*{match}"):
        R.check_rotation(bad, DIM, "where-it-came-from")


def test_compress_applies_the_rotation_in_chunks(monkeypatch):
    emb, _, _ = _collection()
    codec = C.train_codec(emb, emb.shape[0], 2, bucket_layout="codebook", n_centroids=16)
    assert codec.rotation is not None, "the mixed anisotropic collection should keep a rotation"
    monkeypatch.setattr(C, "_ROTATE_ROWS", 333)  # several chunks, the last one short
    got = codec.compress(emb)
    want = ops.compress_residuals(emb @ codec.rotation, codec.centroids, None, codec.residual_codebook, 2)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    # queries go to the same space; unrotate is its inverse
    q = torch.randn(3, 5, DIM)
    torch.testing.assert_close(codec.unrotate(codec.rotate(q)), q, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def rotated_index(tmp_path_factory):
    emb, offsets, queries = _collection()
    path = tmp_path_factory.mktemp("rotated") / "index"
    Index.build(path, emb, offsets, nbits=2, bucket_layout="codebook", ids=[f"d{i}" for i in range(120)]).close()
    return path, emb, offsets, queries


def test_rotated_index_scores_the_decoded_vectors(rotated_index):
    path, emb, offsets, queries = rotated_index
    with Index.open(path, verify=True) as index:
        assert index.codec.rotation is not None
        ids = [f"d{i}" for i in range(120)]
        decoded = torch.cat(index.embeddings(ids))  # back in the caller's space
        # close to the vectors that were indexed (2-bit codes)
        assert float((decoded * emb).sum(1).mean()) > 0.9
        want_scores, want_ids = ops.maxsim_topk(queries, decoded, offsets, 5)
        got = index.search(queries, k=5, exact=True)
        assert [[int(i[1:]) for i, _ in r] for r in got] == want_ids.tolist()
        np.testing.assert_allclose([[s for _, s in r] for r in got], want_scores.numpy(), rtol=1e-4, atol=1e-4)
        # the funnel ranks in the same space: its top hit is the exact top hit
        assert [r[0][0] for r in index.search(queries, k=5)] == [r[0][0] for r in got]


def test_rotation_file_round_trips(rotated_index, tmp_path):
    path, emb, offsets, _ = rotated_index
    stored = np.load(path / CODEBOOK_CODEC_FILES["rotation"])
    with Index.open(path) as index:
        assert torch.equal(index.codec.rotation, torch.from_numpy(stored))
    # a codec trained without a rotation stores the identity and opens with none
    codec = C.train_codec(emb, emb.shape[0], 2, bucket_layout="codebook", n_centroids=16, rotate=False)
    with Index.build(tmp_path / "plain", emb, offsets, nbits=2, codec=codec) as index:
        assert index.codec.rotation is None
    assert np.array_equal(np.load(tmp_path / "plain" / CODEBOOK_CODEC_FILES["rotation"]), np.eye(DIM, dtype=np.float32))
    with Index.open(tmp_path / "plain") as index:
        assert index.codec.rotation is None


def test_non_orthogonal_rotation_file_is_refused(rotated_index, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(rotated_index[0], path)
    body = json.loads((path / F.MANIFEST).read_text())
    name = CODEBOOK_CODEC_FILES["rotation"]
    body["codec"][name] = F.write_npy(path, name, 1.5 * torch.eye(DIM))
    body.pop("checksum", None)
    F.write_manifest(path, body)
    with pytest.raises(ValueError, match=r"codec\.rotation\.npy.*orthogonal"):
        Index.open(path)


def test_isotropic_residuals_keep_no_rotation_and_stop_early():
    # no direction to align: the alternation stops after EARLY_STOP_STEPS steps, identity kept
    x = torch.randn(3000, DIM, generator=torch.Generator().manual_seed(9))
    codebook = C.train_residual_codebook(x, 2, iters=30, seed=0)  # converged: re-training gains nothing
    calls = []

    def retrain(rotated, init):
        calls.append(1)
        return C.train_residual_codebook(rotated, 2, iters=3, seed=0, init=init)

    rotation, kept = R.train_rotation(x, 2, codebook, retrain, steps=6)
    assert rotation is None and kept is codebook
    assert len(calls) == R.EARLY_STOP_STEPS
