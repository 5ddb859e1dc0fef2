"""The namespace guard as rendered: when it is installed, and the settings it inlines.

What its CEL allows and refuses is proven on kube-apiserver
(tests/realcp/test_realcp_namespace_guard.py); these pin the objects an admin applies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from vsphere_kale.cli import main
from vsphere_kale.errors import ConfigError
from vsphere_kale.install import namespace_guard as guard
from vsphere_kale.install import render
from vsphere_kale.install.installer import InstallOptions, render_offline
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import Settings, settings_from_mapping

KINDS = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]


def _settings(**pod_security: Any) -> Settings:
    return settings_from_mapping(
        {
            "namespace": "kale-sys",
            "storage": {"rwxStorageClass": "nfs-client"},
            "podSecurity": pod_security,
        }
    )


def _guard_kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [
        o["kind"] for o in render.sort_for_apply(objects) if o["metadata"]["name"] == guard.NAME
    ]


@pytest.mark.parametrize(
    ("choice", "served", "installed"),
    [
        ("auto", True, True),
        ("auto", False, False),  # Kubernetes < 1.30, TKG with PSP: nothing to install
        ("auto", None, True),  # offline: v1 is in every supported Kubernetes
        ("always", True, True),
        ("always", None, True),
        ("never", True, False),
        ("never", None, False),
    ],
)
def test_when_the_guard_is_installed(choice: str, served: bool | None, installed: bool) -> None:
    assert guard.decide_guard(choice, served=served) is installed


def test_always_on_a_cluster_without_the_kind_names_the_key() -> None:
    with pytest.raises(ConfigError) as refused:
        guard.decide_guard("always", served=False)
    assert refused.value.key == "podSecurity.namespaceGuard"
    assert "set it to auto or never" in str(refused.value)


def test_only_the_service_accounts_writes_are_judged_and_refusals_deny() -> None:
    policy, binding = guard.build_guard_objects(_settings())
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username == "system:serviceaccount:kale-sys:vsphere-kale"'
    )
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["namespaces"],
        }
    ]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"] == {"policyName": guard.NAME, "validationActions": ["Deny"]}
    assert "paramKind" not in policy["spec"] and "paramRef" not in binding["spec"]


def test_the_namespace_lists_are_cel_literals() -> None:
    policy, _ = guard.build_guard_objects(
        _settings(extraNamespaces=["kubeflow", "istio-system"], excludedNamespaces=["lab"])
    )
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert json.loads(variables["extra"]) == ["kubeflow", "istio-system"]
    assert json.loads(variables["excluded"]) == ["lab"]
    # The service's own namespace is protected like default and kube-*
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert 'variables.name == "kale-sys"' in expressions


def test_render_adds_the_policy_before_its_binding_only_when_asked() -> None:
    rendered = render.fetch_rendered(())
    settings = _settings()
    with_guard = render.build_manifests(rendered, settings=settings, guard=True)
    assert _guard_kinds(with_guard) == KINDS
    assert _guard_kinds(render.build_manifests(rendered, settings=settings)) == []
    # Beside policy mode's own ValidatingAdmissionPolicy: two names, no clash
    both = render.build_manifests(rendered, settings=settings, guard=True, admission="policy")
    names = [o["metadata"]["name"] for o in both if o["kind"] == "ValidatingAdmissionPolicy"]
    assert sorted(names) == sorted(["vsphere-kale", guard.NAME])


def test_offline_rendering_follows_the_setting() -> None:
    rendered = render.fetch_rendered(())
    for choice, kinds in (("auto", KINDS), ("always", KINDS), ("never", [])):
        options = InstallOptions(_settings(namespaceGuard=choice))
        objects = render_offline(options, rendered=rendered, with_certificates=False)
        assert _guard_kinds(objects) == kinds, choice


def test_always_on_the_sandbox_is_refused_before_anything_is_written(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """The sandbox serves no ValidatingAdmissionPolicy (it evaluates no CEL)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"rwxStorageClass": "nfs-client"},
                "podSecurity": {"namespaceGuard": "always"},
            }
        )
    )
    done = CliRunner().invoke(
        main,
        ["install", "--kubeconfig", str(sandbox.kubeconfig_path), "--config", str(config)],
    )
    assert done.exit_code != 0
    assert "podSecurity.namespaceGuard" in done.stderr
    assert "Traceback" not in done.stderr
    names = [n.metadata.name for n in client.CoreV1Api(sandbox.api_client()).list_namespace().items]
    assert "vsphere-kale" not in names


@pytest.mark.parametrize("version", ["1.30.0", "latest"])
def test_the_guard_validates_strictly_from_kubernetes_1_30(version: str) -> None:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils

    wanted = kv_utils.latest_version() if version == "latest" else version
    for obj in guard.build_guard_objects(_settings(extraNamespaces=["kubeflow"])):
        kubernetes_validate.validate(obj, wanted, strict=True)


# --- doctor's namespace-guard line ------------------------------------------------------------


def _check(settings: Settings, **read: Any) -> tuple[str, str]:
    from vsphere_kale.install.doctor_guard import decide_guard_check

    check = decide_guard_check(
        settings=settings,
        served=read.pop("served", True),
        policy=read.pop("policy", None),
        binding=read.pop("binding", None),
        caller=read.pop("caller", ""),
    )
    return check.status, check.message


def test_doctor_finds_the_guard_in_place() -> None:
    settings = _settings(extraNamespaces=["kubeflow"])
    policy, binding = guard.build_guard_objects(settings)
    assert _check(settings, policy=policy, binding=binding)[0] == "ok"


def test_doctor_warns_when_the_guard_is_missing_where_it_could_run() -> None:
    settings = _settings()
    policy, _ = guard.build_guard_objects(settings)
    status, message = _check(settings)
    assert status == "warn" and "may relabel any namespace" in message
    status, message = _check(settings, policy=policy)
    assert status == "warn" and "its binding" in message
    # An admin's choice, or a cluster that cannot run it: said, not warned
    assert _check(_settings(namespaceGuard="never"))[0] == "ok"
    status, message = _check(settings, served=False)
    assert status == "ok" and "Kubernetes < 1.30" in message


def test_doctor_warns_when_the_guard_would_refuse_the_reconciler_or_denies_nothing() -> None:
    policy, binding = guard.build_guard_objects(_settings())
    status, message = _check(
        _settings(extraNamespaces=["kubeflow"]), policy=policy, binding=binding
    )
    assert status == "warn" and "podSecurity.extraNamespaces" in message
    audit_only = {**binding, "spec": {**binding["spec"], "validationActions": ["Audit"]}}
    status, message = _check(_settings(), policy=policy, binding=audit_only)
    assert status == "warn" and "not Deny" in message


def test_doctor_without_the_right_to_read_the_guard_says_cannot_check() -> None:
    from vsphere_kale.policy import health

    refused = health.Unreadable("get validatingadmissionpolicies")
    status, message = _check(_settings(), policy=refused, caller="alice")
    assert status == "fail" and message.startswith("cannot check")
