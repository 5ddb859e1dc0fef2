"""Pure parts of the sandbox held to kube: PVC validation, default class choice, quantities,
continue tokens, impersonation headers, field ownership."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from vsphere_kale.sandbox.apply import apply, from_fields_v1, leaf_paths, to_fields_v1
from vsphere_kale.sandbox.impersonation import (
    ImpersonationError,
    build_impersonation_requests,
    impersonated_user,
)
from vsphere_kale.sandbox.paging import Continue, decode_continue, encode_continue
from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.validation import (
    parse_quantity,
    pick_default_storage_class,
    validate_delete_options,
    validate_pvc,
    validate_pvc_update,
)


def _pvc(phase: str = "Pending", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "vsan",
    }
    body.update(spec)
    return {"spec": body, "status": {"phase": phase, "capacity": {"storage": "1Gi"}}}


@pytest.mark.parametrize(
    ("text", "value"),
    [("1Gi", Decimal(2**30)), ("500M", Decimal(500 * 10**6)), ("1e3", Decimal(1000)), (2, 2)],
)
def test_quantities(text: Any, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1Gb", "", None])
def test_bad_quantities(text: Any) -> None:
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity(text)


def test_valid_claim_has_no_causes() -> None:
    assert validate_pvc(_pvc()) == []


def test_rwop_with_other_modes_is_forbidden() -> None:
    causes = validate_pvc(_pvc(accessModes=["ReadWriteOncePod", "ReadWriteMany"]))
    assert [c.text for c in causes] == [
        "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"
    ]


@pytest.mark.parametrize(
    ("old", "new", "fields"),
    [
        (_pvc(), _pvc(storageClassName="nfs"), ["spec"]),
        (_pvc(), _pvc(resources={"requests": {"storage": "2Gi"}}), ["spec"]),
        (_pvc("Bound"), _pvc("Bound", resources={"requests": {"storage": "2Gi"}}), []),
        (
            _pvc("Bound"),
            _pvc("Bound", resources={"requests": {"storage": "512Mi"}}),
            ["spec.resources.requests.storage"],
        ),
        (_pvc(storageClassName=None), _pvc(storageClassName="nfs"), []),
        (_pvc(), _pvc(volumeName="pv-1"), []),
        (_pvc(volumeName="pv-1"), _pvc(volumeName="pv-2"), ["spec"]),
    ],
)
def test_update_rules(old: Any, new: Any, fields: list[str]) -> None:
    old["spec"] = {k: v for k, v in old["spec"].items() if v is not None}
    assert [c.field for c in validate_pvc_update(new, old)] == fields


def _sc(name: str, created: str, default: bool = True) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations}}


def test_newest_default_class_wins_ties_by_name() -> None:
    classes = [
        _sc("old", "2026-01-01T00:00:00Z"),
        _sc("b-new", "2026-02-01T00:00:00Z"),
        _sc("a-new", "2026-02-01T00:00:00Z"),
        _sc("newest-not-default", "2026-03-01T00:00:00Z", default=False),
    ]
    assert pick_default_storage_class(classes) == "a-new"
    assert pick_default_storage_class([_sc("x", "2026-01-01T00:00:00Z", False)]) is None


@pytest.mark.parametrize(
    ("options", "count"),
    [({"propagationPolicy": "Orphan"}, 0), ({"propagationPolicy": "x"}, 1),
     ({"propagationPolicy": "Orphan", "orphanDependents": True}, 1), ({}, 0)],
)  # fmt: skip
def test_delete_options(options: dict[str, Any], count: int) -> None:
    assert len(validate_delete_options(options)) == count


def test_continue_token_round_trip_and_garbage() -> None:
    token = Continue(42, "team/cm-1\x00")
    assert decode_continue(encode_continue(token)) == token
    with pytest.raises(StatusError) as caught:
        decode_continue("bm90LWEtdG9rZW4")
    assert caught.value.code == 400


def test_impersonation_requests_and_user() -> None:
    headers = [
        ("Impersonate-User", "system:serviceaccount:ns:sa"),
        ("Impersonate-Extra-Acme.com%2fproject", "p1"),
    ]
    requests = build_impersonation_requests(headers)
    assert [(r.resource, r.name, r.namespace, r.subresource) for r in requests] == [
        ("serviceaccounts", "sa", "ns", ""),
        ("userextras", "p1", "", "acme.com/project"),
    ]
    user = impersonated_user(requests)
    assert user is not None
    assert user.username == "system:serviceaccount:ns:sa"
    assert user.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    )
    with pytest.raises(ImpersonationError):
        build_impersonation_requests([("Impersonate-Uid", "1")])
    assert impersonated_user(build_impersonation_requests([])) is None


def test_fields_v1_round_trip() -> None:
    paths = leaf_paths({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}})
    assert paths == {("metadata", "labels", "a"), ("data", "k")}
    assert from_fields_v1(to_fields_v1(paths)) == paths


def test_apply_conflict_force_and_prune() -> None:
    first = apply(None, {"data": {"a": "1", "b": "1"}}, manager="m1", api_version="v1",
                  now="t", force=False)  # fmt: skip
    with pytest.raises(StatusError) as caught:
        apply(first, {"data": {"a": "2"}}, manager="m2", api_version="v1", now="t", force=False)
    assert caught.value.code == 409
    forced = apply(first, {"data": {"a": "2"}}, manager="m2", api_version="v1", now="t", force=True)
    pruned = apply(forced, {"data": {}}, manager="m1", api_version="v1", now="t", force=False)
    assert pruned["data"] == {"a": "2"}
