"""``pvcs[].recreateRefusal``: the status says in advance what the admin API's recreation would
answer, by the same pure rule (:func:`vsphere_kale.policy.recreate.plan_recreate`)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from vsphere_kale.policy.health import (
    PodSecurityFacts,
    Unreadable,
    build_classes_by_name,
    build_namespace_status,
)
from vsphere_kale.policy.recreate import (
    RecreateRefusal,
    decide_recreate_refusal,
    decide_refusal_needs_pods,
    plan_recreate,
)
from vsphere_kale.settings import Settings, StorageSettings

STORAGE = StorageSettings(rwx_storage_class="nfs-client")
BLOCK = "vsan-default-storage-policy"
CLASS_LIST = [
    {"metadata": {"name": BLOCK}, "provisioner": "csi.vsphere.vmware.com"},
    {"metadata": {"name": "nfs-client"}, "provisioner": "cluster.local/nfs"},
]
CLASSES = build_classes_by_name(CLASS_LIST)
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
OPT_OUT = {"vsphere-kale.io/rewrite-storage-class": "false"}


def claim(name: str = "features", **changes: Any) -> dict[str, Any]:
    """A ReadWriteMany claim Pending on the block class: stuck, and recreatable."""
    doc: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "alice",
            "creationTimestamp": "2026-12-03T11:00:00Z",
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": BLOCK,
            "resources": {"requests": {"storage": "1Gi"}},
        },
        "status": {"phase": "Pending"},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = doc
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return doc


def pod(name: str, claim_name: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim_name}}]},
        "status": {"phase": phase},
    }


CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str | None]] = {
    "stuck": (claim(), [], None),
    "opted-out": (claim(metadata__annotations=OPT_OUT), [], "opted-out"),
    "bound": (
        claim(status__phase="Bound", spec__volumeName="pv-1", spec__accessModes=["ReadWriteOnce"]),
        [],
        "bound",
    ),
    "data-source": (
        claim(spec__dataSource={"kind": "VolumeSnapshot", "name": "snap-1"}),
        [],
        "data-source",
    ),
    "in-use": (claim(), [pod("step-1", "features", "Pending")], "in-use"),
    "finished-pod": (claim(), [pod("step-1", "features", "Succeeded")], None),
    "other-claims-pod": (claim(), [pod("step-1", "other", "Running")], None),
    "rwx-class": (claim(spec__storageClassName="nfs-client"), [], "not-stuck"),
    "rwo": (claim(spec__accessModes=["ReadWriteOnce"]), [], "not-stuck"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_refusal_is_the_admin_apis_own_answer(case: str) -> None:
    doc, pods, reason = CASES[case]
    refusal = decide_recreate_refusal(doc, pods=pods, storage_classes=CLASSES, storage=STORAGE)
    plan = plan_recreate(
        doc, pods=pods, storage_classes=CLASSES, settings=Settings(storage=STORAGE)
    )
    assert (refusal.reason if refusal else None) == reason
    # The same sentence the 409 carries, or no refusal exactly where the service recreates
    assert refusal == (plan if isinstance(plan, RecreateRefusal) else None)


def test_no_rwx_class_configured_refuses_every_claim() -> None:
    refusal = decide_recreate_refusal(
        claim(), pods=[], storage_classes=CLASSES, storage=StorageSettings()
    )
    assert refusal is not None and refusal.reason == "not-configured"
    assert "storage.rwxStorageClass" in refusal.message


def test_pods_are_needed_only_when_a_claim_passes_every_other_rule() -> None:
    def needs(*claims: dict[str, Any]) -> bool:
        return decide_refusal_needs_pods(claims, storage_classes=CLASSES, storage=STORAGE)

    refused = [CASES[c][0] for c in ("opted-out", "bound", "data-source", "rwx-class", "rwo")]
    assert needs(*refused) is False
    assert needs() is False
    assert needs(*refused, claim("stuck")) is True


def status_rows(
    claims: list[dict[str, Any]],
    *,
    pods: list[dict[str, Any]] | Unreadable | None = None,
    classes: list[dict[str, Any]] | Unreadable = CLASS_LIST,
) -> dict[str, Any]:
    doc = build_namespace_status(
        "alice",
        pvcs=claims,
        events=[],
        storage_classes=classes,
        webhook_configuration=None,
        pod_security=PodSecurityFacts("off"),
        storage=STORAGE,
        can_reconcile=True,
        source="admin-api",
        now=NOW,
        pods=pods,
    ).to_json()
    return {row["name"]: row for row in doc["pvcs"]}


def test_every_status_row_carries_the_refusal_or_null() -> None:
    opted_out = claim("opted-out", metadata__annotations=OPT_OUT)
    rows = status_rows([claim("stuck"), opted_out])
    # Both cannot bind where they are: the same verdict, only one is recreatable
    assert {r["verdict"] for r in rows.values()} == {"rwx-on-block-class"}
    assert rows["stuck"]["recreateRefusal"] is None
    assert rows["opted-out"]["recreateRefusal"] == (
        "claim alice/opted-out opts out of class rewriting "
        '(vsphere-kale.io/rewrite-storage-class: "false")'
    )


def test_a_running_pod_in_the_status_is_the_in_use_refusal() -> None:
    rows = status_rows([claim("stuck")], pods=[pod("step-1", "stuck", "Running")])
    assert rows["stuck"]["recreateRefusal"] == (
        "claim alice/stuck is mounted by pod step-1: stop the pod first, then recreate the claim"
    )
    # Pods the caller may not list, or not read: the claim's own facts decide (the admin API
    # lists the pods itself when asked)
    assert status_rows([claim("stuck")], pods=Unreadable("no"))["stuck"]["recreateRefusal"] is None
    assert status_rows([claim("stuck")])["stuck"]["recreateRefusal"] is None


def test_unreadable_classes_judge_the_claims_own_facts() -> None:
    rows = status_rows(
        [claim("stuck"), claim("bound", status__phase="Bound", spec__volumeName="pv-1")],
        classes=Unreadable("the caller may not list storageclasses"),
    )
    assert rows["stuck"]["recreateRefusal"] is None
    assert "is Bound to pv-1" in rows["bound"]["recreateRefusal"]


def test_the_rows_do_not_change_the_claims_they_judge() -> None:
    doc = claim()
    before = copy.deepcopy(doc)
    status_rows([doc], pods=[pod("step-1", "features", "Running")])
    assert doc == before


def test_each_claim_is_judged_by_the_pods_that_mount_it() -> None:
    both = pod("step-2", "a", "Running")
    both["spec"]["volumes"].append({"name": "w", "persistentVolumeClaim": {"claimName": "c"}})
    pods = [pod("step-1", "a", "Pending"), pod("done", "b", "Succeeded"), both]
    rows = status_rows([claim("a"), claim("b"), claim("c"), claim("d")], pods=pods)
    assert rows["a"]["recreateRefusal"] == (
        "claim alice/a is mounted by pod step-1, step-2: stop the pod first, then recreate the "
        "claim"
    )
    assert rows["b"]["recreateRefusal"] is None  # its only pod has finished
    assert "mounted by pod step-2" in rows["c"]["recreateRefusal"]
    assert rows["d"]["recreateRefusal"] is None
    # the same answers the admin API gives with every pod of the namespace
    for name in "abcd":
        plan = plan_recreate(
            claim(name), pods=pods, storage_classes=CLASSES, settings=Settings(storage=STORAGE)
        )
        expected = plan.message if isinstance(plan, RecreateRefusal) else None
        assert rows[name]["recreateRefusal"] == expected
