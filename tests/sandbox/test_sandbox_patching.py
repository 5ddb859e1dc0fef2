"""Patch formats: RFC 7386, RFC 6902 and Kubernetes' strategic merge patch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsphere_kale.sandbox.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    merge_patch,
    parse_patch_body,
    strategic_merge_patch,
)
from vsphere_kale.sandbox.resources import StatusError


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.text(max_size=3), json_values, max_size=4),
    st.dictionaries(st.text(max_size=3), json_values, max_size=4),
)
def test_merge_patch_never_mutates_its_inputs(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    import copy

    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    merge_patch(target, patch)
    assert target == before_target and patch == before_patch


def test_json_patch_and_its_errors() -> None:
    obj = {"metadata": {"name": "a"}, "data": {"k": "v"}}
    ops = [{"op": "replace", "path": "/data/k", "value": "w"}]
    assert apply_patch(JSON_PATCH, obj, ops)["data"] == {"k": "w"}
    with pytest.raises(StatusError) as failed:
        apply_patch(JSON_PATCH, obj, [{"op": "test", "path": "/data/k", "value": "x"}])
    assert failed.value.code == 422
    with pytest.raises(StatusError) as missing:
        apply_patch(JSON_PATCH, obj, [{"op": "remove", "path": "/data/nope"}])
    assert missing.value.code == 422
    with pytest.raises(StatusError) as not_a_list:
        apply_patch(JSON_PATCH, obj, {"op": "add"})
    assert not_a_list.value.code == 400


def pod_spec(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def test_smp_merges_containers_by_name_and_their_lists_by_key() -> None:
    original = pod_spec(
        [
            {
                "name": "app",
                "image": "a:1",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "volumeMounts": [{"name": "v", "mountPath": "/data"}],
            },
            {"name": "side", "image": "s:1"},
        ]
    )
    patch = pod_spec(
        [
            {
                "name": "app",
                "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
                "ports": [{"containerPort": 8080}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
            },
        ]
    )
    result = strategic_merge_patch(original, patch)
    app, side = result["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "a:1" and side == {"name": "side", "image": "s:1"}
    assert app["env"] == [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]
    assert [p["containerPort"] for p in app["ports"]] == [80, 8080]
    assert app["volumeMounts"] == [{"name": "v", "mountPath": "/data", "readOnly": True}]


def test_smp_service_ports_merge_by_port() -> None:
    original = {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}
    result = strategic_merge_patch(original, {"spec": {"ports": [{"port": 443, "name": "https"}]}})
    assert result["spec"]["ports"] == [{"port": 443, "targetPort": 8443, "name": "https"}]


def test_smp_replaces_lists_without_a_merge_key() -> None:
    original = {"subjects": [{"kind": "User", "name": "a"}], "rules": [{"verbs": ["get"]}]}
    result = strategic_merge_patch(original, {"subjects": [{"kind": "User", "name": "b"}]})
    assert result["subjects"] == [{"kind": "User", "name": "b"}]
    assert result["rules"] == [{"verbs": ["get"]}]


def test_smp_directives() -> None:
    original = {
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
        "webhooks": [{"name": "one", "timeoutSeconds": 5}, {"name": "two"}],
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
    }
    patch = {
        "metadata": {
            "labels": {"$patch": "replace", "c": "3"},
            "finalizers": ["z"],
            "$deleteFromPrimitiveList/finalizers": ["x"],
        },
        "webhooks": [{"name": "one", "$patch": "delete"}, {"name": "three"}],
        "$setElementOrder/webhooks": [{"name": "three"}, {"name": "two"}],
        "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
    }
    result = strategic_merge_patch(original, patch)
    assert result["metadata"]["labels"] == {"c": "3"}
    assert result["metadata"]["finalizers"] == ["y", "z"]
    assert result["webhooks"] == [{"name": "three"}, {"name": "two"}]
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    deleted = strategic_merge_patch(original, {"spec": {"strategy": {"$patch": "delete"}}})
    assert "strategy" not in deleted["spec"]
    replaced = strategic_merge_patch(
        original, {"webhooks": [{"$patch": "replace"}, {"name": "only"}]}
    )
    assert replaced["webhooks"] == [{"name": "only"}]


@pytest.mark.parametrize(
    "patch",
    [
        {"$patch": "explode"},
        {"metadata": {"$unknownDirective": 1}},
        {"webhooks": ["not-an-object"]},
    ],
)
def test_smp_refuses_what_it_does_not_understand(patch: dict[str, Any]) -> None:
    with pytest.raises(StatusError) as info:
        apply_patch(STRATEGIC_MERGE_PATCH, {"metadata": {}, "webhooks": []}, patch)
    assert info.value.code == 422


def test_unknown_content_type_and_bodies() -> None:
    with pytest.raises(StatusError) as info:
        apply_patch("application/yaml", {}, {})
    assert info.value.code == 415 and info.value.reason == "UnsupportedMediaType"
    assert parse_patch_body(APPLY_PATCH, b"a: 1\n") == {"a": 1}
    with pytest.raises(StatusError) as bad:
        parse_patch_body(MERGE_PATCH, b"{nope")
    assert bad.value.code == 400
