"""Prometheus metrics of the webhook server.

Each server owns its :class:`~prometheus_client.CollectorRegistry` instead of the process-wide
default one: tests (and ``serve``) can run several servers in one process without "Duplicated
timeseries" errors, and ``serve`` registers its own collectors on the same registry so one
``/metrics`` shows everything.

The per-request series are plain integers exported by a custom collector rather than
prometheus-client ``Counter``/``Histogram`` objects: those take a lock and run several
checks per increment, which was a measurable share of a review's cost (see the benchmark in
the README). All updates and scrapes happen on the server's event-loop thread, so no lock is
needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

RESULTS = ("rewritten", "unchanged", "bad_request", "error")
"""``requests_total`` results: ``bad_request`` is every 4xx we answer on a mutate route
(malformed review, wrong content type, too large, wrong method); ``error`` is an internal
error answered fail-open with ``allowed: true``."""

DEFAULT_CLASS_LABEL = "(default)"
"""``from_class`` value for a claim that had no class (the cluster default). Parentheses
cannot occur in a StorageClass name, so this never collides with a real class."""

OTHER_CLASS_LABEL = "(other)"
"""``from_class`` value once :data:`MAX_CLASS_LABELS` distinct classes have been seen: the
previous class comes from user input, and label values must not grow without bound."""

MAX_CLASS_LABELS = 64

# Admission latency budget: the API server's default webhook timeout is 10 s, but anything
# over a few ms is already a problem for us, so the buckets are dense at the low end.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class WebhookMetrics:
    """Counters and histograms of one webhook server, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = dict.fromkeys(RESULTS, 0)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf only
        self.latency_sum = 0.0
        self.rewrites: dict[tuple[str, str], int] = {}
        self.decisions: dict[str, int] = {}
        self.registry.register(_RequestCollector(self))
        # Rare events: ordinary prometheus-client objects are fine here.
        self.cert_reloads = Counter(
            "vsphere_kale_webhook_certificate_reloads",
            "Serving-certificate reloads after the files changed, by result.",
            ["result"],
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.cert_reloads.labels(result)  # exported as 0 before the first reload
        self.refused = Counter(
            "vsphere_kale_webhook_refused_total",
            "Connections closed and requests refused by the server's budgets, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "vsphere_kale_webhook_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate in use expires.",
            registry=self.registry,
        )

    def observe(self, result: str, seconds: float) -> None:
        """One answered request on a mutate route."""
        self.requests[result] += 1
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def observe_decision(self, reason: str, from_class: str | None, to_class: str | None) -> None:
        """The policy rule that decided, and for a rewrite the class pair."""
        self.decisions[reason] = self.decisions.get(reason, 0) + 1
        if to_class is not None:
            key = (from_class or DEFAULT_CLASS_LABEL, to_class)
            if key not in self.rewrites and len(self.rewrites) >= MAX_CLASS_LABELS:
                key = (OTHER_CLASS_LABEL, to_class)
            self.rewrites[key] = self.rewrites.get(key, 0) + 1

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return bytes(generate_latest(self.registry))


class _RequestCollector(Collector):
    def __init__(self, metrics: WebhookMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "vsphere_kale_webhook_requests",
            "Admission requests on the mutate routes, by result.",
            labels=["result"],
        )
        for result, count in m.requests.items():
            requests.add_metric([result], count)
        yield requests

        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*map(str, LATENCY_BUCKETS), "+Inf"), m.latency_buckets, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "vsphere_kale_webhook_request_duration_seconds",
            "Seconds to answer a review once its body is received, on the mutate routes.",
            buckets=buckets,
            sum_value=m.latency_sum,
        )

        rewrites = CounterMetricFamily(
            "vsphere_kale_webhook_rewrites",
            "PVC storage-class rewrites, by previous and new class.",
            labels=["from_class", "to_class"],
        )
        for (from_class, to_class), count in sorted(m.rewrites.items()):
            rewrites.add_metric([from_class, to_class], count)
        yield rewrites

        decisions = CounterMetricFamily(
            "vsphere_kale_webhook_decisions",
            "Admission decisions, by the policy rule that decided (e.g. rewritten, not-rwx).",
            labels=["reason"],
        )
        for reason, count in sorted(m.decisions.items()):
            decisions.add_metric([reason], count)
        yield decisions
