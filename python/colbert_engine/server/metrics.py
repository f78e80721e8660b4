"""Prometheus text exposition (format 0.0.4) for the service, without a client library:
request counts by endpoint and status, latency and batch-size histograms, index gauges."""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.9g}")
        out.append(f"{name}_count{suffix} {self.n}")
        return out


class Metrics:
    """Thread-safe counters; :meth:`render` gives the /metrics body."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batches = 0

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.latency.get(endpoint)
            if hist is None:
                hist = self.latency[endpoint] = Histogram(LATENCY_BUCKETS_S)
            hist.observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batches += 1

    def render(self, gauges: dict) -> str:
        """``gauges``: ``{name: (help, value)}`` read at scrape time (index generation, docs)."""
        with self._lock:
            lines = ["# HELP colbert_engine_requests_total HTTP requests answered, by endpoint and status.",
                     "# TYPE colbert_engine_requests_total counter"]
            for (method, endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'colbert_engine_requests_total{{method="{method}",endpoint="{endpoint}",'
                             f'status="{status}"}} {count}')
            lines += ["# HELP colbert_engine_request_seconds Time from request start to response start.",
                      "# TYPE colbert_engine_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("colbert_engine_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP colbert_engine_batch_size Requests answered by one encode + search batch.",
                      "# TYPE colbert_engine_batch_size histogram"]
            lines += self.batch_size.lines("colbert_engine_batch_size")
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"
