"""The adapter's pure parts: resource paths, warning headers, error translation."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)
from vsphere_kale.kube import parse_warnings, translate
from vsphere_kale.kube import resources as r


@pytest.mark.parametrize(
    ("resource", "kwargs", "expected"),
    [
        (r.NAMESPACE, {}, "/api/v1/namespaces"),
        (r.NAMESPACE, {"name": "alice"}, "/api/v1/namespaces/alice"),
        (r.ROLE_BINDING, {}, "/apis/rbac.authorization.k8s.io/v1/rolebindings"),
        (
            r.ROLE_BINDING,
            {"namespace": "alice", "name": "psp:x"},
            "/apis/rbac.authorization.k8s.io/v1/namespaces/alice/rolebindings/psp%3Ax",
        ),
        (r.PROFILE_V1BETA1, {"name": "bob"}, "/apis/kubeflow.org/v1beta1/profiles/bob"),
        (
            r.TOKEN_REQUEST,
            {"namespace": "a", "name": "robot"},
            "/api/v1/namespaces/a/serviceaccounts/robot/token",
        ),
    ],
)
def test_resource_paths(resource: r.Resource, kwargs: dict[str, str], expected: str) -> None:
    assert resource.path(**kwargs) == expected


def test_scope_mix_ups_are_value_errors() -> None:
    with pytest.raises(ValueError, match="needs a namespace"):
        r.ROLE_BINDING.path(name="x")
    with pytest.raises(ValueError, match="cluster-scoped"):
        r.NAMESPACE.path(namespace="alice", name="x")


def test_resource_for_manifest_documents() -> None:
    assert r.resource_for("rbac.authorization.k8s.io/v1", "ClusterRole") is r.CLUSTER_ROLE
    with pytest.raises(KeyError, match=r"unknown resource Widget example\.com/v1"):
        r.resource_for("example.com/v1", "Widget")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (['299 - "plain"'], ["plain"]),
        (['299 - "say \\"hi\\" \\\\ there"'], ['say "hi" \\ there']),
        (['299 - "one", 299 - "two"'], ["one", "two"]),
        (["not a warn-value"], ["not a warn-value"]),
        ([], []),
    ],
)
def test_parse_warnings(values: list[str], expected: list[str]) -> None:
    assert parse_warnings(values) == expected


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, KubeNotFound),
        (409, KubeConflict),
        (403, KubeForbidden),
        (429, KubeUnavailable),
        (503, KubeUnavailable),
        (0, KubeUnavailable),
        (422, KubeError),
    ],
)
def test_translate_maps_status_codes(status: int, error: type[KubeError]) -> None:
    exc = ApiException(status=status, reason="Why")
    exc.body = '{"kind": "Status", "message": "the answer"}'
    translated = translate(exc, action="create rolebindings alice/x")
    assert type(translated) is error
    assert str(translated) == "create rolebindings alice/x: the answer"
    assert translated.status == status
