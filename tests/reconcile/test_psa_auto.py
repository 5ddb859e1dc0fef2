"""``psaLevel: auto`` through the reconciler's one-shot path, on the sandbox's kubeflow-demo seed.

The sandbox has no Pod Security admission and no pods, so its dry-run labelling names no
pod (which is the truth there: no pods exist). The API server's own warnings are tested on
the real control plane (tests/realcp/test_realcp_psa_auto.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from kubernetes import client
from reconcile_helpers import ENFORCE, ns_labels, wait_for

from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.reconcile.reconciler import Reconciler, reconcile_once
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings

AUTO = Settings(
    pod_security=PodSecuritySettings(mode="psa", psa_level="auto", extra_namespaces=("steps",))
)
CNI_DAEMONSET = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "istio-cni-node", "namespace": "kube-system"},
    "spec": {
        "selector": {"matchLabels": {"k8s-app": "istio-cni-node"}},
        "template": {
            "metadata": {"labels": {"k8s-app": "istio-cni-node"}},
            "spec": {"containers": [{"name": "install-cni", "image": "istio/install-cni:1.24.2"}]},
        },
    },
}


@pytest.fixture
def demo(sandbox_factory: Callable[..., RunningSandbox]) -> RunningSandbox:
    running = sandbox_factory(seed="kubeflow-demo")
    client.CoreV1Api(running.api_client()).create_namespace({"metadata": {"name": "steps"}})
    return running


def once(running: RunningSandbox, namespace: str, *, dry_run: bool = False) -> str:
    _, (result,) = reconcile_once(
        Kube(running.api_client()), AUTO, namespaces=[namespace], dry_run=dry_run
    )
    assert not result.failed, result
    return result.message


def requests(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    pattern = re.compile(rf"\d{{3}} {method} (\S+)")
    return [m.group(1) for rec in caplog.records if (m := pattern.search(rec.getMessage()))]


def test_alice_gets_privileged_for_istio_init_and_the_recorded_rejection(
    demo: RunningSandbox,
) -> None:
    # Given: the seed's alice (istio-injection: enabled, no istio-cni-node DaemonSet, the
    # notebook StatefulSet's FailedCreate Event).
    message = once(demo, "alice")
    assert ns_labels(demo.api_client(), "alice")[ENFORCE] == "privileged"
    assert "psaLevel auto chose privileged" in message
    assert "istio-init adds NET_ADMIN and NET_RAW" in message
    assert "pod kale-nb-0 was rejected at baseline" in message


def test_istio_cni_lowers_the_first_decision_and_auto_never_lowers_by_itself(
    demo: RunningSandbox,
) -> None:
    kube = Kube(demo.api_client())
    # Given Istio CNI: bob's notebook pods get no istio-init, baseline suffices.
    kube.create(r.DAEMON_SET, CNI_DAEMONSET, namespace="kube-system")
    assert "psaLevel auto chose baseline" in once(demo, "bob")
    assert ns_labels(demo.api_client(), "bob")[ENFORCE] == "baseline"
    # When CNI goes: privileged, raised at once.
    kube.delete(r.DAEMON_SET, "istio-cni-node", namespace="kube-system")
    once(demo, "bob")
    assert ns_labels(demo.api_client(), "bob")[ENFORCE] == "privileged"
    # When it is back: auto keeps privileged (missing evidence is not evidence).
    kube.create(r.DAEMON_SET, CNI_DAEMONSET, namespace="kube-system")
    assert "auto never lowers a level" in once(demo, "bob")
    assert ns_labels(demo.api_client(), "bob")[ENFORCE] == "privileged"
    # Then an admin removes the label: auto decides afresh.
    kube.patch(r.NAMESPACE, "bob", {"metadata": {"labels": {ENFORCE: None}}})
    once(demo, "bob")
    assert ns_labels(demo.api_client(), "bob")[ENFORCE] == "baseline"


def test_a_namespace_without_notebooks_asks_the_api_server_and_gets_restricted(
    demo: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vsphere_kale.sandbox.server")
    message = once(demo, "steps")
    assert "psaLevel auto chose restricted" in message
    assert "the API server names no existing pod that restricted refuses" in message
    patches = requests(caplog, "PATCH")
    # Two dry runs (baseline, then restricted, each at a pinned version so the server
    # evaluates), then the one real patch.
    dry = [p for p in patches if "dryRun=All" in p]
    assert len(dry) == 2 and all(p.startswith("/api/v1/namespaces/steps?") for p in dry)
    assert len(patches) == 3
    labels = ns_labels(demo.api_client(), "steps")
    assert labels[ENFORCE] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_reconcile_dry_run_with_auto_sends_no_write_of_any_kind(
    demo: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vsphere_kale.sandbox.server")
    _, (result,) = reconcile_once(Kube(demo.api_client()), AUTO, namespaces=["steps"], dry_run=True)
    assert result.outcome == "would-create"
    assert "psaLevel auto chose restricted" in result.message
    assert requests(caplog, "PATCH") == [] and requests(caplog, "POST") == []
    assert ENFORCE not in ns_labels(demo.api_client(), "steps")


def test_the_running_reconciler_applies_auto_levels(demo: RunningSandbox) -> None:
    reconciler = Reconciler(
        Kube(demo.api_client()), AUTO, identity="test", leader_election=False, workers=2
    )
    reconciler.start()
    try:
        assert reconciler.wait_for_sync(10)
        result = reconciler.reconcile_now("alice")
        assert not result.failed, result
        assert ns_labels(demo.api_client(), "alice")[ENFORCE] == "privileged"
        # The leader's first resync reaches every managed namespace.
        wait_for("steps labelled", lambda: ns_labels(demo.api_client(), "steps").get(ENFORCE))
        assert ns_labels(demo.api_client(), "steps")[ENFORCE] == "restricted"
    finally:
        reconciler.stop()
