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
        # With a warn-date (RFC 7234), as older servers may send
        (['299 - "dated" "Wed, 21 Oct 2015 07:28:00 GMT"'], ["dated"]),
    ],
)
def test_parse_warnings(values: list[str], expected: list[str]) -> None:
    assert parse_warnings(values) == expected


def _as_http_client_reads(text: str) -> str:
    """The header value http.client hands over for a UTF-8 header: its bytes as latin-1."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # kube-apiserver writes UTF-8 verbatim inside the quotes (only " and \ escaped)
        (
            _as_http_client_reads('299 - "rewritten from a-very-long-n… to nfs"'),
            ["rewritten from a-very-long-n… to nfs"],
        ),
        (
            _as_http_client_reads('299 - "classe préférée", 299 - "\\"é\\""'),
            ["classe préférée", '"é"'],
        ),
        # bytes that are not UTF-8: replaced, never mojibake
        ('299 - "caf\xe9 ok"', ["caf\ufffd ok"]),
        # control characters (a forged line, a terminal escape) never reach a log line
        ('299 - "a\x1b[31mred\x07"', ["a\ufffd[31mred\ufffd"]),
        (_as_http_client_reads("unparsable \u2026\x00"), ["unparsable \u2026\ufffd"]),
        # RFC 2047 encoded-words, which client-go also tolerates (RFC 2616 servers)
        ('299 - "=?UTF-8?B?w6l0w6k=?="', ["été"]),
        # text beyond latin-1 cannot have come from http.client's decoding: kept as it is
        ('299 - "wait…"', ["wait…"]),
    ],
)
def test_parse_warnings_decodes_utf8_and_replaces_control_characters(
    value: str, expected: list[str]
) -> None:
    assert parse_warnings([value]) == expected


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
