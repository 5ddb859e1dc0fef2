"""doctor's ``pod-security-level`` check: the configured psaLevel against what namespaces need.

Against the sandbox's kubeflow-demo seed (psa flavor): alice's notebook pod was refused for
istio-init; bob has Istio injection and no Istio CNI either, but nothing refused yet.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vsphere_kale.install import doctor_psa
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.psa_level import PsaDecision
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings


def settings(level: str, mode: str = "psa") -> Settings:
    return Settings(pod_security=PodSecuritySettings(mode=mode, psa_level=level))


@pytest.fixture
def decisions(sandbox_factory: Callable[..., RunningSandbox]) -> list[PsaDecision]:
    running = sandbox_factory(seed="kubeflow-demo")
    kube = Kube(running.api_client())
    namespaces = kube.list(r.NAMESPACE)["items"]
    profiles = kube.list(r.PROFILE)["items"]
    found = doctor_psa.fetch_psa_decisions(
        kube, settings=settings("baseline"), namespaces=namespaces, profiles=profiles
    )
    assert isinstance(found, list)
    return found


def test_baseline_warns_naming_istio_init_in_alice(
    decisions: list[PsaDecision],
) -> None:
    assert {d.namespace: d.level for d in decisions} == {"alice": "privileged", "bob": "privileged"}
    status, message, hint = doctor_psa.decide_psa_level_check(
        decisions, settings=settings("baseline"), psp_served=False
    )
    # A rejection is on record in alice: said first, as a warning (a workload to repair, like a
    # stuck claim; doctor's exit code is for the installation itself).
    assert status == "warn"
    assert message.startswith(
        "notebook pods in alice get istio-init (NET_ADMIN, NET_RAW), which only privileged "
        "admits; psaLevel is baseline"
    )
    assert message.endswith("(and 1 more namespaces)")
    assert "psaLevel: auto" in hint


def test_privileged_auto_and_psp_mode_pass(decisions: list[PsaDecision]) -> None:
    ok, message, _ = doctor_psa.decide_psa_level_check(
        decisions, settings=settings("privileged"), psp_served=False
    )
    assert (ok, message) == ("ok", "psaLevel privileged admits what 2 managed namespaces run")
    ok, message, _ = doctor_psa.decide_psa_level_check(
        decisions, settings=settings("auto"), psp_served=False
    )
    assert (ok, message) == ("ok", "psaLevel auto: alice=privileged, bob=privileged")
    ok, message, _ = doctor_psa.decide_psa_level_check(
        None, settings=settings("baseline", mode="auto"), psp_served=True
    )
    assert (ok, message) == ("ok", "mode psp: no enforce level to judge")


def test_inferred_only_is_a_warning(decisions: list[PsaDecision]) -> None:
    bob = [d for d in decisions if d.namespace == "bob"]
    status, message, _ = doctor_psa.decide_psa_level_check(
        bob, settings=settings("baseline"), psp_served=False
    )
    assert status == "warn" and message.startswith("notebook pods in bob get istio-init")


def test_unreadable_events_is_a_warning_saying_what_to_grant() -> None:
    status, message, hint = doctor_psa.decide_psa_level_check(
        "cannot judge pod-security levels: the caller may not list events",
        settings=settings("baseline"),
        psp_served=False,
    )
    assert status == "warn" and "list events" in message and "events" in hint
