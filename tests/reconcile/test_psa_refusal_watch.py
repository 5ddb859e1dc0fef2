"""``psaLevel: auto`` reacts to a Pod Security refusal when it happens, not at the next resync.

A controller that cannot create a pod writes a ``FailedCreate`` Event with the API server's
refusal (the kubeflow-demo seed's ``kale-nb`` shows one). The sandbox runs no StatefulSet
controller and no Pod Security admission, so the test writes that Event as kube-apiserver's
StatefulSet controller does (its text is recorded from kube-apiserver 1.36 in
tests/fixtures/podsecurity_rejections.json; the controller writing it on the real plane:
tests/realcp/test_realcp_psa_auto.py). ``resyncSeconds`` is an hour, so only the Events watch
can explain a level raised during the test.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reconcile_helpers import ENFORCE, ns_labels, wait_for

from vsphere_kale.health.psa_evidence import FAILED_CREATE_SELECTOR
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.kube.informers import Informer
from vsphere_kale.reconcile.reconciler import Reconciler
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings

AN_HOUR = 3600.0
AUTO = Settings(
    pod_security=PodSecuritySettings(
        mode="psa", psa_level="auto", extra_namespaces=("steps", "more-steps")
    )
)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_rejections.json"
#: kube-apiserver 1.36 refusing a root container at restricted (it needs baseline).
ROOT_STEP = json.loads(FIXTURE.read_text())["cases"]["restricted-root-step"]["message"]
REFUSALS = "vsphere_kale_podsecurity_refusals_observed_total"


def statefulset(namespace: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "step", "image": "python:3.12"}]},
            },
        },
    }


def failed_create(namespace: str, statefulset_name: str, *, error: str) -> dict[str, Any]:
    """The StatefulSet controller's Warning (pkg/controller/statefulset ``recordPodEvent``)."""
    pod = f"{statefulset_name}-0"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{statefulset_name}.18a2c4e6f8b0d1e3",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": statefulset_name,
            "namespace": namespace,
        },
        "reason": "FailedCreate",
        "message": f"create Pod {pod} in StatefulSet {statefulset_name} failed error: {error}",
        "type": "Warning",
        "source": {"component": "statefulset-controller"},
        "count": 1,
    }


def refuse(kube: Kube, namespace: str, *, name: str, error: str = ROOT_STEP) -> dict[str, Any]:
    """A StatefulSet whose pod the API server refused, and the controller's Event about it."""
    kube.create(r.STATEFUL_SET, statefulset(namespace, name), namespace=namespace)
    return kube.create(r.EVENT, failed_create(namespace, name, error=error), namespace=namespace)


@pytest.fixture
def running(
    sandbox_factory: Callable[..., RunningSandbox],
) -> Iterator[tuple[RunningSandbox, Reconciler]]:
    sandbox = sandbox_factory(seed="kubeflow-demo")
    core = client.CoreV1Api(sandbox.api_client())
    for name in ("steps", "more-steps", "unmanaged"):
        core.create_namespace({"metadata": {"name": name}})
    reconciler = Reconciler(
        Kube(sandbox.api_client()),
        AUTO,
        identity="test",
        leader_election=False,
        workers=2,
        resync_seconds=AN_HOUR,
    )
    reconciler.start()
    try:
        assert reconciler.wait_for_sync(10)
        # The leader's first pass (the only resync this test sees): no pod refused yet in
        # steps, the API server names none, so auto starts it at restricted.
        for name in ("steps", "more-steps"):
            wait_for(
                f"{name} at restricted",
                lambda name=name: (
                    ns_labels(sandbox.api_client(), name).get(ENFORCE) == "restricted"
                ),
            )
        assert reconciler.wait_idle(10)
        yield sandbox, reconciler
    finally:
        reconciler.stop()


def refusals(reconciler: Reconciler) -> float:
    return reconciler.metrics.registry.get_sample_value(REFUSALS) or 0.0


def test_a_new_refusal_raises_the_level_without_waiting_for_the_resync(
    running: tuple[RunningSandbox, Reconciler],
) -> None:
    sandbox, reconciler = running
    kube = Kube(sandbox.api_client())
    seen = refusals(reconciler)
    # When: a pipeline step's StatefulSet is refused at restricted (it runs as root).
    refuse(kube, "steps", name="train")
    # Then: auto raises steps to the level that admits it, well before any resync.
    wait_for(
        "steps raised to baseline",
        lambda: ns_labels(sandbox.api_client(), "steps").get(ENFORCE) == "baseline",
    )
    assert refusals(reconciler) == seen + 1


def test_only_new_refusals_in_managed_namespaces_trigger_a_reconcile(
    running: tuple[RunningSandbox, Reconciler],
) -> None:
    sandbox, reconciler = running
    kube = Kube(sandbox.api_client())
    seen = refusals(reconciler)
    # Given: a refusal in a namespace we do not manage, and a FailedCreate that is not a
    # Pod Security refusal in one we do.
    refuse(kube, "unmanaged", name="train")
    refuse(
        kube, "steps", name="quota", error='pods "quota-0" is forbidden: exceeded quota: compute'
    )
    # And: the first refusal in steps, then the controller's retries (the same Event, its
    # count bumped: what the event recorder does with a repeated failure).
    event = refuse(kube, "steps", name="train")
    wait_for(
        "steps raised to baseline",
        lambda: ns_labels(sandbox.api_client(), "steps").get(ENFORCE) == "baseline",
    )
    for count in (2, 3):
        kube.patch(r.EVENT, event["metadata"]["name"], {"count": count}, namespace="steps")
    # When: a marker refusal in another managed namespace. The watch delivers events in
    # order, so once the marker is handled, everything above has been handled too.
    refuse(kube, "more-steps", name="marker")
    wait_for(
        "more-steps raised to baseline",
        lambda: ns_labels(sandbox.api_client(), "more-steps").get(ENFORCE) == "baseline",
    )
    # Then: exactly two refusals triggered a reconcile (steps' first one, and the marker).
    assert refusals(reconciler) == seen + 2
    assert ENFORCE not in ns_labels(sandbox.api_client(), "unmanaged")


def test_a_refused_watch_is_retried_with_backoff_not_in_a_busy_loop(
    sandbox_factory: Callable[..., RunningSandbox], caplog: pytest.LogCaptureFixture
) -> None:
    # Given: RBAC that allows listing Events but not watching them (a ClusterRole from before
    # the watch was granted). kube-apiserver answers each watch with 403 at once, and the
    # client's SharedInformer reopens a refused watch immediately.
    running = sandbox_factory(authorization=True)
    admin = Kube(running.api_client())
    admin.create(r.NAMESPACE, {"metadata": {"name": "vsphere-kale"}})
    admin.create(
        r.SERVICE_ACCOUNT, {"metadata": {"name": "vsphere-kale"}}, namespace="vsphere-kale"
    )
    admin.create(
        r.CLUSTER_ROLE,
        {
            "metadata": {"name": "events-list-only"},
            "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}],
        },
    )
    admin.create(
        r.CLUSTER_ROLE_BINDING,
        {
            "metadata": {"name": "events-list-only"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "events-list-only",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "vsphere-kale", "namespace": "vsphere-kale"}
            ],
        },
    )
    token = (
        client.CoreV1Api(running.api_client())
        .create_namespaced_service_account_token(
            "vsphere-kale", "vsphere-kale", {"spec": {"audiences": []}}
        )
        .status.token
    )
    waits: list[float] = []
    enough = threading.Event()

    def wait(seconds: float) -> bool:
        # The injected clock: record the backoff instead of sleeping it.
        waits.append(seconds)
        if len(waits) >= 9:
            enough.set()
        return enough.wait(0.01) if len(waits) >= 9 else False

    informer = Informer(
        Kube(running.api_client(token)),
        r.EVENT,
        name="events",
        resync_seconds=AN_HOUR,
        handlers={},
        field_selector=FAILED_CREATE_SELECTOR,
        backoff_wait=wait,
    )
    caplog.set_level(logging.INFO, logger="vsphere_kale.kube.informers")
    informer.start()
    try:
        wait_for("nine refused watches", enough.is_set, timeout=20)
    finally:
        informer.stop(5)
    # Then: each refusal doubles the wait, up to a minute; one sentence names what is missing.
    assert waits[:9] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    refused = [m for m in caplog.messages if "retrying with backoff" in m]
    assert len(refused) == 1 and "watch" in refused[0] and "events" in refused[0], refused
