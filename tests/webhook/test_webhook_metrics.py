"""The webhook's metrics as Prometheus reads them (text exposition parsed back)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vsphere_kale.webhook.metrics import MAX_CLASS_LABELS, WebhookMetrics


def samples(metrics: WebhookMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_requests_and_latency_histogram() -> None:
    m = WebhookMetrics()
    m.observe("rewritten", 0.0004)
    m.observe("rewritten", 0.001)  # exactly on a bound: counted in that bucket (le = "<=")
    m.observe("unchanged", 0.003)
    m.observe("error", 30.0)  # beyond the last bound: +Inf only
    got = samples(m)
    assert got[("vsphere_kale_webhook_requests_total", (("result", "rewritten"),))] == 2
    assert got[("vsphere_kale_webhook_requests_total", (("result", "bad_request"),))] == 0
    bucket = "vsphere_kale_webhook_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0005"),))] == 1
    assert got[(bucket, (("le", "0.001"),))] == 2
    assert got[(bucket, (("le", "0.005"),))] == 3
    assert got[(bucket, (("le", "2.5"),))] == 3
    assert got[(bucket, (("le", "+Inf"),))] == 4
    assert got[("vsphere_kale_webhook_request_duration_seconds_count", ())] == 4
    assert got[("vsphere_kale_webhook_request_duration_seconds_sum", ())] == pytest.approx(30.0044)


def test_rewrites_by_class_pair_and_decisions() -> None:
    m = WebhookMetrics()
    m.observe_decision("rewritten", "vsan-default", "nfs-client")
    m.observe_decision("rewritten", None, "nfs-client")
    m.observe_decision("rewritten", "vsan-default", "nfs-client")
    m.observe_decision("opted-out", None, None)
    got = samples(m)
    rewrites = "vsphere_kale_webhook_rewrites_total"
    assert got[(rewrites, (("from_class", "vsan-default"), ("to_class", "nfs-client")))] == 2
    assert got[(rewrites, (("from_class", "(default)"), ("to_class", "nfs-client")))] == 1
    decisions = "vsphere_kale_webhook_decisions_total"
    assert got[(decisions, (("reason", "rewritten"),))] == 3
    assert got[(decisions, (("reason", "opted-out"),))] == 1


def test_class_labels_are_bounded() -> None:
    m = WebhookMetrics()
    for i in range(MAX_CLASS_LABELS + 50):
        m.observe_decision("rewritten", f"user-class-{i}", "nfs-client")
    got = samples(m)
    pairs = [k for k in got if k[0] == "vsphere_kale_webhook_rewrites_total"]
    assert len(pairs) == MAX_CLASS_LABELS + 1
    other = (
        "vsphere_kale_webhook_rewrites_total",
        (("from_class", "(other)"), ("to_class", "nfs-client")),
    )
    assert got[other] == 50


def test_each_server_has_its_own_registry() -> None:
    a, b = WebhookMetrics(), WebhookMetrics()
    a.observe("unchanged", 0.001)
    key = ("vsphere_kale_webhook_requests_total", (("result", "unchanged"),))
    assert samples(a)[key] == 1
    assert samples(b)[key] == 0
    reloads = ("vsphere_kale_webhook_certificate_reloads_total", (("result", "failure"),))
    assert samples(b)[reloads] == 0
