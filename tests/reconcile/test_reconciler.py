"""The pod-security reconciler against the sandbox API server, with the real client.

Every scenario of issue 4: Profile then namespace, namespace then Profile, namespaces that
existed before start, deleted/edited bindings, the old tool's binding, PSA labels and an
admin's own values, auto mode, leader election and failover, injected faults, and 403.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from kubernetes import client

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from reconcile_helpers import (
    PSP_ROLE,
    Reconcilers,
    bindings_to_role,
    create_profile,
    ensure_namespace,
    events,
    ns_labels,
    read_binding,
    reconcilers,
    token_without_bind,
    wait_events,
    wait_for,
    writes_counted,
)

from vsphere_kale.policy.podsecurity import MANAGED_BY_LABEL, MANAGED_LABELS_ANNOTATION
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings

ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_WANT = {
    ENFORCE: "baseline",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@pytest.fixture
def started() -> Iterator[Reconcilers]:
    with reconcilers() as group:
        yield group


def has_psa_labels(api: client.ApiClient, ns: str) -> bool:
    labels = ns_labels(api, ns)
    return all(labels.get(k) == v for k, v in PSA_WANT.items())


# --- PSP mode ------------------------------------------------------------------------------


def test_profile_then_namespace_gets_a_binding_and_an_event(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    reconciler = started.start(running)
    assert reconciler.mode == "psp"

    # Given the Kubeflow emulation (Profile first, namespace after), when a Profile is created,
    create_profile(api, "alice")
    # then our binding appears: Group system:serviceaccounts:alice -> the PSP role.
    binding = wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"))
    assert binding.role_ref.kind == "ClusterRole" and binding.role_ref.name == PSP_ROLE
    assert [(s.kind, s.name) for s in binding.subjects] == [
        ("Group", "system:serviceaccounts:alice")
    ]
    assert binding.metadata.labels[MANAGED_BY_LABEL] == "vsphere-kale"
    (event,) = wait_events(api, "alice", "PodSecurityBindingCreated")
    assert event.involved_object.kind == "Namespace" and event.involved_object.name == "alice"
    assert event.reporting_component == "vsphere-kale"
    assert event.reporting_instance == "replica-a"
    assert reconciler.managed_namespaces() == ["alice"]


def test_namespace_then_profile(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp")
    api = running.api_client()
    reconciler = started.start(running)
    # Given a namespace without a Profile, it is not managed: nothing is created.
    ensure_namespace(api, "alice")
    result = reconciler.reconcile_now("alice")
    assert result.outcome == "skipped" and "no Kubeflow Profile" in result.message
    assert read_binding(api, "alice", "vsphere-kale-psp") is None
    # When the Profile is created for the existing namespace (the old tool missed this),
    create_profile(api, "alice")
    # then the binding follows.
    wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"))


def test_namespaces_that_existed_before_start(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo")
    api = running.api_client()
    assert read_binding(api, "alice", "vsphere-kale-psp") is None
    started.start(running)
    for ns in ("alice", "bob"):
        wait_for(f"binding in {ns}", lambda ns=ns: read_binding(api, ns, "vsphere-kale-psp"))
    assert read_binding(api, "kubeflow", "vsphere-kale-psp") is None  # no Profile


def test_deleted_binding_is_recreated(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    started.start(running)
    create_profile(api, "alice")
    first = wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"))
    client.RbacAuthorizationV1Api(api).delete_namespaced_role_binding("vsphere-kale-psp", "alice")
    again = wait_for(
        "re-created binding",
        lambda: (
            (b := read_binding(api, "alice", "vsphere-kale-psp"))
            and b.metadata.uid != first.metadata.uid
            and b
        ),
    )
    assert again.role_ref.name == PSP_ROLE


def test_edited_subjects_and_role_ref_are_repaired(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    reconciler = started.start(running)
    create_profile(api, "alice")
    wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"))

    # Subjects edited: patched back.
    rbac.patch_namespaced_role_binding(
        "vsphere-kale-psp",
        "alice",
        {
            "subjects": [
                {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}
            ]
        },
        _content_type="application/merge-patch+json",
    )
    wait_for(
        "subjects restored",
        lambda: (
            [s.name for s in read_binding(api, "alice", "vsphere-kale-psp").subjects]
            == ["system:serviceaccounts:alice"]
        ),
    )

    # roleRef is immutable, so an "edited" roleRef is a replaced binding: while no reconciler
    # runs, someone re-creates ours pointing at the restricted role.
    reconciler.stop()
    rbac.delete_namespaced_role_binding("vsphere-kale-psp", "alice")
    rbac.create_namespaced_role_binding(
        "alice",
        {
            "metadata": {"name": "vsphere-kale-psp", "labels": {MANAGED_BY_LABEL: "vsphere-kale"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "psp:vmware-system-restricted",
            },
            "subjects": [
                {
                    "kind": "Group",
                    "name": "system:serviceaccounts:alice",
                    "apiGroup": "rbac.authorization.k8s.io",
                }
            ],
        },
    )
    reconciler = started.start(running, identity="replica-b")
    # We delete it and create it again with the right role.
    wait_for(
        "roleRef repaired",
        lambda: (
            (b := read_binding(api, "alice", "vsphere-kale-psp")) and b.role_ref.name == PSP_ROLE
        ),
    )
    wait_events(api, "alice", "PodSecurityBindingRepaired", count=2)
    assert len(bindings_to_role(api, "alice")) == 1


def test_old_tool_binding_is_enough_not_duplicated(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp")
    api = running.api_client()
    # Given a namespace migrated from the Java tool, with its rb-all-sa_ns-<ns> binding,
    ensure_namespace(api, "alice")
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        "alice",
        {
            "metadata": {"name": "rb-all-sa_ns-alice"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": PSP_ROLE,
            },
            "subjects": [
                {
                    "kind": "Group",
                    "name": "system:serviceaccounts:alice",
                    "apiGroup": "rbac.authorization.k8s.io",
                }
            ],
        },
    )
    create_profile(api, "alice")
    reconciler = started.start(running)
    # then it counts as enough: no second binding is made, and it is left untouched (the
    # service may patch only its own binding, by name).
    result = reconciler.reconcile_now("alice")
    assert MANAGED_BY_LABEL not in (
        read_binding(api, "alice", "rb-all-sa_ns-alice").metadata.labels or {}
    )
    assert result.outcome == "ok" and "rb-all-sa_ns-alice" in result.message
    assert [b.metadata.name for b in bindings_to_role(api, "alice")] == ["rb-all-sa_ns-alice"]
    assert read_binding(api, "alice", "vsphere-kale-psp") is None


# --- PSA mode ------------------------------------------------------------------------------


def test_psa_labels_applied_with_ownership(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psa", kubeflow=True)
    api = running.api_client()
    reconciler = started.start(running)
    assert reconciler.mode == "psa"
    create_profile(api, "alice")
    wait_for("labels", lambda: has_psa_labels(api, "alice"))
    ns = client.CoreV1Api(api).read_namespace("alice")
    # Kubeflow's own labels are untouched (merge patch, not an update).
    assert ns.metadata.labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
    assert ns.metadata.labels["istio-injection"] == "enabled"
    assert MANAGED_LABELS_ANNOTATION in ns.metadata.annotations
    wait_events(api, "alice", "PodSecurityLabelsApplied")
    assert reconciler.wait_idle(5) and reconciler.events.flush(5)
    assert len(events(api, "alice", "PodSecurityLabelsApplied")) == 1


def test_psa_admin_value_respected_and_override_honored(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    for ns in ("alice", "bob"):
        ensure_namespace(api, ns, **{ENFORCE: "privileged"})
        create_profile(api, ns)
    # Default settings: the admin's enforce=privileged stays, the other labels are set.
    reconciler = started.start(running)
    wait_for("warn label", lambda: ns_labels(api, "alice").get("pod-security.kubernetes.io/warn"))
    result = reconciler.reconcile_now("alice")
    assert result.outcome == "conflict"
    assert "pod-security.kubernetes.io/enforce=privileged" in result.message
    assert "overrideExisting" in result.message
    assert ns_labels(api, "alice")[ENFORCE] == "privileged"
    reconciler.stop()

    # overrideExisting: true replaces it.
    override = replace(Settings(), pod_security=PodSecuritySettings(override_existing=True))
    started.start(running, settings=override, identity="replica-b")
    wait_for("override", lambda: has_psa_labels(api, "bob") and has_psa_labels(api, "alice"))


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_auto_mode_follows_discovery(
    flavor: str, sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor=flavor)
    reconciler = started.start(running)
    assert reconciler.mode == flavor
    metrics = reconciler.metrics.registry.get_sample_value(
        "vsphere_kale_podsecurity_mode", {"mode": flavor}
    )
    assert metrics == 1


def test_resync_with_nothing_to_do_makes_no_writes_and_no_lists(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    reconciler = started.start(running)
    for name in ("alice", "bob", "carol"):
        create_profile(api, name)
    for name in ("alice", "bob", "carol"):
        wait_for(name, lambda name=name: read_binding(api, name, "vsphere-kale-psp"))
    assert running.sandbox.wait_idle(5)
    assert reconciler.wait_idle(5)
    writes = writes_counted(reconciler)
    lists = {name: i.lister.lists for name, i in reconciler._informers.items()}
    rv = running.sandbox.store.resource_version
    assert reconciler.resync_now() == 3
    assert reconciler.wait_idle(5)
    assert writes_counted(reconciler) == writes
    assert {name: i.lister.lists for name, i in reconciler._informers.items()} == lists
    assert running.sandbox.store.resource_version == rv  # nothing at all was written
    assert reconciler.metrics.registry.get_sample_value(
        "vsphere_kale_podsecurity_last_full_resync_timestamp_seconds"
    ) == pytest.approx(time.time(), abs=10)


# --- leader election -----------------------------------------------------------------------


def test_only_the_leader_writes_and_failover_after_release(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    # A long lease (30 s): the follower can take over within the wait below only because the
    # leader released the Lease, not because it expired.
    long_lease = {"lease_duration": 30, "renew_deadline": 20}
    a = started.start(running, identity="replica-a", **long_lease)
    b = started.start(running, identity="replica-b", wait_leader=False, **long_lease)
    assert a.is_leader() and not b.is_leader()
    for name in ("alice", "bob"):
        create_profile(api, name)
        wait_for(name, lambda name=name: read_binding(api, name, "vsphere-kale-psp"))
    for name in ("alice", "bob"):
        wait_events(api, name, "PodSecurityBindingCreated")
    assert writes_counted(b) == 0 and writes_counted(a) >= 2
    reporters = {e.reporting_instance for ns in ("alice", "bob") for e in events(api, ns)}
    assert reporters == {"replica-a"}
    # An admin's reconcile sent to the follower runs the one-shot path: read, plan, no write.
    assert b.reconcile_now("alice").outcome == "ok"
    assert writes_counted(b) == 0

    # When the leader stops, it releases the Lease: the follower leads at its next retry
    # (0.3 s) instead of waiting out the 30 s lease.
    a.stop()
    wait_for("failover", b.is_leader, timeout=15)
    create_profile(api, "carol")
    wait_for("carol", lambda: read_binding(api, "carol", "vsphere-kale-psp"))
    wait_events(api, "carol", "PodSecurityBindingCreated")
    assert {e.reporting_instance for e in events(api, "carol")} == {"replica-b"}
    lease = client.CoordinationV1Api(api).read_namespaced_lease(
        "vsphere-kale-leader", "vsphere-kale"
    )
    assert lease.spec.holder_identity == "replica-b"


def test_failover_within_lease_duration_when_leader_dies(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    a = started.start(running, identity="replica-a")
    b = started.start(running, identity="replica-b", wait_leader=False)
    # A crash: the leader stops renewing without releasing.
    stopped_at = time.monotonic()
    a.stop(release_lease=False)
    wait_for("failover", b.is_leader, timeout=2 + 1.5)  # lease duration + a retry or two
    elapsed = time.monotonic() - stopped_at
    assert elapsed >= 1.0, "took over a lease that had not expired"
    create_profile(api, "alice")
    wait_for("alice", lambda: read_binding(api, "alice", "vsphere-kale-psp"))


# --- faults --------------------------------------------------------------------------------


def test_converges_through_injected_faults_without_duplicates(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    faults = running.sandbox.faults
    reconciler = started.start(running)
    # 500s on creating bindings, a 429 with Retry-After on creating one (a GET's 429 urllib3
    # already retries after Retry-After by itself; a POST it leaves to us), a dropped
    # namespace watch and a 410 on the profiles watch.
    faults.inject(verb="create", resource="rolebindings", namespace="alice", status=500, count=2)
    faults.inject(
        verb="create", resource="rolebindings", namespace="bob", status=429, retry_after=1
    )
    faults.inject(verb="watch", resource="namespaces", drop_connection=True)
    faults.inject(verb="watch", resource="profiles", status=410)
    running.sandbox.close_watches()  # every informer re-watches and meets the faults
    for name in ("alice", "bob", "carol"):
        create_profile(api, name)
    started_at = time.monotonic()
    for name in ("alice", "carol"):
        wait_for(name, lambda name=name: read_binding(api, name, "vsphere-kale-psp"), timeout=10)
    wait_for("bob", lambda: read_binding(api, "bob", "vsphere-kale-psp"), timeout=10)
    # bob waited for the server's Retry-After (1 s), not the 0.05 s backoff, before retrying.
    assert time.monotonic() - started_at >= 0.9
    assert faults.pending == 0, "some faults were never hit"
    assert reconciler.wait_idle(5)
    for name in ("alice", "bob", "carol"):
        assert len(bindings_to_role(api, name)) == 1
    assert (
        reconciler.metrics.registry.get_sample_value(
            "vsphere_kale_podsecurity_reconciles_total", {"result": "failed"}
        )
        >= 3
    )
    wait_events(api, "alice", "PodSecurityReconcileFailed")


def test_forbidden_binding_says_to_grant_bind(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
    admin = running.api_client()
    token = token_without_bind(admin)
    reconciler = started.start(running, token=token)

    result = reconciler.reconcile_now("alice")
    assert result.outcome == "failed"
    assert "needs `bind` on clusterrole/psp:vmware-system-privileged" in result.message
    (event,) = wait_events(admin, "alice", "PodSecurityReconcileFailed")
    assert event.type == "Warning" and "bind" in event.message
    assert (
        reconciler.metrics.registry.get_sample_value(
            "vsphere_kale_podsecurity_reconciles_total", {"result": "failed"}
        )
        >= 1
    )
    # It retries (the failures count grows), and without a crash loop: each retry waits a
    # longer backoff (0.05 s doubling, +/-20 %), so the 5th failure comes at least ~0.32 s
    # after the 4th (a lower bound: a busy machine only makes it later).
    queue = reconciler._queue
    wait_for("three retries", lambda: queue.failures("alice") >= 4, timeout=10)
    fourth = time.monotonic()
    wait_for("a fourth retry", lambda: queue.failures("alice") >= 5, timeout=10)
    assert time.monotonic() - fourth >= 0.05 * 2**3 * 0.8 - 0.05
    assert reconciler.is_leader()
