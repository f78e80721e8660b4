"""Encoder behaviour on tiny random checkpoints: token layouts (markers, query augmentation,
skiplist), Matryoshka dims, length bucketing and input order, batch-size invariance, edge
inputs, and the checkpoint layouts (Jina, Stanford, PyLate, plain encoders)."""

from __future__ import annotations

import json
import string

import pytest
import torch
import torch.nn.functional as F

import colbert_engine
from colbert_engine.model import Encoder
from tiny_checkpoints import WORDS, write_checkpoint

TEXTS = [
    "the physics of light and energy.",
    "hello world",
    "",
    "data , memory ; system !",
    "привет мир данные 日本語 テキスト 中文 عربي हिन्दी ελληνικά",
    " ".join(WORDS * 20),
    "time",
    "a wave of electron field theory in space? the speed of light, the speed of time...",
]


@pytest.fixture(scope="module")
def jina_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jina")
    write_checkpoint(folder, layout="jina", head_dim=128, layers=2, hidden=64, heads=4, ffn=96)
    return folder


@pytest.fixture(scope="module")
def jina(jina_dir):
    return Encoder.from_pretrained(jina_dir, device="cpu")


def test_lazy_export():
    assert colbert_engine.Encoder is Encoder


def test_jina_defaults(jina):
    s = jina.settings
    assert jina.family == "jina"
    assert (s.query_marker, s.document_marker) == ("[QueryMarker]", "[DocumentMarker]")
    assert (s.query_length, s.document_length, s.attend_to_expansion_tokens) == (32, 512, True)
    assert jina.dim == 128 and jina.head_weight.shape == (128, 64)


def test_query_layout(jina):
    tok = jina.colbert_tokenizer
    ids, attention, valid = tok.queries(["hello world", " ".join(["time"] * 100)])
    vocab = jina.tokenizer.get_vocab()
    assert ids.shape == (2, 32)
    assert list(ids[0, :5]) == [vocab["<s>"], vocab["[QueryMarker]"], vocab["hello"], vocab["world"], vocab["</s>"]]
    assert (ids[0, 5:] == vocab["<mask>"]).all()
    assert attention.all() and valid.all()  # Jina: mask tokens attended, all rows kept
    assert ids[1, 0] == vocab["<s>"] and ids[1, -1] == vocab["</s>"] and (ids[1, 2:-1] == vocab["time"]).all()


def test_document_layout_and_skiplist(jina):
    tok = jina.colbert_tokenizer
    vocab = jina.tokenizer.get_vocab()
    (seq,) = tok.documents(["data , memory!"])
    assert seq == [vocab["<s>"], vocab["[DocumentMarker]"], vocab["data"], vocab[","], vocab["memory"], vocab["!"],
                   vocab["</s>"]]
    assert set(tok.skiplist_ids) == {vocab[c] for c in string.punctuation}
    emb, offsets = jina.encode_documents(["data , memory!", "data memory"])
    assert offsets.tolist() == [0, 5, 10]  # punctuation dropped: both documents keep 5 tokens
    long_doc = " ".join(["time"] * 1000)
    _, offsets = jina.encode_documents([long_doc])
    assert offsets.tolist() == [0, 512]


def test_outputs_are_unit_vectors_and_dtypes(jina):
    q = jina.encode_queries(TEXTS)
    assert q.shape == (len(TEXTS), 32, 128) and q.dtype == torch.float32
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(q.shape[:2]))
    emb, offsets = jina.encode_documents(TEXTS)
    assert emb.dtype == torch.float32 and offsets.dtype == torch.int64 and offsets.shape == (len(TEXTS) + 1,)
    assert emb.shape == (int(offsets[-1]), 128)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(emb.shape[0]))
    lengths = offsets.diff()
    assert lengths[2] == 3  # empty string: <s> [DocumentMarker] </s>
    assert lengths[5] == 512  # long input truncated to document_length
    assert lengths[4] == 3 + 9  # non-Latin words are ordinary tokens
    assert jina.tokenizer.token_to_id("<unk>") not in jina.colbert_tokenizer.documents([TEXTS[4]])[0]


def test_documents_match_direct_computation(jina):
    """Packed output == the transformer + head + normalisation, token by token."""
    tok = jina.colbert_tokenizer
    emb, offsets = jina.encode_documents(TEXTS)
    skip = set(tok.skiplist_ids)
    for i, seq in enumerate(tok.documents(TEXTS)):
        ids = torch.tensor([seq])
        with torch.no_grad():
            hidden = jina.model(ids, torch.ones_like(ids, dtype=torch.bool))[0]
        vec = F.normalize(hidden @ jina.head_weight.T, dim=-1)
        keep = torch.tensor([t not in skip for t in seq])
        torch.testing.assert_close(emb[offsets[i]:offsets[i + 1]], vec[keep], atol=2e-5, rtol=1e-4)


def test_order_restored_and_batch_size_invariance(jina):
    ref_q = jina.encode_queries(TEXTS, batch_size=1)
    ref_emb, ref_off = jina.encode_documents(TEXTS, batch_size=1)
    for bs in (3, 100):
        torch.testing.assert_close(jina.encode_queries(TEXTS, batch_size=bs), ref_q, atol=1e-5, rtol=0)
        emb, off = jina.encode_documents(TEXTS, batch_size=bs)
        assert torch.equal(off, ref_off)
        torch.testing.assert_close(emb, ref_emb, atol=1e-5, rtol=0)
    emb, off = jina.encode_documents(TEXTS, batch_size=4, show_progress=True)
    assert torch.equal(off, ref_off)
    torch.testing.assert_close(emb, ref_emb, atol=1e-5, rtol=0)
    # documents one by one, concatenated, equal the batched packed output
    singles = [jina.encode_documents([t])[0] for t in TEXTS]
    torch.testing.assert_close(torch.cat(singles), ref_emb, atol=1e-5, rtol=0)
    # a tiny token budget forces one document per batch and still gives the same result
    old = jina.max_tokens_per_batch
    try:
        jina.max_tokens_per_batch = 1
        emb, off = jina.encode_documents(TEXTS, batch_size=8)
    finally:
        jina.max_tokens_per_batch = old
    assert torch.equal(off, ref_off)
    torch.testing.assert_close(emb, ref_emb, atol=1e-5, rtol=0)


def test_length_bucketing(jina):
    lengths = torch.tensor([5, 100, 7, 100, 3, 50]).numpy()
    jina.max_tokens_per_batch = 210
    try:
        batches = jina._batches(lengths, batch_size=3)
    finally:
        jina.max_tokens_per_batch = 8192
    assert [list(b) for b in batches] == [[1, 3], [5, 2, 0], [4]]


def test_empty_inputs(jina):
    assert jina.encode_queries([]).shape == (0, 32, 128)
    emb, off = jina.encode_documents([])
    assert emb.shape == (0, 128) and off.tolist() == [0]


@pytest.mark.parametrize("dim", [96, 64])
def test_matryoshka_dims(jina_dir, jina, dim):
    small = Encoder.from_pretrained(jina_dir, device="cpu", dim=dim)
    full_q = jina.encode_queries(TEXTS[:3])
    torch.testing.assert_close(small.encode_queries(TEXTS[:3]), F.normalize(full_q[..., :dim], dim=-1),
                               atol=1e-5, rtol=1e-4)
    # the first `dim` coordinates of the projection, renormalised
    emb, off = small.encode_documents(TEXTS)
    tok = jina.colbert_tokenizer
    seq = tok.documents([TEXTS[0]])[0]
    ids = torch.tensor([seq])
    with torch.no_grad():
        hidden = jina.model(ids, torch.ones_like(ids, dtype=torch.bool))[0]
    vec = F.normalize((hidden @ jina.head_weight.T)[:, :dim], dim=-1)
    keep = torch.tensor([t not in set(tok.skiplist_ids) for t in seq])
    assert emb.shape[1] == dim
    torch.testing.assert_close(emb[: off[1]], vec[keep], atol=2e-5, rtol=1e-4)
    q = small.encode_queries(TEXTS[:2])
    assert q.shape == (2, 32, dim)


def test_bad_dim(jina_dir):
    with pytest.raises(ValueError, match="matryoshka_dimensions"):
        Encoder.from_pretrained(jina_dir, device="cpu", dim=100)
    with pytest.raises(ValueError, match="dim"):
        Encoder.from_pretrained(jina_dir, device="cpu", dim=256)


def test_query_augmentation_attention(jina_dir, jina):
    """Mask tokens attended (Jina) change the real tokens' vectors; not attended, the real
    tokens see only the query itself."""
    off = Encoder.from_pretrained(jina_dir, device="cpu", attend_to_expansion_tokens=False)
    q_on = jina.encode_queries(["hello world"])
    q_off = off.encode_queries(["hello world"])
    # without attention to mask tokens the real tokens equal an unpadded encoding
    ids = torch.from_numpy(jina.colbert_tokenizer.queries(["hello world"])[0][:1, :5])
    with torch.no_grad():
        hidden = jina.model(ids, None)[0]
    direct = F.normalize(hidden @ jina.head_weight.T, dim=-1)
    torch.testing.assert_close(q_off[0, :5], direct, atol=2e-5, rtol=1e-4)
    assert (q_on[0, :5] - direct).abs().max() > 1e-3
    # no expansion: rows past the query are zero
    plain = Encoder.from_pretrained(jina_dir, device="cpu", query_expansion=False)
    q = plain.encode_queries(["hello world"])
    assert q[0, 5:].abs().max() == 0
    torch.testing.assert_close(q[0, :5], direct, atol=2e-5, rtol=1e-4)


def test_length_overrides_and_markers(jina_dir):
    enc = Encoder.from_pretrained(jina_dir, device="cpu", query_length=8, document_length=6, document_marker=None)
    assert enc.encode_queries(["hello"]).shape == (1, 8, 128)
    (seq,) = enc.colbert_tokenizer.documents(["time time time time time time"])
    vocab = enc.tokenizer.get_vocab()
    assert seq == [vocab["<s>"]] + [vocab["time"]] * 4 + [vocab["</s>"]]
    with pytest.raises(ValueError, match="document_length"):
        Encoder.from_pretrained(jina_dir, device="cpu", document_length=9000)
    with pytest.raises(Exception, match="query_marker"):
        Encoder.from_pretrained(jina_dir, device="cpu", query_marker="[NoSuchToken]")
    with pytest.raises(TypeError, match="unknown arguments"):
        Encoder.from_pretrained(jina_dir, device="cpu", query_lenght=8)


def test_non_string_inputs(jina):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        jina.encode_documents(["ok", 3])
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        jina.encode_queries([None])
    with pytest.raises(TypeError, match="single str"):
        jina.encode_queries("a query")
    with pytest.raises(ValueError, match="batch_size"):
        jina.encode_documents(["x"], batch_size=0)


# ----------------------------------------------------------------------------- other layouts


def test_stanford_colbert_layout(tmp_path):
    """HF_ColBERT: ``bert.`` names, ``linear.weight`` head, pytorch_model.bin and the
    settings in artifact.metadata."""
    write_checkpoint(tmp_path, layout="bert", head_dim=32, weights="bin", prefix="bert.",
                     architectures=["HF_ColBERT"])
    (tmp_path / "artifact.metadata").write_text(json.dumps(
        {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 16, "doc_maxlen": 40,
         "attend_to_mask_tokens": False, "dim": 32}))
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.family == "stanford" and enc.dim == 32
    s = enc.settings
    assert (s.query_marker, s.document_marker, s.query_length, s.document_length) == ("[unused0]", "[unused1]", 16, 40)
    vocab = enc.tokenizer.get_vocab()
    ids, attention, _ = enc.colbert_tokenizer.queries(["hello"])
    assert list(ids[0, :4]) == [vocab["[CLS]"], vocab["[unused0]"], vocab["hello"], vocab["[SEP]"]]
    assert (ids[0, 4:] == vocab["[MASK]"]).all() and not attention[0, 4:].any()
    assert enc.encode_queries(["hello"]).shape == (1, 16, 32)
    emb, off = enc.encode_documents(["hello world", "time"])
    assert off.tolist() == [0, 5, 9]


def test_pylate_layout(tmp_path):
    """sentence-transformers / PyLate: projection in 1_Dense, settings in
    config_sentence_transformers.json."""
    from safetensors.torch import save_file

    write_checkpoint(tmp_path, layout="bert", head_dim=0, hidden=32)
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 12, "document_length": 30,
         "attend_to_expansion_tokens": False, "skiplist_words": [",", "."]}))
    (tmp_path / "1_Dense").mkdir()
    (tmp_path / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 24, "bias": False,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    weight = torch.randn(24, 32)
    save_file({"linear.weight": weight}, str(tmp_path / "1_Dense" / "model.safetensors"))
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.dim == 24 and torch.equal(enc.head_weight, weight)
    assert enc.settings.query_length == 12 and enc.settings.document_length == 30
    vocab = enc.tokenizer.get_vocab()
    assert enc.colbert_tokenizer.skiplist_ids == sorted([vocab[","], vocab["."]])
    emb, off = enc.encode_documents(["hello, world! time."])
    assert off.tolist() == [0, 7]  # <s> [D] hello world ! time </s>: "!" is not in this skiplist


def test_plain_encoder_has_no_head_and_no_markers(tmp_path):
    write_checkpoint(tmp_path, layout="bert", head_dim=0, hidden=32)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.family == "plain" and enc.head_weight is None and enc.dim == 32
    assert enc.settings.query_marker is None and enc.settings.document_marker is None
    assert not enc.settings.query_expansion
    q = enc.encode_queries(["hello world"])
    assert q.shape == (1, 32, 32) and q[0, 4:].abs().max() == 0 and q[0, :4].norm(dim=-1).min() > 0.99
    seq = enc.colbert_tokenizer.documents(["hello"])[0]
    vocab = enc.tokenizer.get_vocab()
    assert seq == [vocab["[CLS]"], vocab["hello"], vocab["[SEP]"]]
    emb, off = enc.encode_documents(["hello world"])
    ids = torch.tensor([enc.colbert_tokenizer.documents(["hello world"])[0]])
    with torch.no_grad():
        hidden = enc.model(ids, None)[0]
    torch.testing.assert_close(emb, F.normalize(hidden, dim=-1), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="no ColBERT projection head"):
        Encoder.from_pretrained(tmp_path, device="cpu", dim=16)
    marked = Encoder.from_pretrained(tmp_path, device="cpu", query_marker="[unused0]", document_marker="[unused1]")
    assert marked.colbert_tokenizer.documents(["hello"])[0][1] == vocab["[unused1]"]


def test_lengths_and_truncate_dim_from_config_json(tmp_path):
    write_checkpoint(tmp_path, layout="jina", head_dim=128, query_maxlen=16, doc_maxlen=100, truncate_dim=96)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert (enc.settings.query_length, enc.settings.document_length, enc.dim) == (16, 100, 96)
    other = Encoder.from_pretrained(tmp_path, device="cpu", dim=128, query_length=20)
    assert other.encode_queries(["a"]).shape == (1, 20, 128)


def test_query_length_is_bounded(jina_dir, tmp_path):
    """query_length=100000 used to be accepted and ran a 100k-token attention per query;
    past an absolute position table it would index out of the table."""
    with pytest.raises(ValueError, match="query_length"):
        Encoder.from_pretrained(jina_dir, device="cpu", query_length=100000)
    write_checkpoint(tmp_path, layout="bert", head_dim=32, hidden=32)
    longest = json.loads((tmp_path / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(ValueError, match="query_length"):
        Encoder.from_pretrained(tmp_path, device="cpu", query_length=longest + 1)


def test_invalid_unicode_device_and_numpy_batch_size(jina_dir, jina):
    """A lone surrogate failed inside the tokenizer with "TextEncodeInput must be ...", a
    malformed device string with torch's RuntimeError, and np.int64 batch sizes were rejected."""
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        jina.encode_documents(["ok", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"texts\[0\]"):
        jina.encode_queries(["\udfff"])
    with pytest.raises(ValueError, match="device"):
        Encoder.from_pretrained(jina_dir, device="tpu")
    import numpy as np

    assert torch.equal(jina.encode_queries(["a", "b"], batch_size=np.int64(1)), jina.encode_queries(["a", "b"]))
