"""PyLate checkpoints load as they are: tiny checkpoints in the exact folder layout PyLate
1.6.0's ``ColBERT.save`` writes (made here), every field of config_sentence_transformers.json
honoured or refused by name; and, where pylate is installed, parity with PyLate's own
``encode()`` on checkpoints PyLate saves in the test."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from colbert_engine.model import CheckpointError, Encoder
from tiny_checkpoints import make_tokenizer, write_pylate_checkpoint

QUERIES = ["hello world physics", "the electron field theory of light and energy in space time " * 4]
DOCS = ["hello world, physics. data!", "memory system; the wave", "a " * 300 + "query"]


def _token_ids(enc, *tokens):
    return [enc.tokenizer.token_to_id(t) for t in tokens]


def test_defaults_load_with_no_arguments(tmp_path):
    write_pylate_checkpoint(tmp_path)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    s = enc.settings
    assert enc.family == "pylate"
    assert (s.query_marker, s.document_marker, s.query_length, s.document_length) == ("[Q] ", "[D] ", 32, 180)
    assert s.query_expansion and not s.attend_to_expansion_tokens and enc.dim == 16
    q_id, d_id = _token_ids(enc, "[Q] ", "[D] ")
    assert (q_id, d_id) == (enc.tokenizer.get_vocab_size() - 2, enc.tokenizer.get_vocab_size() - 1)
    cls, sep, mask, hello = _token_ids(enc, "[CLS]", "[SEP]", "[MASK]", "hello")
    ids, attention, valid = enc.colbert_tokenizer.queries(["hello"])
    assert ids[0, :5].tolist() == [cls, q_id, hello, sep, mask] and (ids[0, 4:] == mask).all()
    assert attention[0].sum() == 4 and valid.all()  # expansion tokens kept, not attended
    assert enc.colbert_tokenizer.documents(["hello"]) == [[cls, d_id, hello, sep]]
    q = enc.encode_queries(QUERIES)
    emb, offsets = enc.encode_documents(DOCS)
    assert q.shape == (2, 32, 16) and emb.shape[1] == 16
    assert int(offsets[3] - offsets[2]) == 180  # truncated to document_length, markers included
    assert torch.allclose(emb.norm(dim=-1), torch.ones(emb.shape[0]), atol=1e-5)


@pytest.mark.parametrize("fields, check", [
    ({"query_length": 12, "document_length": 20},
     lambda enc, q, lengths: q.shape[1] == 12 and max(lengths) == 20),
    ({"attend_to_expansion_tokens": True},
     lambda enc, q, lengths: enc.colbert_tokenizer.queries(["hello"])[1].all()),
    ({"do_query_expansion": False, "attend_to_expansion_tokens": True},  # PyLate: no expansion, no attending
     lambda enc, q, lengths: (not enc.settings.attend_to_expansion_tokens and (q[0, 6:] == 0).all()
                              and (q[0, :5].norm(dim=-1) > 0.99).all())),
    ({"skiplist_words": ["hello", "physics"]},  # punctuation kept, these dropped
     lambda enc, q, lengths: lengths[:2] == [8, 8]),  # 7, 7 with the default skiplist
    ({"query_prefix": "", "document_prefix": "[unused1]"},
     lambda enc, q, lengths: enc.colbert_tokenizer.query_marker_id is None
     and enc.colbert_tokenizer.document_marker_id == enc.tokenizer.token_to_id("[unused1]")),
    ({"similarity_fn_name": None, "prompts": {"query": "query: "}, "default_prompt_name": None},
     lambda enc, q, lengths: True),
])
def test_fields_are_honoured(tmp_path, fields, check):
    write_pylate_checkpoint(tmp_path, fields=fields)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    q = enc.encode_queries(["hello world physics"])
    _, offsets = enc.encode_documents(DOCS)
    assert check(enc, q, offsets.diff().tolist())


def test_missing_fields_take_pylate_defaults(tmp_path):
    write_pylate_checkpoint(tmp_path, drop_fields=("query_prefix", "document_prefix", "query_length", "document_length",
                                                   "attend_to_expansion_tokens", "skiplist_words",
                                                   "do_query_expansion"))
    s = Encoder.from_pretrained(tmp_path, device="cpu").settings
    assert (s.query_marker, s.document_marker, s.query_length, s.document_length) == ("[Q] ", "[D] ", 32, 180)
    assert s.query_expansion and not s.attend_to_expansion_tokens and "." in s.skiplist_words


def test_arguments_override_the_file(tmp_path):
    write_pylate_checkpoint(tmp_path, fields={"query_length": 12})
    enc = Encoder.from_pretrained(tmp_path, device="cpu", query_length=8, query_marker=None)
    assert enc.settings.query_length == 8 and enc.colbert_tokenizer.query_marker_id is None


@pytest.mark.parametrize("dim, bias, use_residual", [(8, True, False), (32, False, True), (16, False, True)])
def test_dense_variants(tmp_path, dim, bias, use_residual):
    """Embedding size from 1_Dense (out_features), a bias, PyLate's use_residual (identity
    when the sizes match, residual.weight otherwise)."""
    from safetensors.torch import load_file

    write_pylate_checkpoint(tmp_path, dim=dim, bias=bias, use_residual=use_residual)
    enc = Encoder.from_pretrained(tmp_path, device="cpu")
    assert enc.dim == dim
    dense = load_file(str(tmp_path / "1_Dense" / "model.safetensors"))
    ids, attention, _ = enc.colbert_tokenizer.queries(["hello world"])
    with torch.no_grad():
        hidden = enc.model(torch.from_numpy(ids), torch.from_numpy(attention))
    y = F.linear(hidden, dense["linear.weight"], dense.get("linear.bias"))
    if use_residual:
        y = y + (F.linear(hidden, dense["residual.weight"]) if "residual.weight" in dense else hidden)
    torch.testing.assert_close(enc.encode_queries(["hello world"]), F.normalize(y, dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fields, match", [
    ({"pooling_mode": "mean"}, "field 'pooling_mode' is not supported"),
    ({"similarity_fn_name": "cosine"}, "similarity_fn_name 'cosine' is not supported"),
    ({"prompts": {"query": "query: "}, "default_prompt_name": "query"}, "default_prompt_name 'query'"),
    ({"query_length": "32"}, "query_length: expected an int"),
    ({"do_query_expansion": "yes"}, "do_query_expansion: expected true or false"),
    ({"skiplist_words": "."}, "skiplist_words: expected a list of strings"),
    ({"query_prefix": 5}, "query_prefix: expected a string"),
    ({"query_prefix": "[QX] "}, r"query_marker: '\[QX\] ' is not a token"),
])
def test_unsupported_fields_are_named(tmp_path, fields, match):
    write_pylate_checkpoint(tmp_path, fields=fields)
    with pytest.raises(CheckpointError, match=match):
        Encoder.from_pretrained(tmp_path, device="cpu")


def test_dense_errors(tmp_path):
    write_pylate_checkpoint(tmp_path)
    cfg_path = tmp_path / "1_Dense" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(cfg, activation_function="torch.nn.modules.activation.Tanh")))
    with pytest.raises(CheckpointError, match="activation_function.*Tanh"):
        Encoder.from_pretrained(tmp_path, device="cpu")
    cfg_path.write_text(json.dumps(dict(cfg, out_features=7)))
    with pytest.raises(CheckpointError, match="out_features 7"):
        Encoder.from_pretrained(tmp_path, device="cpu")


def test_plain_sentence_transformers_config_is_not_pylate(tmp_path):
    """all-MiniLM-L6-v2's own config_sentence_transformers.json (cosine similarity) is not
    PyLate's: the checkpoint stays a plain encoder."""
    write_pylate_checkpoint(tmp_path)
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "2.0.0"}, "prompts": {}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}))
    assert Encoder.from_pretrained(tmp_path, device="cpu").family != "pylate"


# ---------------------------------------------------------------- against PyLate itself

def _pylate_models():
    models = pytest.importorskip("pylate.models", reason="pylate is not installed (optional test dependency)")
    import sentence_transformers

    if not sentence_transformers.__version__.startswith("5."):
        pytest.skip(f"pylate 1.6 needs sentence-transformers 5.x, found {sentence_transformers.__version__}")
    return models


def _base_model(folder, arch: str):
    """A tiny random Hugging Face model + fast tokenizer saved with transformers, as a user's
    starting point for ``pylate.models.ColBERT``."""
    import transformers
    from tokenizers import processors

    tok = make_tokenizer("bert")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                                                pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")
    torch.manual_seed(0)
    if arch == "bert":
        cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=48, max_position_embeddings=512)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = transformers.ModernBertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=4,
                                            num_attention_heads=4, intermediate_size=40, local_attention=8,
                                            pad_token_id=0, cls_token_id=4, sep_token_id=5, bos_token_id=4,
                                            eos_token_id=5)
        model = transformers.ModernBertModel(cfg)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


@pytest.mark.parametrize("arch, kwargs", [
    ("bert", {}),
    ("bert", dict(query_length=12, document_length=24, attend_to_expansion_tokens=True,
                  skiplist_words=["physics", "."])),
    ("bert", dict(do_query_expansion=False)),
    ("modernbert", {}),
])
def test_matches_pylate_encode(tmp_path, monkeypatch, arch, kwargs):
    models = _pylate_models()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # local folders only
    _base_model(tmp_path / "base", arch)
    pl = models.ColBERT(str(tmp_path / "base"), device="cpu", embedding_size=16, **kwargs)
    pl.save(str(tmp_path / "saved"))
    enc = Encoder.from_pretrained(tmp_path / "saved", device="cpu")  # no arguments
    assert enc.family == "pylate" and enc.settings.query_marker == "[Q] "

    theirs = pl.encode(QUERIES, is_query=True, convert_to_numpy=True)
    ours = enc.encode_queries(QUERIES)
    for i, t in enumerate(theirs):
        t = torch.as_tensor(t)
        assert t.shape[0] <= ours.shape[1]
        cos = F.cosine_similarity(ours[i, :t.shape[0]], t, dim=-1)
        assert float(cos.min()) >= 0.99999, (i, cos)
        assert (ours[i, t.shape[0]:] == 0).all()  # rows PyLate does not return add nothing

    theirs = pl.encode(DOCS, is_query=False, convert_to_numpy=True)
    emb, offsets = enc.encode_documents(DOCS)
    for i, t in enumerate(theirs):
        t = torch.as_tensor(t)
        mine = emb[offsets[i]:offsets[i + 1]]
        assert mine.shape == t.shape, (i, mine.shape, t.shape)
        assert float(F.cosine_similarity(mine, t, dim=-1).min()) >= 0.99999
