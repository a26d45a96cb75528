"""The server's metrics in the Prometheus text exposition format (version 0.0.4), written
here: counters, gauges and cumulative histograms, no client library."""
from __future__ import annotations

import bisect
import threading
from typing import Callable

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(d: dict) -> str:
    if not d:
        return ""
    esc = (lambda v: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(d.items())) + "}"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)   # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: dict) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.buckets + (float("inf"),), self.counts):
            acc += c
            le = "+Inf" if b == float("inf") else f"{b:g}"
            out.append(f"{name}_bucket{_labels({**labels, 'le': le})} {acc}")
        out.append(f"{name}_sum{_labels(labels)} {self.sum:.9g}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """What ``GET /metrics`` shows: requests by endpoint and status, errors, latency and
    batch-size histograms, queue depth (read live from ``gauges``)."""

    def __init__(self, prefix: str = "d2c_serve"):
        self.p = prefix
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.errors: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.batch_requests = _Histogram(BATCH_BUCKETS)
        self.batch_images = _Histogram(BATCH_BUCKETS)
        self.batch_seconds = _Histogram(LATENCY_BUCKETS)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            if status >= 400:
                self.errors[endpoint] = self.errors.get(endpoint, 0) + 1
            self.latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, n_requests: int, n_images: int, seconds: float) -> None:
        with self._lock:
            self.batch_requests.observe(n_requests)
            self.batch_images.observe(n_images)
            self.batch_seconds.observe(seconds)

    def render(self) -> str:
        p = self.p
        with self._lock:
            out = [f"# HELP {p}_requests_total HTTP requests answered, by endpoint and status.",
                   f"# TYPE {p}_requests_total counter"]
            out += [f"{p}_requests_total{_labels({'endpoint': e, 'status': s})} {n}"
                    for (e, s), n in sorted(self.requests.items())]
            out += [f"# HELP {p}_errors_total Requests answered with a 4xx or 5xx status.",
                    f"# TYPE {p}_errors_total counter"]
            out += [f"{p}_errors_total{_labels({'endpoint': e})} {n}"
                    for e, n in sorted(self.errors.items())]
            out += [f"# HELP {p}_request_seconds Time from request to response, by endpoint.",
                    f"# TYPE {p}_request_seconds histogram"]
            for e, h in sorted(self.latency.items()):
                out += h.lines(f"{p}_request_seconds", {"endpoint": e})
            for name, h, what in (("batch_requests", self.batch_requests,
                                   "Requests per engine call."),
                                  ("batch_images", self.batch_images, "Images per engine call."),
                                  ("batch_seconds", self.batch_seconds,
                                   "Seconds per engine call.")):
                out += [f"# HELP {p}_{name} {what}", f"# TYPE {p}_{name} histogram"]
                out += h.lines(f"{p}_{name}", {})
        for name, (help, read) in sorted(self.gauges.items()):
            out += [f"# HELP {p}_{name} {help}", f"# TYPE {p}_{name} gauge",
                    f"{p}_{name} {float(read()):g}"]
        return "\n".join(out) + "\n"
