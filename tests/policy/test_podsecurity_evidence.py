"""Pod Security rejections parsed from the API server's own text; Istio-aware and auto levels.

``tests/fixtures/podsecurity_rejections.json`` holds messages recorded from a real
kube-apiserver v1.36.3 (recorded by the control-plane tests); the other messages are built
from the forbidden-reason formats of k8s.io/pod-security-admission's ``policy/check_*.go``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsphere_kale.policy.kale_podsecurity import (
    IstioCniFacts,
    build_istio_cni_facts,
    decide_auto_level,
    decide_istio,
    decide_level_mismatch,
)
from vsphere_kale.policy.podsecurity_evidence import (
    parse_dry_run_warnings,
    parse_rejection,
    rejections_from_events,
    rejections_from_workflow,
    split_checks,
)

RECORDED = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_rejections.json").read_text()
)["cases"]

ISTIO_BASELINE = (
    'pods "nb-0" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities '
    '(container "istio-init" must not include "NET_ADMIN", "NET_RAW" in '
    "securityContext.capabilities.add)"
)


# --- the API server's recorded messages ------------------------------------------------------


def test_recorded_restricted_istio_init_needs_privileged() -> None:
    rejection = parse_rejection(RECORDED["restricted-istio-init"]["message"])
    assert rejection is not None
    assert (rejection.level, rejection.version, rejection.pod) == (
        "restricted",
        "latest",
        "istio-step",
    )
    assert [v.check for v in rejection.violations] == [
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "runAsUser=0",
        "seccompProfile",
    ]
    caps = next(v for v in rejection.violations if v.check == "unrestricted capabilities")
    assert caps.capabilities == ("NET_ADMIN", "NET_RAW")
    assert caps.containers == ("step", "istio-init")
    assert caps.needs == "privileged"
    assert rejection.needs == "privileged"
    assert set(rejection.containers) == {"step", "istio-init"}


def test_recorded_restricted_root_step_needs_baseline() -> None:
    rejection = parse_rejection(RECORDED["restricted-root-step"]["message"])
    assert rejection is not None
    assert rejection.needs == "baseline"
    assert {v.needs for v in rejection.violations} == {"baseline"}
    assert rejection.containers == ("step",)


def test_recorded_baseline_istio_init_needs_privileged() -> None:
    rejection = parse_rejection(RECORDED["baseline-istio-init"]["message"])
    assert rejection is not None
    (violation,) = rejection.violations
    assert (violation.check, violation.containers, violation.capabilities) == (
        "non-default capabilities",
        ("istio-init",),
        ("NET_ADMIN", "NET_RAW"),
    )
    assert rejection.needs == "privileged"


# --- formats from check_*.go -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "checks", "needs"),
    [
        (
            "restricted",
            'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
            "privileged",
        ),
        (
            "restricted",
            'seccompProfile (pod or container "a" must set securityContext.seccompProfile.type '
            'to "RuntimeDefault" or "Localhost")',
            "baseline",
        ),
        (
            "restricted",
            'unrestricted capabilities (container "a" must not include "SYS_ADMIN" in '
            "securityContext.capabilities.add)",
            "privileged",
        ),
        (
            "restricted",
            'unrestricted capabilities (container "a" must not include "CHOWN" in '
            "securityContext.capabilities.add)",
            "baseline",
        ),
        (
            "restricted",
            'restricted volume types (volumes ["data"] have restricted types)',
            "baseline",
        ),
        ("restricted", "host namespaces (hostNetwork, hostPID)", "privileged"),
        (
            "baseline",
            'privileged (containers "a", "b" must not set securityContext.privileged=true)',
            "privileged",
        ),
        ("baseline", 'hostPath volumes (volume "docker-sock")', "privileged"),
        ("baseline", 'hostPort (container "a" uses hostPort 8080)', "privileged"),
        ("restricted", "some future check (detail)", "privileged"),
    ],
)
def test_least_level_per_check(level: str, checks: str, needs: str) -> None:
    rejection = parse_rejection(
        f'pods "p" is forbidden: violates PodSecurity "{level}:v1.36": {checks}'
    )
    assert rejection is not None
    assert rejection.needs == needs


def test_checks_split_on_top_level_commas_only() -> None:
    assert split_checks('a (x, "y, z"), b, c (w (v))') == [
        ("a", 'x, "y, z"'),
        ("b", ""),
        ("c", "w (v)"),
    ]


def test_not_a_rejection() -> None:
    assert parse_rejection('pods "p" is forbidden: exceeded quota: compute') is None


def test_control_characters_never_reach_the_message() -> None:
    rejection = parse_rejection(ISTIO_BASELINE + "\x1b[31m\n")
    assert rejection is not None
    assert "\x1b" not in rejection.message and "\n" not in rejection.message


# --- evidence: Events and Argo workflows -----------------------------------------------------


def event(kind: str, name: str, message: str, reason: str = "FailedCreate") -> dict[str, Any]:
    return {
        "reason": reason,
        "type": "Warning",
        "message": message,
        "involvedObject": {"kind": kind, "name": name, "namespace": "alice"},
    }


def test_failed_create_events_on_workloads() -> None:
    events = [
        event(
            "StatefulSet", "nb", f"Create Pod nb-0 in StatefulSet nb failed error: {ISTIO_BASELINE}"
        ),
        event(
            "ReplicaSet",
            "web-5d8f",
            "Error creating: " + RECORDED["restricted-root-step"]["message"],
        ),
        event("Job", "j", 'Error creating: pods "j-" is forbidden: exceeded quota'),
        event("Pod", "x", ISTIO_BASELINE),
        event("StatefulSet", "nb", ISTIO_BASELINE, reason="SuccessfulCreate"),
    ]
    found = rejections_from_events(events)
    assert [(r.source, r.pod, r.needs) for r in found] == [
        ("StatefulSet alice/nb", "nb-0", "privileged"),
        ("ReplicaSet alice/web-5d8f", "root-step", "baseline"),
    ]
    json.dumps([r.to_json() for r in found])


def test_argo_workflow_node_messages() -> None:
    workflow = {
        "metadata": {"name": "wf", "namespace": "alice"},
        "status": {
            "nodes": {
                "wf-1": {
                    "displayName": "step-a",
                    "phase": "Error",
                    "message": RECORDED["restricted-root-step"]["message"],
                },
                "wf-2": {"displayName": "step-b", "phase": "Succeeded"},
            }
        },
    }
    (found,) = rejections_from_workflow(workflow)
    assert found.source == "Workflow alice/wf node step-a"
    assert found.needs == "baseline"


def existing(namespace: str, level: str) -> str:
    return (
        f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
        f'"{level}"'
    )


def test_dry_run_warnings_as_kubectl_prints_them() -> None:
    warnings = [
        existing("alice", "restricted:latest"),
        "nb-0 (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, "
        "runAsNonRoot != true, seccompProfile",
        "ml-pipeline-ui-abc: seccompProfile",
    ]
    found = parse_dry_run_warnings(warnings)
    assert [(f.pod, f.other_pods, f.level, f.checks[-1]) for f in found] == [
        ("nb-0", 2, "restricted", "seccompProfile"),
        ("ml-pipeline-ui-abc", 0, "restricted", "seccompProfile"),
    ]


# --- Istio and psaLevel auto -----------------------------------------------------------------

CNI_DS = {"metadata": {"name": "istio-cni-node", "namespace": "kube-system"}}
CNI_CM = {"metadata": {"name": "istio-cni-config", "namespace": "istio-system"}}


@pytest.mark.parametrize(
    ("labels", "daemonsets", "configmaps", "istio_init", "needs"),
    [
        ({"istio-injection": "enabled"}, [], [], True, "privileged"),
        ({"istio-injection": "enabled"}, [CNI_DS], [], False, "baseline"),
        ({"istio-injection": "enabled"}, None, [CNI_CM], False, "baseline"),
        ({"istio-injection": "enabled"}, None, None, True, "privileged"),
        ({"istio.io/rev": "1-24"}, [], [], True, "privileged"),
        ({"istio-injection": "disabled", "istio.io/rev": "1-24"}, [], [], False, "baseline"),
        ({}, [], [], False, "baseline"),
        (
            {"istio-injection": "enabled"},
            [{"metadata": {"name": "istio-cni-node", "namespace": "other"}}],
            [],
            True,
            "privileged",
        ),
    ],
)
def test_istio_decides_notebook_level(
    labels: dict[str, str], daemonsets: Any, configmaps: Any, istio_init: bool, needs: str
) -> None:
    verdict = decide_istio(labels, build_istio_cni_facts(daemonsets, configmaps))
    assert (verdict.istio_init, verdict.needs) == (istio_init, needs)


def test_auto_level_profile_namespace_with_istio_init_is_privileged() -> None:
    istio = decide_istio({"istio-injection": "enabled"}, IstioCniFacts())
    auto = decide_auto_level(runs_notebooks=True, istio=istio, steps="kfp-v2-restricted")
    assert auto.level == "privileged"
    assert "istio-init adds NET_ADMIN and NET_RAW" in auto.why
    assert decide_level_mismatch("baseline", auto) is not None
    assert decide_level_mismatch("privileged", auto) is None


def test_auto_level_with_istio_cni_is_baseline() -> None:
    istio = decide_istio(
        {"istio-injection": "enabled"}, IstioCniFacts(daemonsets=("kube-system/istio-cni-node",))
    )
    assert (
        decide_auto_level(runs_notebooks=True, istio=istio, steps="kfp-v2-restricted").level
        == "baseline"
    )


def test_auto_level_steps_only_namespace_is_restricted_until_evidence_says_otherwise() -> None:
    assert (
        decide_auto_level(runs_notebooks=False, istio=None, steps="kfp-v2-restricted").level
        == "restricted"
    )
    assert (
        decide_auto_level(runs_notebooks=False, istio=None, steps="kfp-v2-root").level == "baseline"
    )
    rejection = parse_rejection(ISTIO_BASELINE, source="StatefulSet alice/nb")
    assert rejection is not None
    auto = decide_auto_level(runs_notebooks=False, istio=None, steps="none", rejections=[rejection])
    assert auto.level == "privileged" and "StatefulSet alice/nb" in auto.why


def test_auto_level_follows_the_api_servers_dry_run() -> None:
    at_restricted = parse_dry_run_warnings(
        [
            existing("a", "restricted:latest"),
            "nb-0: seccompProfile",
        ]
    )
    at_baseline = parse_dry_run_warnings(
        [
            existing("a", "baseline:latest"),
            "nb-0: non-default capabilities",
        ]
    )
    common = {"runs_notebooks": False, "istio": None, "steps": "none"}
    assert (
        decide_auto_level(**common, dry_run_baseline=[], dry_run_restricted=at_restricted).level
        == "baseline"
    )  # type: ignore[arg-type]
    assert (
        decide_auto_level(
            **common, dry_run_baseline=at_baseline, dry_run_restricted=at_restricted
        ).level
        == "privileged"
    )  # type: ignore[arg-type]
    assert (
        decide_auto_level(**common, dry_run_baseline=[], dry_run_restricted=[]).level
        == "restricted"
    )  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    tail=st.text(alphabet='ab "(),:;=!\n\x1b', max_size=80),
    level=st.sampled_from(["baseline", "restricted"]),
)
def test_any_text_after_the_prefix_parses_without_raising(tail: str, level: str) -> None:
    rejection = parse_rejection(
        f'pods "p" is forbidden: violates PodSecurity "{level}:latest": {tail}'
    )
    assert rejection is not None
    assert rejection.needs in ("baseline", "privileged")
    json.dumps(rejection.to_json())
