"""A small Prometheus text-format registry (no client library needed): counters, gauges and
histograms with labels, rendered by `Registry.render()` for GET /metrics.

The event loop is single-threaded, so updates need no lock; `render` only reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


@dataclass
class Counter:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(str(labels[n]) for n in self.labelnames)
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(str(labels[n]) for n in self.labelnames), 0.0)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in sorted(self.values.items())]


@dataclass
class Gauge:
    """A value read at scrape time from `source` (e.g. the engine's queue depth), or set directly."""

    name: str
    help: str
    source: Callable[[], float] | None = None
    value: float = 0.0
    kind = "gauge"

    def set(self, v: float) -> None:
        self.value = v

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def get(self) -> float:
        return float(self.source()) if self.source is not None else self.value

    def samples(self) -> list[str]:
        return [f"{self.name} {_num(self.get())}"]


@dataclass
class Histogram:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    series: dict[tuple[str, ...], tuple[list[int], list[float]]] = field(default_factory=dict)
    kind = "histogram"

    def observe(self, v: float, **labels: str) -> None:
        key = tuple(str(labels[n]) for n in self.labelnames)
        counts, total = self.series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
        for i, b in enumerate(self.buckets):
            if v <= b:
                counts[i] += 1
        counts[-1] += 1  # +Inf bucket == count
        total[0] += v

    def count(self, **labels: str) -> int:
        key = tuple(str(labels[n]) for n in self.labelnames)
        return self.series[key][0][-1] if key in self.series else 0

    def samples(self) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self.series.items()):
            for b, c in zip((*self.buckets, math.inf), counts):
                le = 'le="' + _num(b) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {c}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_num(total[0])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {counts[-1]}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Counter | Gauge | Histogram] = []

    def add(self, metric):
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines = []
        for m in self._metrics:
            lines.append(f"# HELP {m.name} {m.help}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            lines.extend(m.samples())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The server's metrics: requests, tokens, latencies, and the engine's load at scrape time."""

    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        r = self.registry = Registry()
        self.requests = r.add(Counter("glm45_requests_total", "HTTP requests by endpoint and status code.",
                                      ("endpoint", "status")))
        self.prompt_tokens = r.add(Counter("glm45_prompt_tokens_total", "Prompt tokens processed."))
        self.generation_tokens = r.add(Counter("glm45_generation_tokens_total", "Tokens generated."))
        self.finished = r.add(Counter("glm45_request_finish_total", "Generations finished, by reason.",
                                      ("reason",)))
        self.latency = r.add(Histogram("glm45_request_latency_seconds",
                                       "End-to-end latency of generation requests.", ("endpoint",)))
        self.ttft = r.add(Histogram("glm45_time_to_first_token_seconds",
                                    "Time from request arrival to its first generated token.", ("endpoint",)))
        self.in_flight = r.add(Gauge("glm45_requests_in_flight", "Generation requests being served now."))
        self.queue_depth = r.add(Gauge("glm45_queue_depth", "Requests waiting for a batch slot.",
                                       source=queue_depth))
        self.running = r.add(Gauge("glm45_running_batch_size", "Requests in the running batch.",
                                   source=running))

    def render(self) -> str:
        return self.registry.render()
