"""Index.from_colbert on a tiny folder written here in stanford ColBERT's PLAID layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.index.codec import train_codec
from colbert_engine.testing import clustered_collection

DIM, NBITS = 64, 2


def _colbert_decompress(centroids, weights, codes, residuals):
    """ColBERT's CPU decompress, restated: unpack each dimension's bucket (bits least
    significant first, bytes MSB first), C[code] + weights[bucket], L2-normalize."""
    bits = np.unpackbits(residuals.numpy(), axis=1).reshape(len(codes), DIM, NBITS)
    buckets = (bits * (1 << np.arange(NBITS))).sum(-1)
    x = centroids.float()[codes.long()] + weights.float()[torch.from_numpy(buckets)]
    return torch.nn.functional.normalize(x, dim=1)


@pytest.fixture(scope="module")
def colbert_folder(tmp_path_factory):
    data = clustered_collection(n_docs=120, mean_doc_len=25, dim=DIM, n_queries=8, seed=6)
    codec = train_codec(data.doc_emb, data.doc_emb.shape[0], NBITS, bucket_layout="pooled")  # ColBERT's tables
    centroids = codec.centroids.half()  # ColBERT stores its centroids in fp16
    codes, residuals, _ = ops.compress_residuals(data.doc_emb, centroids.float(), codec.bucket_cutoffs,
                                                 codec.bucket_weights, NBITS)
    folder = tmp_path_factory.mktemp("colbert") / "plaid_index"
    folder.mkdir()
    torch.save(centroids, folder / "centroids.pt")
    torch.save((codec.bucket_cutoffs, codec.bucket_weights), folder / "buckets.pt")
    torch.save(torch.tensor([0.05]), folder / "avg_residual.pt")
    lengths = torch.diff(data.doc_offsets)
    split = 70  # two chunks: 0 as torch pickles (older colbert-ai), 1 as raw storage (newer)
    t_split = int(data.doc_offsets[split])
    for chunk, (docs, tokens) in enumerate([(slice(0, split), slice(0, t_split)),
                                            (slice(split, None), slice(t_split, None))]):
        chunk_codes, chunk_res = codes[tokens].long(), residuals[tokens]
        if chunk == 0:
            torch.save(chunk_codes, folder / "0.codes.pt")
            torch.save(chunk_res, folder / "0.residuals.pt")
        else:
            chunk_codes.to(torch.int32).numpy().tofile(folder / "1.codes.pt")
            chunk_res.numpy().tofile(folder / "1.residuals.pt")
        (folder / f"doclens.{chunk}.json").write_text(json.dumps(lengths[docs].tolist()))
        (folder / f"{chunk}.metadata.json").write_text(json.dumps({
            "passage_offset": 0 if chunk == 0 else split, "num_passages": len(lengths[docs]),
            "num_embeddings": chunk_codes.numel(), "codes_size": chunk_codes.numel()}))
    (folder / "metadata.json").write_text(json.dumps({"config": {"dim": DIM, "nbits": NBITS}, "num_chunks": 2,
                                                      "num_embeddings": int(codes.numel())}))
    return folder, data, centroids, codec, codes, residuals


def test_from_colbert_decodes_identically(colbert_folder, tmp_path):
    folder, data, centroids, codec, codes, residuals = colbert_folder
    index = Index.from_colbert(folder, tmp_path / "ours")
    assert index.n_docs == data.n_docs and index.n_tokens == codes.numel()
    seg = index.segments[0]
    assert torch.equal(seg.codes, codes) and torch.equal(seg.residuals, residuals)
    assert torch.equal(seg.doc_offsets, data.doc_offsets)
    theirs = _colbert_decompress(centroids, codec.bucket_weights, codes, residuals)
    ours = ops.decompress_residuals(seg.codes, seg.residuals, index.codec.centroids, index.codec.bucket_weights,
                                    NBITS, inv_norms=seg.inv_norms)
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)  # fp16 inverse norms
    # search: passage ids are 0..n-1, exact scores are MaxSim over ColBERT's decoded vectors
    truth = ops.reference.maxsim(data.queries, theirs, data.doc_offsets)
    for q, results in enumerate(index.search(data.queries, k=5, exact=True)):
        best = truth[q].topk(5)
        assert [d for d, _ in results] == best.indices.tolist()
        np.testing.assert_allclose([s for _, s in results], best.values.numpy(), rtol=2e-3)
    assert index.recall(data.queries, k=5) >= 0.9
    # ivf: ColBERT's optimized ivf.pid lists = unique passages per centroid
    for c in range(0, index.codec.centroids.shape[0], 7):
        want = torch.unique(torch.repeat_interleave(torch.arange(data.n_docs), torch.diff(data.doc_offsets))[codes == c])
        got = seg.ivf[seg.ivf_offsets[c]:seg.ivf_offsets[c + 1]]
        assert torch.equal(got.long(), want)
    index.close()


def test_from_colbert_errors(colbert_folder, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        Index.from_colbert(tmp_path / "nothing", tmp_path / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="metadata.json or plan.json"):
        Index.from_colbert(empty, tmp_path / "y")
    (empty / "plan.json").write_text(json.dumps({"config": {"dim": DIM, "nbits": NBITS}}))
    (empty / "centroids.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="centroids.pt: cannot be read"):
        Index.from_colbert(empty, tmp_path / "z")


def test_from_colbert_malformed_config(tmp_path):
    """Invalid JSON or a config without dim/nbits used to raise a bare JSONDecodeError /
    KeyError: 'dim' that named no file."""
    folder = tmp_path / "colbert"
    folder.mkdir()
    (folder / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json: not valid JSON"):
        Index.from_colbert(folder, tmp_path / "a")
    (folder / "metadata.json").write_text(json.dumps({"config": {"nbits": 2}}))
    with pytest.raises(ValueError, match="metadata.json: no integer config field 'dim'"):
        Index.from_colbert(folder, tmp_path / "b")
    (folder / "metadata.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="metadata.json"):
        Index.from_colbert(folder, tmp_path / "c")


def test_imported_inverse_norms_follow_the_kernels_rule():
    """The import used 1 / clamp_min(norm, 1e-12): a zero vector got 1e12, inf in fp16.
    codec_files.inverse_norms is codec.h's rule: 0 for a zero vector, saturating at 65504,
    and equals the kernel's stored value for ordinary tokens."""
    from colbert_engine.index.codec_files import inverse_norms

    assert inverse_norms(torch.tensor([0.0, 1e-9, 2.0])).tolist() == [0.0, 65504.0, 0.5]
    data = clustered_collection(n_docs=50, mean_doc_len=20, dim=32, n_queries=1, seed=4)
    codec = train_codec(data.doc_emb, data.doc_emb.shape[0], 2, n_centroids=32)
    codes, residuals, stored = ops.compress_residuals(data.doc_emb, codec.centroids, codec.bucket_cutoffs,
                                                      codec.byte_codebook, 2)
    vectors = ops.decompress_residuals(codes, residuals, codec.centroids, codec.byte_codebook, 2, normalize=False)
    got = inverse_norms(vectors.norm(dim=1))
    assert got.dtype == torch.float16
    # the kernel takes 1/sqrtf of a float32 sum of squares: at most one fp16 step apart
    np.testing.assert_allclose(got.float().numpy(), stored.float().numpy(), rtol=2 ** -10)
