"""doctor warns when ``podSecurity.extraNamespaces`` lists a system namespace (issue 10)."""

from __future__ import annotations

import datetime as dt

import pytest

from vsphere_kale.install.doctor import DoctorFacts, decide_exit_code, run_checks
from vsphere_kale.install.doctor_namespaces import decide_extra_namespaces
from vsphere_kale.settings import Settings, settings_from_mapping

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)


def settings(extra: list[str]) -> Settings:
    return settings_from_mapping(
        {"storage": {"rwxStorageClass": "nfs-client"}, "podSecurity": {"extraNamespaces": extra}}
    )


@pytest.mark.parametrize("system", ["kube-system", "kube-public", "default", "vsphere-kale"])
def test_a_listed_system_namespace_is_a_warning_that_names_it(system: str) -> None:
    (check,) = decide_extra_namespaces(settings(["kubeflow", system]))
    assert check.status == "warn"
    assert check.name == "extra-namespaces"
    assert system in check.message and "kubeflow" not in check.message
    assert f"remove {system} from podSecurity.extraNamespaces" in check.hint


def test_ordinary_extra_namespaces_add_no_row() -> None:
    assert decide_extra_namespaces(settings(["kubeflow", "istio-system"])) == []


def test_doctor_shows_the_warning_and_a_warning_alone_does_not_fail_it() -> None:
    facts = DoctorFacts(settings=settings(["kube-system"]), settings_source="test")
    checks = run_checks(facts, now=NOW)
    warned = [c for c in checks if c.name == "extra-namespaces"]
    assert [c.status for c in warned] == ["warn"]
    without = run_checks(
        DoctorFacts(settings=settings([]), settings_source="test"),
        now=NOW,
    )
    assert "extra-namespaces" not in [c.name for c in without]
    # The exit code is the other checks' verdict: the warning changes nothing.
    assert decide_exit_code(checks) == decide_exit_code(without)
