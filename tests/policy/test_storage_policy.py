"""Every rule of the storage-class policy, through the admission layer in both API versions."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from vsphere_kale.policy.storage import (
    LEGACY_CLASS_ANNOTATION,
    ORIGINAL_CLASS_ANNOTATION,
    build_rewrite_warning,
    decide_storage_class,
)
from vsphere_kale.settings import settings_from_mapping
from vsphere_kale.webhook.admission import review

SETTINGS = settings_from_mapping(
    {"storage": {"rwxStorageClass": "nfs-client", "rwxCapableClasses": ["vsan-file"]}}
)
VERSIONS = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]


def claim(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "wf-1-kale-marshal-pvc", "namespace": "alice"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    base["spec"].update(spec)
    return base


def admission_review(
    obj: object,
    *,
    api_version: str = "admission.k8s.io/v1",
    operation: str = "CREATE",
    namespace: str = "alice",
    kind: str = "PersistentVolumeClaim",
    group: str = "",
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "persistentvolumeclaims"},
            "namespace": namespace,
            "name": "wf-1-kale-marshal-pvc",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:alice:default-editor"},
            "object": obj,
        },
    }


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


@pytest.mark.parametrize("api_version", VERSIONS)
def test_rewrites_default_class_claim_and_records_the_original(api_version: str) -> None:
    # Given a Kale marshal claim with no class (the cluster default, block-only on TKG)
    obj = claim()
    # When it is reviewed
    outcome = review(admission_review(obj, api_version=api_version), SETTINGS)
    # Then the same apiVersion comes back, allowed, with a JSON patch moving it to NFS
    out = outcome.response
    assert out["apiVersion"] == api_version
    assert out["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert out["response"]["allowed"] is True
    assert out["response"]["patchType"] == "JSONPatch"
    stored = patched(obj, out["response"])
    assert stored["spec"]["storageClassName"] == "nfs-client"
    assert stored["metadata"]["annotations"] == {ORIGINAL_CLASS_ANNOTATION: ""}
    assert out["response"]["warnings"] == [
        "storageClassName rewritten from the cluster default to nfs-client "
        "(ReadWriteMany needs an RWX-capable class)"
    ]
    assert out["response"]["auditAnnotations"] == {
        "storage-class-rewrite": "(default) -> nfs-client"
    }
    assert (outcome.from_class, outcome.to_class, outcome.user) == (
        "",
        "nfs-client",
        "system:serviceaccount:alice:default-editor",
    )


def test_replaces_an_explicit_class_with_replace_op() -> None:
    obj = claim(storageClassName="vsan-default")
    decision = decide_storage_class(
        obj,
        namespace="alice",
        operation="CREATE",
        group="",
        version="v1",
        kind="PersistentVolumeClaim",
        settings=SETTINGS,
    )
    ops = {op["path"]: op["op"] for op in decision.patch}
    assert ops["/spec/storageClassName"] == "replace"
    assert ops["/metadata/annotations"] == "add"  # the map did not exist
    stored = jsonpatch.apply_patch(obj, list(decision.patch))
    assert stored["metadata"]["annotations"][ORIGINAL_CLASS_ANNOTATION] == "vsan-default"
    assert decision.warnings == (
        "storageClassName rewritten from vsan-default to nfs-client "
        "(ReadWriteMany needs an RWX-capable class)",
    )


def test_legacy_annotation_wins_and_is_rewritten_with_escaped_pointer() -> None:
    obj = claim(storageClassName="ignored-by-controller")
    obj["metadata"]["annotations"] = {LEGACY_CLASS_ANNOTATION: "vsan-default", "team": "ml"}
    decision = decide_storage_class(
        obj,
        namespace="alice",
        operation="CREATE",
        group="",
        version="v1",
        kind="PersistentVolumeClaim",
        settings=SETTINGS,
    )
    paths = [op["path"] for op in decision.patch]
    assert "/metadata/annotations/volume.beta.kubernetes.io~1storage-class" in paths
    assert "/metadata/annotations/vsphere-kale.io~1original-storage-class" in paths
    stored = jsonpatch.apply_patch(obj, list(decision.patch))
    assert stored["metadata"]["annotations"] == {
        LEGACY_CLASS_ANNOTATION: "nfs-client",
        ORIGINAL_CLASS_ANNOTATION: "vsan-default",
        "team": "ml",
    }
    assert stored["spec"]["storageClassName"] == "nfs-client"
    assert decision.from_class == "vsan-default"


def test_creates_metadata_when_absent() -> None:
    obj = claim()
    del obj["metadata"]
    decision = decide_storage_class(
        obj,
        namespace="alice",
        operation="CREATE",
        group="",
        version="v1",
        kind="PersistentVolumeClaim",
        settings=SETTINGS,
    )
    stored = jsonpatch.apply_patch(obj, list(decision.patch))
    assert stored["metadata"]["annotations"][ORIGINAL_CLASS_ANNOTATION] == ""


def test_null_annotations_are_replaced_by_a_map() -> None:
    obj = claim()
    obj["metadata"]["annotations"] = None
    decision = decide_storage_class(
        obj,
        namespace="alice",
        operation="CREATE",
        group="",
        version="v1",
        kind="PersistentVolumeClaim",
        settings=SETTINGS,
    )
    assert decision.rewrite
    stored = jsonpatch.apply_patch(obj, list(decision.patch))
    assert stored["metadata"]["annotations"] == {ORIGINAL_CLASS_ANNOTATION: ""}


def _opted_out() -> dict[str, Any]:
    obj = claim()
    obj["metadata"]["annotations"] = {"vsphere-kale.io/rewrite-storage-class": "false"}
    return obj


UNTOUCHED = [
    # (case id, object, review kwargs, reason, warns)
    ("update", claim(), {"operation": "UPDATE"}, "not-create", False),
    ("not a claim", claim(), {"kind": "Pod"}, "not-a-claim", False),
    ("claim in another group", claim(), {"group": "example.com"}, "not-a-claim", False),
    ("kube-system", claim(), {"namespace": "kube-system"}, "excluded-namespace", False),
    ("own namespace", claim(), {"namespace": "vsphere-kale"}, "excluded-namespace", False),
    ("opted out", _opted_out(), {}, "opted-out", False),
    ("rwo", claim(accessModes=["ReadWriteOnce"]), {}, "not-requested-mode", False),
    ("no access modes", claim(accessModes=None), {}, "not-requested-mode", False),
    ("pre-bound", claim(volumeName="pv-1"), {}, "pre-bound", True),
    ("static binding", claim(storageClassName=""), {}, "static-binding", True),
    (
        "clone",
        claim(dataSource={"kind": "PersistentVolumeClaim", "name": "src"}),
        {},
        "data-source",
        True,
    ),
    (
        "restore",
        claim(
            dataSourceRef={
                "kind": "VolumeSnapshot",
                "name": "s",
                "apiGroup": "snapshot.storage.k8s.io",
            }
        ),
        {},
        "data-source",
        True,
    ),
    ("block", claim(volumeMode="Block"), {}, "block-mode", True),
    ("already target", claim(storageClassName="nfs-client"), {}, "already-target", False),
    ("rwx capable", claim(storageClassName="vsan-file"), {}, "rwx-capable", False),
    ("spec not an object", {"metadata": {}, "spec": "x"}, {}, "malformed", False),
    ("modes not a list", claim(accessModes="ReadWriteMany"), {}, "malformed", False),
    ("class not a string", claim(storageClassName=7), {}, "malformed", False),
    ("object is a list", [1, 2], {}, "malformed", False),
]


@pytest.mark.parametrize("api_version", VERSIONS)
@pytest.mark.parametrize(
    ("obj", "kwargs", "reason", "warns"),
    [case[1:] for case in UNTOUCHED],
    ids=[case[0] for case in UNTOUCHED],
)
def test_untouched_rules(
    api_version: str, obj: object, kwargs: dict[str, Any], reason: str, warns: bool
) -> None:
    outcome = review(admission_review(obj, api_version=api_version, **kwargs), SETTINGS)
    response = outcome.response["response"]
    assert outcome.reason == reason
    assert outcome.response["apiVersion"] == api_version
    assert response["allowed"] is True
    assert "patch" not in response and "patchType" not in response
    assert bool(response.get("warnings")) is warns
    for warning in response.get("warnings", []):
        assert len(warning) <= 120


def test_opt_out_only_for_false() -> None:
    obj = claim()
    obj["metadata"]["annotations"] = {"vsphere-kale.io/rewrite-storage-class": "true"}
    assert review(admission_review(obj), SETTINGS).rewritten


def test_no_configured_class_never_rewrites() -> None:
    outcome = review(admission_review(claim()), settings_from_mapping({}))
    assert outcome.reason == "not-configured"
    assert "patch" not in outcome.response["response"]


def test_custom_access_modes() -> None:
    settings = settings_from_mapping(
        {
            "storage": {
                "rwxStorageClass": "nfs-client",
                "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
            }
        }
    )
    assert review(admission_review(claim(accessModes=["ReadOnlyMany"])), settings).rewritten


@pytest.mark.parametrize("api_version", VERSIONS)
@pytest.mark.parametrize(
    "obj",
    [
        claim(),
        claim(storageClassName="vsan-default"),
        {**claim(), "metadata": {"name": "x", "annotations": {LEGACY_CLASS_ANNOTATION: "b"}}},
    ],
)
def test_reinvocation_changes_nothing(api_version: str, obj: dict[str, Any]) -> None:
    # Given the webhook's own output (reinvocationPolicy: IfNeeded calls it again)
    first = review(admission_review(obj, api_version=api_version), SETTINGS)
    stored = patched(obj, first.response["response"])
    # When it is reviewed again
    again = review(admission_review(stored, api_version=api_version), SETTINGS)
    # Then nothing changes
    assert again.reason == "already-target"
    assert "patch" not in again.response["response"]
    assert stored["metadata"]["annotations"][ORIGINAL_CLASS_ANNOTATION] == first.from_class


def test_long_class_names_keep_warnings_short() -> None:
    long_name = "a" * 200
    warning = build_rewrite_warning(long_name, "nfs-client")
    assert len(warning) <= 120
    assert warning.startswith("storageClassName rewritten from aaaa")


def test_policy_does_not_mutate_its_input() -> None:
    obj = claim(storageClassName="vsan-default")
    before = copy.deepcopy(obj)
    review(admission_review(obj), SETTINGS)
    assert obj == before


def test_static_binding_and_pre_bound_are_told_apart() -> None:
    kwargs: dict[str, Any] = {
        "namespace": "alice",
        "operation": "CREATE",
        "group": "",
        "version": "v1",
        "kind": "PersistentVolumeClaim",
        "settings": SETTINGS,
    }
    static = decide_storage_class(claim(storageClassName=""), **kwargs)
    bound = decide_storage_class(claim(volumeName="pv-1"), **kwargs)
    assert static.summary == "unchanged (no class: waits for a pre-provisioned PersistentVolume)"
    assert bound.summary == "unchanged (pre-bound to a volume)"
    # The admission warning is unchanged (the MutatingAdmissionPolicy writes the same text).
    assert static.warnings == (
        'claim is storageClassName "" (static binding); storage class not rewritten',
    )
