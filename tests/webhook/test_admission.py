"""The AdmissionReview envelope: what is refused as a 400, and property tests of the whole path."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsphere_kale.errors import AdmissionError
from vsphere_kale.settings import settings_from_mapping
from vsphere_kale.webhook.admission import build_fail_open, review

SETTINGS = settings_from_mapping({"storage": {"rwxStorageClass": "nfs-client"}})


def envelope(request: object, api_version: str = "admission.k8s.io/v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


GOOD_REQUEST = {
    "uid": "u1",
    "kind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
    "operation": "CREATE",
    "namespace": "alice",
    "object": {"spec": {"accessModes": ["ReadWriteMany"]}},
}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the AdmissionReview must be an object"),
        ("x", "the AdmissionReview must be an object"),
        ({"kind": "AdmissionReview"}, "apiVersion must be one of"),
        (
            {"apiVersion": "admission.k8s.io/v2", "request": GOOD_REQUEST},
            "apiVersion must be one of",
        ),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": GOOD_REQUEST},
            "kind must be",
        ),
        ({"apiVersion": "admission.k8s.io/v1"}, "has no request"),
        (envelope("req"), "request must be an object"),
        (envelope({**GOOD_REQUEST, "uid": ""}), "request.uid must be a non-empty string"),
        (envelope({k: v for k, v in GOOD_REQUEST.items() if k != "uid"}), "request.uid"),
        (envelope({**GOOD_REQUEST, "uid": 5}), "request.uid"),
        (envelope({**GOOD_REQUEST, "kind": "PVC"}), "request.kind must be an object"),
        (
            envelope({**GOOD_REQUEST, "kind": {"group": "", "version": 1, "kind": "P"}}),
            "request.kind.version",
        ),
        (envelope({**GOOD_REQUEST, "operation": None}), "request.operation"),
        (envelope({**GOOD_REQUEST, "namespace": 3}), "request.namespace"),
        (envelope({**GOOD_REQUEST, "userInfo": "bob"}), "request.userInfo"),
        (envelope({**GOOD_REQUEST, "dryRun": "yes"}), "request.dryRun"),
    ],
)
def test_malformed_envelopes_raise_admission_error(body: object, message: str) -> None:
    with pytest.raises(AdmissionError, match=message):
        review(body, SETTINGS)


def test_namespace_falls_back_to_object_metadata() -> None:
    request = {
        **GOOD_REQUEST,
        "namespace": None,
        "object": {
            "metadata": {"namespace": "kube-system"},
            "spec": {"accessModes": ["ReadWriteMany"]},
        },
    }
    assert review(envelope(request), SETTINGS).reason == "excluded-namespace"


def test_fail_open_echoes_uid_and_version() -> None:
    out = build_fail_open(envelope(GOOD_REQUEST, "admission.k8s.io/v1beta1"))
    assert out == {
        "apiVersion": "admission.k8s.io/v1beta1",
        "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": True},
    }
    assert build_fail_open(b"garbage")["response"]["allowed"] is True


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

# Claim-shaped JSON with arbitrary values in the fields the policy reads, so the property test
# reaches the deep rules, not only the first type check.
CLAIMISH = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.none()
        | JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "annotations": st.none()
                | JSON
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "volume.beta.kubernetes.io/storage-class",
                            "vsphere-kale.io/rewrite-storage-class",
                            "vsphere-kale.io/original-storage-class",
                            "a/b~c",
                        ]
                    ),
                    st.text(max_size=6) | JSON,
                    max_size=3,
                )
            },
        ),
        "spec": JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "accessModes": JSON | st.lists(st.sampled_from(["ReadWriteMany", "ReadWriteOnce"])),
                "storageClassName": st.none() | st.sampled_from(["", "nfs-client", "vsan"]) | JSON,
                "volumeName": st.none() | st.text(max_size=4) | JSON,
                "volumeMode": st.none() | st.sampled_from(["Block", "Filesystem"]) | JSON,
                "dataSource": st.none() | JSON,
                "dataSourceRef": st.none() | JSON,
            },
        ),
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    obj=JSON | CLAIMISH,
    api_version=st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]),
)
def test_any_object_never_raises_and_every_patch_applies(obj: object, api_version: str) -> None:
    outcome = review(envelope({**GOOD_REQUEST, "object": obj}, api_version), SETTINGS)
    response = outcome.response["response"]
    assert response["allowed"] is True
    if "patch" in response:
        ops = json.loads(base64.b64decode(response["patch"]))
        stored = jsonpatch.apply_patch(obj, ops)
        assert stored["spec"]["storageClassName"] == "nfs-client"
        # Reinvocation-safe: the stored object is left alone the second time.
        again = review(envelope({**GOOD_REQUEST, "object": stored}, api_version), SETTINGS)
        assert "patch" not in again.response["response"]


@settings(max_examples=200, deadline=None)
@given(body=JSON)
def test_arbitrary_bodies_are_refused_cleanly(body: object) -> None:
    # Either a valid answer or the one error the server maps to 400 — never anything else.
    try:
        outcome = review(body, SETTINGS)
    except AdmissionError as exc:
        assert str(exc)
    else:
        assert outcome.response["response"]["allowed"] is True
