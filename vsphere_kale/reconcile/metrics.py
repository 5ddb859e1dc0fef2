"""Prometheus metrics of the pod-security reconciler."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = (
    "created",
    "repaired",
    "labels-applied",
    "ok",
    "skipped",
    "conflict",
    "failed",
    "would-create",
    "would-repair",
)


class ReconcilerMetrics:
    """Prometheus metrics of the reconciler, on the registry ``serve`` exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "vsphere_kale_podsecurity_reconciles",
            "Namespace reconciles, by result (created, repaired, labels-applied, ok, skipped, "
            "conflict, failed).",
            ["result"],
            registry=self.registry,
        )
        self.writes = Counter(
            "vsphere_kale_podsecurity_writes",
            "Writes sent to the API server by this replica, by verb and resource.",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "vsphere_kale_podsecurity_refusals_observed",
            "New Pod Security refusals (FailedCreate Events) seen in managed namespaces with "
            "psaLevel auto; each reconciles its namespace at once.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "vsphere_kale_podsecurity_queue_depth",
            "Namespaces waiting to be reconciled (not counting delayed retries).",
            registry=self.registry,
        )
        self.last_resync = Gauge(
            "vsphere_kale_podsecurity_last_full_resync_timestamp_seconds",
            "Unix time of the last full resync (every managed namespace enqueued).",
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "vsphere_kale_podsecurity_is_leader",
            "1 while this replica holds the leader Lease and reconciles.",
            registry=self.registry,
        )
        self.mode = Gauge(
            "vsphere_kale_podsecurity_mode",
            "The resolved pod-security mode (1 for the mode in use).",
            ["mode"],
            registry=self.registry,
        )
        for result in OUTCOMES:
            self.reconciles.labels(result)

    def register_into(self, registry: CollectorRegistry) -> None:
        """Also expose these metrics on ``registry`` (the server's, for one /metrics)."""
        for collector in (
            self.reconciles,
            self.writes,
            self.refusals,
            self.queue_depth,
            self.last_resync,
            self.is_leader,
            self.mode,
        ):
            registry.register(collector)
