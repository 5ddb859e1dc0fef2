"""Health verdicts (pure): PVCs, pod security, webhook, and the overall rules."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from vsphere_kale.install.certs import build_ca
from vsphere_kale.policy import health
from vsphere_kale.policy.health import (
    PodSecurityFacts,
    Unreadable,
    build_namespace_status,
    decide_overall,
    decide_pod_security,
    decide_webhook,
)
from vsphere_kale.settings import StorageSettings

NOW = dt.datetime(2026, 11, 25, 19, 40, tzinfo=dt.timezone.utc)
STORAGE = StorageSettings(rwx_storage_class="nfs-client", rwx_capable_classes=("vsan-file",))
BLOCK = "vsan-default-storage-policy"


def iso(delta: dt.timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def sc(name: str, provisioner: str, *, default: bool = False) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"metadata": {"name": name, "annotations": annotations}, "provisioner": provisioner}


CLASSES = [
    sc(BLOCK, "csi.vsphere.vmware.com", default=True),
    sc("nfs-client", "cluster.local/nfs-subdir-external-provisioner"),
    sc("vsan-file", "csi.vsphere.vmware.com"),
    sc("other-nfs", "nfs.csi.k8s.io"),
    {**sc("wffc", "csi.vsphere.vmware.com"), "volumeBindingMode": "WaitForFirstConsumer"},
]


def pvc(
    name: str = "data",
    *,
    modes: tuple[str, ...] = ("ReadWriteMany",),
    klass: str | None = BLOCK,
    phase: str = "Pending",
    age: int = 600,
    annotations: dict[str, str] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": list(modes),
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if klass is not None:
        spec["storageClassName"] = klass
    status: dict[str, Any] = {"phase": phase}
    if phase == "Bound":
        status["capacity"] = {"storage": "2Gi"}
        spec["volumeName"] = f"pvc-{name}"
    return {
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": iso(-dt.timedelta(seconds=age)),
            "annotations": annotations or {},
        },
        "spec": spec,
        "status": status,
    }


def event(
    claim: str,
    message: str,
    *,
    reason: str = "ProvisioningFailed",
    at: int = 0,
    uid: str | None = "default",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "PersistentVolumeClaim", "name": claim}
    if uid is not None:
        ref["uid"] = f"uid-{claim}" if uid == "default" else uid
    return {
        "metadata": {"name": f"{claim}.{at}"},
        "involvedObject": ref,
        "reason": reason,
        "type": "Warning",
        "message": message,
        "lastTimestamp": iso(dt.timedelta(seconds=at)),
    }


OK_PS = PodSecurityFacts(
    mode="psp",
    managed=True,
    required="RoleBinding vsphere-kale-psp -> ClusterRole psp:vmware-system-privileged",
    outcome="ok",
)


def ca_bundle(days: int) -> str:
    cert, _ = build_ca("test-ca", days=days)
    return base64.b64encode(cert).decode()


def mwc(bundle: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "vsphere-kale"},
        "webhooks": [
            {
                "name": "pvc.vsphere-kale.io",
                "clientConfig": {"caBundle": ca_bundle(365) if bundle is None else bundle},
            }
        ],
    }


def status(
    pvcs: list[dict[str, Any]] | Unreadable,
    *,
    events: list[dict[str, Any]] | Unreadable = (),
    classes: list[dict[str, Any]] | Unreadable = CLASSES,
    webhook: dict[str, Any] | Unreadable | str | None = "default",
    ps: PodSecurityFacts = OK_PS,
    can_reconcile: bool = True,
    storage: StorageSettings = STORAGE,
) -> health.NamespaceHealth:
    return build_namespace_status(
        "alice",
        pvcs=pvcs,
        events=list(events) if not isinstance(events, Unreadable) else events,
        storage_classes=classes,
        webhook_configuration=mwc() if webhook == "default" else webhook,
        pod_security=ps,
        storage=storage,
        can_reconcile=can_reconcile,
        source="admin-api",
        now=NOW,
    )


# --- PVC verdicts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "events", "verdict", "severity"),
    [
        pytest.param(pvc(klass="nfs-client", phase="Bound"), [], "ok", None, id="rwx-on-nfs"),
        pytest.param(
            pvc(klass="vsan-file", phase="Pending"),
            [],
            "pending",
            "warning",
            id="rwx-capable-class-pending-is-just-pending",
        ),
        pytest.param(pvc(modes=("ReadWriteOnce",), phase="Bound"), [], "ok", None, id="rwo-block"),
        pytest.param(pvc(), [], "rwx-on-block-class", "error", id="rwx-pending-on-block"),
        pytest.param(
            pvc(klass=None),
            [],
            "rwx-on-block-class",
            "error",
            id="no-class-means-default-block-class",
        ),
        pytest.param(
            pvc(phase="Bound"),
            [],
            "rwx-on-block-class",
            "warning",
            id="rwx-bound-on-block-is-warning",
        ),
        pytest.param(
            pvc(klass="other-nfs"),
            [],
            "rwx-on-block-class",
            "error",
            id="rwx-pending-on-unlisted-class",
        ),
        pytest.param(
            pvc(klass="other-nfs", phase="Bound"),
            [],
            "ok",
            None,
            id="rwx-bound-on-unlisted-non-block-class",
        ),
        pytest.param(pvc(klass=""), [], "pending", "warning", id="explicit-no-class"),
        pytest.param(pvc(phase="Lost"), [], "lost", "error", id="lost"),
        pytest.param(
            pvc(modes=("ReadWriteOnce",), phase="Lost"), [], "lost", "error", id="lost-rwo"
        ),
        pytest.param(
            pvc(modes=("ReadWriteOnce",)),
            [event("data", "quota exceeded")],
            "pending",
            "error",
            id="pending-with-provisioning-failure",
        ),
        pytest.param(
            pvc(modes=("ReadWriteOnce",), age=10), [], "pending", "info", id="pending-young"
        ),
        pytest.param(
            pvc(modes=("ReadWriteOnce",), klass="wffc"),
            [],
            "pending",
            "info",
            id="pending-wait-for-first-consumer",
        ),
        pytest.param(
            pvc(
                modes=("ReadWriteOnce",),
                klass="wffc",
                annotations={"volume.kubernetes.io/selected-node": "node-1"},
            ),
            [],
            "pending",
            "warning",
            id="wffc-scheduled-but-pending",
        ),
        pytest.param(pvc(modes=("ReadWriteOnce",)), [], "pending", "warning", id="pending-old"),
        pytest.param(
            pvc(modes=("ReadWriteOnce",), phase="Bound"),
            [event("data", "old")],
            "ok",
            None,
            id="bound-ignores-old-failures",
        ),
    ],
)
def test_pvc_verdicts(
    claim: dict[str, Any], events: list[dict[str, Any]], verdict: str, severity: str | None
) -> None:
    result = status([claim], events=events).pvcs[0]

    assert (result.verdict, result.severity) == (verdict, severity)
    if severity in ("error", "warning"):
        assert result.message.endswith(".")
        assert result.hint and "\n" not in result.hint


def test_rwx_on_block_names_the_class_and_the_failure_and_the_fix() -> None:
    claim = pvc("wf-1-kale-marshal-pvc")
    events = [
        event("wf-1-kale-marshal-pvc", "old failure", at=-100),
        event("wf-1-kale-marshal-pvc", "failed to provision volume: RWX not supported", at=-5),
    ]

    result = status([claim], events=events).pvcs[0]

    assert result.kale_marshal
    assert result.verdict == "rwx-on-block-class"
    assert "the Kale pipeline's marshal volume" in result.message
    assert BLOCK in result.message and "gives block volumes only" in result.message
    assert "failed to provision volume: RWX not supported" in result.message
    assert "old failure" not in result.message
    assert result.hint == (
        "Delete the claim and re-run the pipeline; the webhook now places RWX claims on nfs-client"
    )


def test_plain_claim_hint_and_json_fields() -> None:
    result = status([pvc("data", klass=None)]).pvcs[0].to_json()

    assert result == {
        "name": "data",
        "accessModes": ["ReadWriteMany"],
        "storageClass": BLOCK,
        "phase": "Pending",
        "capacity": "1Gi",
        "ageSeconds": 600,
        "kaleMarshal": False,
        "verdict": "rwx-on-block-class",
        "severity": "error",
        "message": result["message"],
        "hint": "Delete and recreate the claim; the webhook now places RWX claims on nfs-client",
        "recreateRefusal": None,
    }
    assert "created before the webhook" in result["message"]


@pytest.mark.parametrize("value", ["false", "False"])
def test_opted_out_claim_says_so(value: str) -> None:
    claim = pvc(annotations={"vsphere-kale.io/rewrite-storage-class": value})

    result = status([claim]).pvcs[0]

    assert result.verdict == "rwx-on-block-class"
    assert "opted out" in result.message
    assert "vsphere-kale.io/rewrite-storage-class=false" in result.hint


@pytest.mark.parametrize(
    ("webhook", "classes", "hint"),
    [
        (
            None,
            CLASSES,
            "Ask an admin to install vsphere-kale: the webhook configuration is missing",
        ),
        (
            "default",
            [c for c in CLASSES if c["metadata"]["name"] != "nfs-client"],
            "Ask an admin to create storage class nfs-client, then recreate the claim",
        ),
    ],
)
def test_rwx_on_block_hint_follows_webhook_state(
    webhook: Any, classes: list[dict[str, Any]], hint: str
) -> None:
    assert status([pvc()], webhook=webhook, classes=classes).pvcs[0].hint == hint


def test_failure_matched_by_uid_not_inherited_by_a_recreated_claim() -> None:
    claim = pvc("data", modes=("ReadWriteOnce",), uid="new")
    events = [event("data", "failure of the deleted claim", uid="old")]

    result = status([claim], events=events).pvcs[0]

    assert result.severity == "warning"
    assert "failure of the deleted claim" not in result.message


def test_failure_matched_by_name_when_event_has_no_uid() -> None:
    claim = pvc("data", modes=("ReadWriteOnce",))

    result = status([claim], events=[event("data", "boom", uid=None)]).pvcs[0]

    assert result.severity == "error" and "boom" in result.message


def test_storage_classes_unreadable_still_flags_pending_rwx_by_name() -> None:
    result = status([pvc()], classes=Unreadable("cannot list storageclasses")).pvcs[0]

    assert result.verdict == "rwx-on-block-class"
    assert "is not a ReadWriteMany class" in result.message


def test_without_rwx_class_configured_only_block_provisioners_are_flagged() -> None:
    storage = StorageSettings()
    claims = [pvc("a"), pvc("b", klass="other-nfs")]

    verdicts = [p.verdict for p in status(claims, storage=storage, webhook=None).pvcs]

    assert verdicts == ["rwx-on-block-class", "pending"]


# --- pod security -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "verdict", "severity", "present"),
    [
        (OK_PS, "ok", None, True),
        (
            PodSecurityFacts("psp", managed=True, required="rb", outcome="create"),
            "missing",
            "error",
            False,
        ),
        (
            PodSecurityFacts("psa", managed=True, required="labels", outcome="repair"),
            "drifted",
            "error",
            False,
        ),
        (
            PodSecurityFacts("psa", managed=True, required="labels", outcome="conflict"),
            "conflict",
            "warning",
            False,
        ),
        (
            PodSecurityFacts("psa", managed=True, required="labels", outcome="skipped"),
            "unmanaged",
            None,
            None,
        ),
        (
            PodSecurityFacts("psp", managed=False, managed_reason="no Profile"),
            "unmanaged",
            None,
            None,
        ),
        (PodSecurityFacts("off"), "off", None, None),
        (PodSecurityFacts("psp", unreadable="cannot get namespaces"), "unknown", "info", None),
    ],
)
def test_pod_security_verdicts(
    facts: PodSecurityFacts, verdict: str, severity: str | None, present: bool | None
) -> None:
    result = decide_pod_security(facts, namespace="alice", can_reconcile=True)

    assert (result.verdict, result.severity, result.present) == (verdict, severity, present)
    assert result.message.endswith(".")


@pytest.mark.parametrize(
    ("can_reconcile", "hint"),
    [(True, "Run Reconcile"), (False, "Ask an admin to run Reconcile for namespace alice")],
)
def test_pod_security_hint_depends_on_caller(can_reconcile: bool, hint: str) -> None:
    facts = PodSecurityFacts("psp", managed=True, required="rb", outcome="create")

    assert decide_pod_security(facts, namespace="alice", can_reconcile=can_reconcile).hint == hint


# --- webhook ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configuration", "classes", "verdict", "severity"),
    [
        pytest.param(mwc(), CLASSES, "ok", None, id="ok"),
        pytest.param(None, CLASSES, "missing", "error", id="missing"),
        pytest.param(
            Unreadable("cannot get mutatingwebhookconfigurations"),
            CLASSES,
            "unknown",
            "info",
            id="unreadable",
        ),
        pytest.param(mwc(""), CLASSES, "ca-invalid", "error", id="empty-bundle"),
        pytest.param(mwc("not base64!"), CLASSES, "ca-invalid", "error", id="bad-base64"),
        pytest.param(
            mwc(base64.b64encode(b"hello").decode()), CLASSES, "ca-invalid", "error", id="not-pem"
        ),
        pytest.param(mwc(ca_bundle(10)), CLASSES, "ca-expiring", "warning", id="expiring"),
        pytest.param(mwc(ca_bundle(31)), CLASSES, "ok", None, id="31-days-is-fine"),
        pytest.param(mwc(), CLASSES[:1], "class-missing", "error", id="class-missing"),
        pytest.param(
            mwc(ca_bundle(10)),
            CLASSES[:1],
            "class-missing",
            "error",
            id="class-missing-beats-expiring",
        ),
        pytest.param(
            {"metadata": {"name": "vsphere-kale"}, "webhooks": []},
            CLASSES,
            "ca-invalid",
            "error",
            id="no-webhooks",
        ),
    ],
)
def test_webhook_verdicts(
    configuration: Any, classes: list[dict[str, Any]], verdict: str, severity: str | None
) -> None:
    result = decide_webhook(
        configuration, classes, storage=STORAGE, now=dt.datetime.now(dt.timezone.utc)
    )

    assert (result.verdict, result.severity) == (verdict, severity)


def test_expired_ca_is_invalid() -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)

    result = decide_webhook(mwc(), CLASSES, storage=STORAGE, now=later)

    assert result.verdict == "ca-invalid" and "expired" in result.message


def test_rotation_bundle_uses_newest_ca() -> None:
    old, _ = build_ca("old", days=5)
    new, _ = build_ca("new", days=365)
    bundle = base64.b64encode(old + new).decode()

    result = decide_webhook(
        mwc(bundle), CLASSES, storage=STORAGE, now=dt.datetime.now(dt.timezone.utc)
    )

    assert result.verdict == "ok"
    assert result.ca_bundle_not_after is not None
    assert result.ca_bundle_not_after > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)


POLICY = {"metadata": {"name": "vsphere-kale"}, "spec": {}}
"""Our MutatingAdmissionPolicy as read back (``install --admission policy``)."""


def test_policy_mode_without_a_webhook_is_ok_not_missing() -> None:
    result = decide_webhook(None, CLASSES, storage=STORAGE, now=NOW, admission_policy=POLICY)

    assert (result.verdict, result.severity, result.admission) == ("ok", None, "policy")
    assert "MutatingAdmissionPolicy vsphere-kale" in result.message
    assert result.ca_bundle_not_after is None and result.to_json()["admission"] == "policy"


def test_policy_mode_still_needs_the_rwx_class() -> None:
    result = decide_webhook(None, [], storage=STORAGE, now=NOW, admission_policy=POLICY)

    assert (result.verdict, result.severity) == ("class-missing", "error")
    assert [p.object for p in result.findings] == ["vsphere-kale"]


def test_no_webhook_and_an_unreadable_policy_is_unknown_not_missing() -> None:
    unreadable = Unreadable("the caller may not get mutatingadmissionpolicies")

    result = decide_webhook(None, CLASSES, storage=STORAGE, now=NOW, admission_policy=unreadable)

    assert (result.verdict, result.severity) == ("unknown", "info")
    assert "No MutatingWebhookConfiguration vsphere-kale" in result.message


def test_a_webhook_configuration_wins_over_a_policy() -> None:
    result = decide_webhook(mwc(), CLASSES, storage=STORAGE, now=NOW, admission_policy=POLICY)

    assert result.admission == "webhook" and result.ca_bundle_not_after is not None


def test_no_webhook_and_no_policy_is_missing() -> None:
    result = decide_webhook(None, CLASSES, storage=STORAGE, now=NOW, admission_policy=None)

    assert (result.verdict, result.severity) == ("missing", "error")


def test_webhook_json() -> None:
    result = decide_webhook(mwc(), CLASSES, storage=STORAGE, now=NOW).to_json()

    assert result["configured"] is True
    assert result["rwxStorageClass"] == "nfs-client"
    assert result["rwxClassExists"] is True
    assert result["caBundleNotAfter"].endswith("Z")


# --- overall ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severities", "overall"),
    [
        ([], "healthy"),
        ([None, "info"], "healthy"),
        (["warning", "info"], "degraded"),
        (["warning", "error"], "broken"),
        (["error"], "broken"),
    ],
)
def test_overall_rules(severities: list[Any], overall: str) -> None:
    assert decide_overall(severities) == overall


@pytest.mark.parametrize(
    ("kwargs", "overall"),
    [
        pytest.param({"pvcs": [pvc(klass="nfs-client", phase="Bound")]}, "healthy", id="healthy"),
        pytest.param({"pvcs": [pvc()]}, "broken", id="pending-rwx-on-block"),
        pytest.param({"pvcs": [pvc(phase="Bound")]}, "degraded", id="bound-rwx-on-block"),
        pytest.param(
            {
                "pvcs": [],
                "ps": PodSecurityFacts("psp", managed=True, required="rb", outcome="create"),
            },
            "broken",
            id="pod-security-missing",
        ),
        pytest.param({"pvcs": [], "webhook": mwc(ca_bundle(5))}, "degraded", id="ca-expiring"),
        pytest.param({"pvcs": [], "webhook": None}, "broken", id="webhook-missing"),
        pytest.param(
            {
                "pvcs": [],
                "webhook": Unreadable("no"),
                "classes": Unreadable("no"),
                "ps": PodSecurityFacts("psp", unreadable="no"),
            },
            "healthy",
            id="unknown-components-do-not-lower-overall",
        ),
    ],
)
def test_overall_from_components(kwargs: dict[str, Any], overall: str) -> None:
    pvcs = kwargs.pop("pvcs")

    assert status(pvcs, **kwargs).overall == overall


def test_document_shape_and_problem_order() -> None:
    ps = PodSecurityFacts("psp", managed=True, required="rb", outcome="create")
    doc = status(
        [pvc("b-ok", klass="nfs-client", phase="Bound"), pvc("a-wf-kale-marshal-pvc")],
        webhook=mwc(ca_bundle(5)),
        ps=ps,
    ).to_json()

    assert doc["apiVersion"] == "vsphere-kale.io/v1alpha1"
    assert doc["kind"] == "NamespaceStatus"
    assert doc["namespace"] == "alice"
    assert doc["generatedAt"] == "2026-11-25T19:40:00Z"
    assert doc["source"] == "admin-api"
    assert doc["overall"] == "broken"
    assert doc["canReconcile"] is True
    assert [p["name"] for p in doc["pvcs"]] == ["a-wf-kale-marshal-pvc", "b-ok"]
    assert [(p["component"], p["severity"]) for p in doc["problems"]] == [
        ("pvc", "error"),
        ("podSecurity", "error"),
        ("webhook", "warning"),
    ]
    assert set(doc["podSecurity"]) >= {
        "mode",
        "managed",
        "required",
        "present",
        "verdict",
        "message",
        "hint",
    }


def test_unreadable_pvcs_reported_as_info_problem() -> None:
    doc = status(Unreadable("cannot list persistentvolumeclaims in alice")).to_json()

    assert doc["pvcs"] == []
    assert doc["problems"][0]["severity"] == "info"
    assert "persistentvolumeclaims" in doc["problems"][0]["message"]


def test_unreadable_events_still_judge_claims() -> None:
    doc = status([pvc()], events=Unreadable("may not list events in alice")).to_json()

    assert doc["pvcs"][0]["verdict"] == "rwx-on-block-class"
    assert ("pvc", "info") in [(p["component"], p["severity"]) for p in doc["problems"]]
    assert doc["overall"] == "broken"
