"""Issue 10, finding 1: a namespace is managed because its Profile owns it, never for a name.

A Profile is cluster-scoped and its name is chosen by whoever registers it. On main a Profile
named ``kube-system`` bound the privileged PSP role to every service account there (psp) or
set ``enforce=baseline`` on it (psa, which rejects CNI and CSI pods on a real cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from reconcile_helpers import (
    ENFORCE,
    Reconcilers,
    ensure_namespace,
    events,
    ns_labels,
    read_binding,
    reconcilers,
    wait_events,
    wait_for,
)

from vsphere_kale.playground.kubeflow import build_profile
from vsphere_kale.reconcile.applier import NOT_OWNED
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings

HOSTILE = ("default", "kube-system", "kube-public", "vsphere-kale")
BINDING = "vsphere-kale-psp"


@pytest.fixture
def started() -> Iterator[Reconcilers]:
    with reconcilers() as group:
        yield group


def register_profile(api: client.ApiClient, name: str) -> None:
    """What any Kubeflow user can do through the dashboard: a Profile with a chosen name."""
    client.CustomObjectsApi(api).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", build_profile(name, "mallory@example.com")
    )


def granted(api: client.ApiClient, flavor: str, ns: str) -> bool:
    if flavor == "psp":
        return read_binding(api, ns, BINDING) is not None
    return ENFORCE in ns_labels(api, ns)


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_profiles_named_after_system_namespaces_change_nothing(
    flavor: str, sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    # Given the Kubeflow emulation and the system namespaces (ours included) already there,
    running = sandbox_factory(flavor=flavor, kubeflow=True)
    api = running.api_client()
    for ns in HOSTILE:
        ensure_namespace(api, ns)
    reconciler = started.start(running)
    # when Profiles are registered with their names, and one honest Profile after them,
    for ns in HOSTILE:
        register_profile(api, ns)
    register_profile(api, "alice")
    # then alice's namespace (owned by its Profile) is granted, proving the reconciler ran,
    wait_for("alice granted", lambda: granted(api, flavor, "alice"))
    for ns in HOSTILE:
        # and every system namespace is refused with a reason, an Event and no grant.
        result = reconciler.reconcile_now(ns)
        assert result.outcome == "skipped", (ns, result)
        assert "system namespace" in result.message and "extraNamespaces" in result.message
        (event,) = wait_events(api, ns, NOT_OWNED)
        assert event.type == "Warning" and "extraNamespaces" in event.message
        assert not granted(api, flavor, ns), ns
    assert reconciler.managed_namespaces() == ["alice"]


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_a_profile_for_someone_elses_namespace_is_refused(
    flavor: str, sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    # Given a team namespace that no Profile owns (created by an admin for another purpose),
    running = sandbox_factory(flavor=flavor, kubeflow=True)
    api = running.api_client()
    ensure_namespace(api, "payments")
    reconciler = started.start(running)
    # when a user registers a Profile named after it (the profile controller cannot adopt it),
    register_profile(api, "payments")
    # then the namespace is skipped with the reason in a Warning Event, and nothing is written.
    (event,) = wait_events(api, "payments", NOT_OWNED)
    assert event.message == "Skipped: namespace not owned by Profile payments."
    result = reconciler.reconcile_now("payments")
    assert result.outcome == "skipped" and "not owned by Profile payments" in result.message
    assert not granted(api, flavor, "payments")
    assert events(api, "payments", "PodSecurityBindingCreated") == []


def test_an_admin_can_still_list_a_system_namespace(
    sandbox_factory: Callable[..., RunningSandbox], started: Reconcilers
) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    ensure_namespace(api, "default")
    settings = Settings(pod_security=PodSecuritySettings(extra_namespaces=("default",)))
    reconciler = started.start(running, settings=settings)
    # (The start-up resync may have labelled it already: then this reconcile finds it ok.)
    result = reconciler.reconcile_now("default")
    assert result.outcome in ("labels-applied", "ok"), result
    assert ns_labels(api, "default")[ENFORCE] == "baseline"
    assert reconciler.managed_namespaces() == ["default"]
