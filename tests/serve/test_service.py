"""The service's reading and writing paths in-process: a request's answer does not depend on
what it is batched with, and readers are not blocked by a writer in progress."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from colbert_engine.demo import metadata_filter
from colbert_engine.server.service import ClientError, EncodeJob, RerankJob, SearchJob, ServeConfig, Service

from .conftest import copy_index


@pytest.fixture(scope="module")
def service(base_index, tmp_path_factory):
    svc = Service(ServeConfig(index=str(copy_index(base_index, tmp_path_factory, "in-process"))))
    yield svc
    svc.close()


def jobs(passages, encoder):
    texts = [p["text"].split(".")[0] for p in passages[:8]]
    vectors = encoder.encode_queries(["a rice dish from Spain", "tides of the ocean"])
    return [
        SearchJob(k=3, texts=texts[:2]),
        SearchJob(k=5, texts=[texts[2]], include_metadata=True),
        SearchJob(k=3, texts=[texts[3]], filter=metadata_filter({"topic": "history"})),
        SearchJob(k=3, texts=[texts[4]], filter="no_such_column = 1"),   # fails alone
        SearchJob(k=2, texts=[texts[5]], exact=True),
        SearchJob(k=3, vectors=vectors),
        SearchJob(k=3, texts=[texts[6]], filter=[p["id"] for p in passages[:5]]),
        EncodeJob(texts=[texts[7]], kind="query"),
        EncodeJob(texts=[texts[7], "short"], kind="document"),
        RerankJob(query=texts[0], ids=[p["id"] for p in passages[:6]] + ["missing"]),
        RerankJob(query_vector=vectors[0], texts=[p["text"] for p in passages[:3]]),
        SearchJob(k=3, texts=texts[:2]),
    ]


def same_answer(a, b) -> bool:
    """Equal structure and ids; floats equal to float32 rounding. The encoder's matrix products
    round differently in the last bits at another batch size (about 1e-7 relative), so a
    score can differ there; ids and order may not."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_answer(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-5, abs=1e-6)
    return a == b


def test_an_answer_does_not_depend_on_its_batch(service, passages, encoder):
    alone = [service.read_batch([job])[0] for job in jobs(passages, encoder)]
    together = service.read_batch(jobs(passages, encoder))
    reversed_ = service.read_batch(jobs(passages, encoder)[::-1])[::-1]
    for a, b, c in zip(alone, together, reversed_):
        if isinstance(a, ClientError):
            assert (a.status, a.field, a.message) == (b.status, b.field, b.message) == (c.status, c.field, c.message)
        else:
            assert same_answer(a, b) and same_answer(a, c)
    assert isinstance(alone[3], ClientError) and alone[3].field == "filter"
    assert alone[0] == alone[-1] and len(alone[0]) == 2


def test_readers_are_not_blocked_by_a_writer(service, monkeypatch):
    """A write stuck in the middle (its encoding held here) leaves searches answering, on the
    generation before it; once committed, the next batch sees it."""
    started, release = threading.Event(), threading.Event()
    real_encode = service.encoder.encode_documents

    def slow_encode(texts, **kwargs):
        started.set()
        assert release.wait(60)
        return real_encode(texts, **kwargs)

    generation = service.current_stats()["generation"]
    monkeypatch.setattr(service.encoder, "encode_documents", slow_encode)
    writer = threading.Thread(target=service.write, args=("add",),
                              kwargs=dict(texts=["Okapis live in the Ituri rainforest."], ids=["okapi"],
                                          metadata=[None], store_text=True))
    writer.start()
    try:
        assert started.wait(60)
        hits = service.read_batch([SearchJob(k=1, texts=["okapi rainforest"])])[0]
        assert hits[0][0]["id"] != "okapi" and service.current_stats()["generation"] == generation
    finally:
        release.set()
        writer.join(60)
    monkeypatch.undo()
    assert service.read_batch([SearchJob(k=1, texts=["okapis in the Ituri rainforest"])])[0][0][0]["id"] == "okapi"
    assert service.current_stats()["generation"] == generation + 1
    service.write("delete", ids=["okapi"])


def test_a_sharded_index_is_served_like_one_index(tmp_path, passages, encoder):
    """`serve` opens a sharded folder: answers equal ShardedIndex's own, writes go to the
    shards their ids route to and the reader sees them at the next batch."""
    from colbert_engine.pipeline import MINILM, write_encoder_config
    from colbert_engine.sharded import ShardedIndex

    texts = [p["text"] for p in passages]
    doc_emb, doc_offsets = encoder.encode_documents(texts)
    path = tmp_path / "sharded"
    ShardedIndex.build(path, doc_emb, doc_offsets, ids=[p["id"] for p in passages], n_shards=2).close()
    write_encoder_config(path, MINILM, encoder)
    svc = Service(ServeConfig(index=str(path)))
    try:
        question = texts[3].split(".")[0]
        [served] = svc.read_batch([SearchJob(k=4, texts=[question])])
        with ShardedIndex.open(path) as direct:
            [want] = direct.search(encoder.encode_queries([question]), k=4)
        assert [hit["id"] for hit in served[0]] == [doc_id for doc_id, _ in want]
        assert [hit["score"] for hit in served[0]] == pytest.approx([score for _, score in want], rel=1e-5)
        assert svc.current_stats()["shards"] == 2

        svc.write("add", texts=["Okapis live in the Ituri rainforest."], ids=["okapi"], metadata=[None], store_text=True)
        [found] = svc.read_batch([SearchJob(k=1, texts=["Where do okapis live?"])])
        assert found[0][0]["id"] == "okapi"
        assert svc.write("delete", ids=["okapi"])["deleted"] == 1
        assert svc.current_stats()["live_docs"] == len(passages)
    finally:
        svc.close()
