"""The rendered admission policies: shape, settings as CEL literals, version choice, doctor.

Whether the CEL does what policy.storage does is proven on the real API server
(tests/realcp/test_admission_policy_equality.py); these pin the objects an admin applies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from vsphere_kale.errors import ConfigError
from vsphere_kale.install import admission_policy as ap
from vsphere_kale.install import doctor, render
from vsphere_kale.kube import Discovery
from vsphere_kale.policy.storage import LEGACY_CLASS_ANNOTATION, OPT_OUT_ANNOTATION
from vsphere_kale.settings import Settings, settings_from_mapping


def _settings(**storage: Any) -> Settings:
    return settings_from_mapping(
        {"namespace": "kale-sys", "storage": {"rwxStorageClass": "nfs-client", **storage}}
    )


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def _mutating(settings: Settings, version: str = "v1") -> dict[str, Any]:
    return _by_kind(ap.build_policy_objects(settings, api_version=version))[
        "MutatingAdmissionPolicy"
    ]


def test_every_storage_setting_is_a_cel_literal_and_the_install_namespace_is_excluded() -> None:
    settings = _settings(
        accessModes=["ReadWriteMany", "ReadOnlyMany"],
        rwxCapableClasses=["vsan-file", "cephfs"],
        excludedNamespaces=["kube-system"],
    )
    assert ap.build_literals(settings) == {
        "target": '"nfs-client"',
        "accessModes": '["ReadWriteMany", "ReadOnlyMany"]',
        "rwxCapableClasses": '["vsan-file", "cephfs"]',
        "excludedNamespaces": '["kube-system", "kale-sys"]',
    }
    text = json.dumps(_mutating(settings)["spec"])
    for literal in ap.build_literals(settings).values():
        assert json.dumps(literal)[1:-1] in text


def test_no_params_object_is_rendered_or_referenced() -> None:
    """The 1.36.3 defect: a re-created policy with paramKind could stay inert."""
    objects = ap.build_policy_objects(_settings(), api_version="v1")
    assert [o["kind"] for o in objects] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    for obj in objects:
        assert "paramKind" not in obj["spec"] and "paramRef" not in obj["spec"]
        assert "params." not in json.dumps(obj)


def test_a_settings_change_changes_the_rendered_policy() -> None:
    before = _mutating(_settings())
    after = _mutating(_settings(rwxStorageClass="cephfs-rwx"))
    assert before["spec"]["mutations"] != after["spec"]["mutations"]
    assert '"cephfs-rwx"' in after["spec"]["mutations"][0]["jsonPatch"]["expression"]


def test_without_an_rwx_class_the_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"storage\.rwxStorageClass"):
        ap.build_policy_objects(settings_from_mapping({}), api_version="v1")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_the_mutating_policy_and_binding_use_the_chosen_version(version: str) -> None:
    objects = _by_kind(ap.build_policy_objects(_settings(), api_version=version))
    group = "admissionregistration.k8s.io"
    assert objects["MutatingAdmissionPolicy"]["apiVersion"] == f"{group}/{version}"
    assert objects["MutatingAdmissionPolicyBinding"]["apiVersion"] == f"{group}/{version}"
    # ValidatingAdmissionPolicy is GA (v1) since 1.30: on every cluster that has MAP.
    assert objects["ValidatingAdmissionPolicy"]["apiVersion"] == f"{group}/v1"


def test_an_unknown_version_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--admission-policy-version"):
        ap.build_policy_objects(_settings(), api_version="v2")


def test_the_mutating_policy_acts_on_claim_creates_only_and_fails_open() -> None:
    spec = _mutating(_settings())["spec"]
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["persistentvolumeclaims"],
        }
    ]
    assert spec["failurePolicy"] == "Ignore"
    assert spec["reinvocationPolicy"] == "IfNeeded"
    assert [m["patchType"] for m in spec["mutations"]] == ["JSONPatch"]


def test_the_match_conditions_follow_policy_storage_rule_by_rule() -> None:
    spec = _mutating(_settings())["spec"]
    assert [c["name"] for c in spec["matchConditions"]] == [
        "namespace-not-excluded",
        "not-opted-out",
        "requests-a-rewritten-mode",
        "not-pre-bound",
        "no-data-source",
        "not-block-mode",
        "not-already-on-target",
        "not-rwx-capable",
    ]
    text = " ".join(c["expression"] for c in spec["matchConditions"])
    assert f'"{OPT_OUT_ANNOTATION}"' in text and f'"{LEGACY_CLASS_ANNOTATION}"' in text


def test_the_patch_records_the_original_class_and_rewrites_the_legacy_annotation() -> None:
    expression = ap.build_rewrite_patch_expression('"nfs-client"')
    assert "/metadata/annotations/vsphere-kale.io~1original-storage-class" in expression
    assert "/metadata/annotations/volume.beta.kubernetes.io~1storage-class" in expression
    assert '"/spec/storageClassName", value: "nfs-client"' in expression


def test_the_warnings_never_refuse_and_carry_the_webhook_s_audit_key() -> None:
    objects = _by_kind(ap.build_policy_objects(_settings(), api_version="v1"))
    assert objects["ValidatingAdmissionPolicyBinding"]["spec"] == {
        "policyName": ap.VALIDATING_POLICY,
        "validationActions": ["Warn", "Audit"],
    }
    validating = objects["ValidatingAdmissionPolicy"]["spec"]
    assert [a["key"] for a in validating["auditAnnotations"]] == [ap.AUDIT_KEY]


def test_every_object_is_labelled_managed_by_for_uninstall() -> None:
    for obj in ap.build_policy_objects(_settings(), api_version="v1"):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "vsphere-kale"


def _discovery(served: Mapping[str, tuple[str, ...]]) -> Discovery:
    """Discovery over fixed documents: the group's versions and each version's resources."""
    group = "admissionregistration.k8s.io"

    def fetch(path: str) -> Mapping[str, Any]:
        version = path.rsplit("/", 1)[1]
        return {"resources": [{"name": n} for n in served.get(version, ())]}

    return Discovery({group: tuple(served)}, fetch)


@pytest.mark.parametrize(
    ("served", "chosen"),
    [
        ({"v1": ("mutatingadmissionpolicies",), "v1beta1": ("mutatingadmissionpolicies",)}, "v1"),
        ({"v1beta1": ("mutatingadmissionpolicies",)}, "v1beta1"),
        # 1.34/35 without the gate: v1beta1 serves ValidatingAdmissionPolicy only.
        (
            {"v1": ("validatingadmissionpolicies",), "v1beta1": ("validatingadmissionpolicies",)},
            None,
        ),
        ({}, None),
    ],
)
def test_the_version_comes_from_discovery(
    served: Mapping[str, tuple[str, ...]], chosen: str | None
) -> None:
    assert _discovery(served).mutating_admission_policy_version == chosen


def _rendered() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vsphere-kale"}},
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "vsphere-kale"},
            "webhooks": [],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "vsphere-kale", "namespace": "vsphere-kale"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "vsphere-kale", "args": ["serve", "--no-webhook"]},
                            {"name": "webhook", "args": ["webhook"]},
                        ]
                    }
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "vsphere-kale", "namespace": "vsphere-kale"},
            "spec": {
                "ports": [
                    {"name": "https", "port": 443, "targetPort": "https"},
                    {"name": "admin", "port": 8444, "targetPort": "admin"},
                ]
            },
        },
    ]


def test_policy_mode_replaces_the_webhook_and_serves_without_its_route() -> None:
    out = render.build_manifests(_rendered(), settings=_settings(), admission="policy")
    kinds = [o["kind"] for o in render.sort_for_apply(out)]
    assert "MutatingWebhookConfiguration" not in kinds
    assert kinds.index("MutatingAdmissionPolicy") < kinds.index("MutatingAdmissionPolicyBinding")
    assert kinds.index("ValidatingAdmissionPolicy") < kinds.index(
        "ValidatingAdmissionPolicyBinding"
    )
    deployment = render.find(out, "Deployment", "vsphere-kale")
    assert deployment is not None
    # No webhook container and no Service port for it: kube-apiserver admits claims itself.
    # serve keeps the admin API and the reconciler, and does not rotate (no caBundle to keep).
    (serve,) = deployment["spec"]["template"]["spec"]["containers"]
    assert serve["args"] == ["serve", "--no-webhook", "--no-cert-rotation"]
    service = render.find(out, "Service", "vsphere-kale")
    assert service is not None
    assert [p["name"] for p in service["spec"]["ports"]] == ["admin"]
    render.set_ca_bundle(out, b"pem")  # nothing to trust, and no error


def test_webhook_mode_is_unchanged() -> None:
    out = render.build_manifests(_rendered(), settings=_settings())
    assert [o["kind"] for o in out] == [
        "Namespace",
        "MutatingWebhookConfiguration",
        "Deployment",
        "Service",
    ]
    (deployment,) = [o for o in out if o["kind"] == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["vsphere-kale", "webhook"]


def _binding() -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "spec": {"policyName": "x"}}


def test_doctor_says_policy_mode_is_active() -> None:
    settings = _settings()
    policy = _mutating(settings)
    status, message, _ = ap.decide_policy_check(
        policy, _binding(), webhook_configured=False, settings=settings
    )
    assert status == "ok" and message.startswith("admission by policy:"), message


@pytest.mark.parametrize(
    ("policy", "binding", "webhook", "status", "fragment"),
    [
        (None, True, False, "fail", "MutatingAdmissionPolicy vsphere-kale is missing"),
        (True, None, False, "fail", "MutatingAdmissionPolicyBinding vsphere-kale is missing"),
        (True, True, True, "warn", "both the webhook and the admission policy"),
    ],
)
def test_doctor_names_what_is_wrong(
    policy: bool | None, binding: bool | None, webhook: bool, status: str, fragment: str
) -> None:
    settings = _settings()
    got = ap.decide_policy_check(
        _mutating(settings) if policy else None,
        _binding() if binding else None,
        webhook_configured=webhook,
        settings=settings,
    )
    assert got[0] == status and fragment in got[1], got


def test_doctor_warns_when_the_live_policy_differs_from_the_settings() -> None:
    live = _mutating(_settings(rwxStorageClass="old-class"))
    status, message, fix = ap.decide_policy_check(
        live, _binding(), webhook_configured=False, settings=_settings()
    )
    assert status == "warn" and "differ from the installed settings" in message
    assert fix == "vsphere-kale install --admission policy"


def test_doctor_run_checks_replaces_the_webhook_line_in_policy_mode() -> None:
    settings = _settings()
    facts = doctor.DoctorFacts(settings=settings, settings_source="test")
    facts.admission_policy = (_mutating(settings), _binding())
    checks = {c.name: c for c in doctor.run_checks(facts, now=dt.datetime.now(dt.timezone.utc))}
    assert "webhook-configuration" not in checks
    assert checks["admission"].status == "ok"
    # and without a policy, the webhook is what doctor checks
    facts.admission_policy = None
    checks = {c.name: c for c in doctor.run_checks(facts, now=dt.datetime.now(dt.timezone.utc))}
    assert "admission" not in checks and checks["webhook-configuration"].status == "fail"
