"""The sandbox store without HTTP: versions, history, namespaces, controllers, protobuf."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vsphere_kale.errors import KubeConflict, KubeError, KubeNotFound
from vsphere_kale.sandbox import openapi, protobuf
from vsphere_kale.sandbox.resources import Registry, StatusError
from vsphere_kale.sandbox.store import Store, WatchEvent
from vsphere_kale.sandbox.types import ObjectEditor, ResourceRef

NAMESPACES = ResourceRef("", "namespaces")
CONFIGMAPS = ResourceRef("", "configmaps")
PROFILES = ResourceRef("kubeflow.org", "profiles")


@pytest.fixture
def store() -> Store:
    s = Store(Registry("psa"), watch_history=4, namespace_sweep_delay=0)
    s.create_object(NAMESPACES, None, {"metadata": {"name": "ns"}})
    return s


def cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **extra}, "data": {}}


def test_store_is_an_object_editor(store: Store) -> None:
    editor: ObjectEditor = store
    created = editor.create_object(CONFIGMAPS, "ns", cm("a"))
    assert created["apiVersion"] == "v1" and created["kind"] == "ConfigMap"
    with pytest.raises(KubeConflict):
        editor.create_object(CONFIGMAPS, "ns", cm("a"))
    with pytest.raises(KubeNotFound):
        editor.create_object(CONFIGMAPS, "missing", cm("b"))
    created["data"] = {"k": "v"}
    updated = editor.update_object(CONFIGMAPS, "ns", created)
    with pytest.raises(KubeConflict):
        editor.update_object(CONFIGMAPS, "ns", created)  # stale resourceVersion now
    assert editor.get_object(CONFIGMAPS, "ns", "a") == updated
    editor.delete_object(CONFIGMAPS, "ns", "a")
    editor.delete_object(CONFIGMAPS, "ns", "a")  # missing is fine
    assert editor.list_objects(CONFIGMAPS) == []


def test_returned_objects_are_copies(store: Store) -> None:
    created = store.create_object(CONFIGMAPS, "ns", cm("a"))
    created["data"]["x"] = "mutated"
    assert store.get_object(CONFIGMAPS, "ns", "a")["data"] == {}  # type: ignore[index]


def test_versions_history_and_expiry(store: Store) -> None:
    rt = store.storage_type(CONFIGMAPS)
    for name in "abcdef":
        store.create_object(CONFIGMAPS, "ns", cm(name))
    assert store.resource_version == "7"
    initial, watcher = store.watch(rt, 4, lambda e: None)
    assert [(e.rv, e.obj["metadata"]["name"]) for e in initial] == [(5, "d"), (6, "e"), (7, "f")]
    store.unwatch(watcher)
    with pytest.raises(StatusError) as info:
        store.watch(rt, 2, lambda e: None)
    assert info.value.code == 410 and info.value.reason == "Expired"
    current, _ = store.watch(rt, None, lambda e: None)
    assert [e.type for e in current] == ["ADDED"] * 6


def test_watchers_get_events_in_version_order_from_many_threads(store: Store) -> None:
    rt = store.storage_type(CONFIGMAPS)
    got: list[WatchEvent] = []
    store.watch(rt, int(store.resource_version), got.append)

    def write(prefix: str) -> None:
        for i in range(50):
            store.create_object(CONFIGMAPS, "ns", cm(f"{prefix}{i}"))

    threads = [threading.Thread(target=write, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.rv for e in got] == list(range(2, 202))


def test_noop_update_and_generation(store: Store) -> None:
    rt = store.storage_type(ResourceRef("apps", "deployments"))
    dep = store.create(rt, "ns", {"metadata": {"name": "d"}, "spec": {"replicas": 1}})
    assert dep["metadata"]["generation"] == 1
    same = store.update(rt, "ns", "d", dict(dep))
    assert same["metadata"]["resourceVersion"] == dep["metadata"]["resourceVersion"]
    labelled = store.update(
        rt, "ns", "d", {**dep, "metadata": {**dep["metadata"], "labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1  # metadata does not count
    scaled = store.update(rt, "ns", "d", {**labelled, "spec": {"replicas": 2}})
    assert scaled["metadata"]["generation"] == 2


def test_namespace_deletion_waits_for_finalized_content(store: Store) -> None:
    ns_rt = store.storage_type(NAMESPACES)
    store.create_object(CONFIGMAPS, "ns", cm("plain"))
    held = store.create_object(CONFIGMAPS, "ns", cm("held", finalizers=["x/y"]))
    marked = store.delete(ns_rt, None, "ns")
    assert marked["status"]["phase"] == "Terminating"
    # The sweep ran synchronously (delay 0): only the finalized object is left.
    assert [o["metadata"]["name"] for o in store.list_objects(CONFIGMAPS)] == ["held"]
    with pytest.raises(KubeError, match="being terminated"):
        store.create_object(CONFIGMAPS, "ns", cm("new"))
    held = store.get_object(CONFIGMAPS, "ns", "held")  # type: ignore[assignment]
    assert held["metadata"]["deletionTimestamp"]
    held["metadata"]["finalizers"] = []
    store.update_object(CONFIGMAPS, "ns", held)
    assert store.get_object(NAMESPACES, None, "ns") is None


def test_listeners_run_in_order_and_can_write_back(store: Store) -> None:
    seen: list[tuple[str, str]] = []

    def controller(event_type: str, ref: ResourceRef, obj: dict[str, Any]) -> None:
        seen.append((event_type, obj["metadata"]["name"]))
        if ref == PROFILES and event_type == "ADDED":
            store.create_object(NAMESPACES, None, {"metadata": {"name": obj["metadata"]["name"]}})

    store.add_listener(controller)
    store.create_object(
        PROFILES,
        None,
        {"apiVersion": "kubeflow.org/v1beta1", "metadata": {"name": "alice"}, "spec": {}},
    )
    # The controller's own write is queued before its triggering event counts as done.
    assert store.wait_dispatched(5)
    assert seen == [("ADDED", "alice"), ("ADDED", "alice")]
    profile = store.get_object(PROFILES, None, "alice")
    assert profile is not None and profile["apiVersion"] == "kubeflow.org/v1"
    store.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_protobuf_namespace_body_as_kubectl_sends_it() -> None:
    meta = _field(1, b"demo") + _field(2, b"") + _field(11, _field(1, b"a") + _field(2, b"b"))
    namespace = _field(1, meta) + _field(2, b"") + _field(3, b"")
    envelope = _field(1, _field(1, b"v1") + _field(2, b"Namespace")) + _field(2, namespace)
    decoded = protobuf.decode_body(protobuf.MAGIC + envelope)
    assert decoded == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "demo", "labels": {"a": "b"}},
        "spec": {},
    }
    unknown = _field(1, _field(1, b"v1") + _field(2, b"Pod")) + _field(2, b"")
    with pytest.raises(StatusError) as info:
        protobuf.decode_body(protobuf.MAGIC + unknown)
    assert info.value.code == 415
    with pytest.raises(StatusError) as bad:
        protobuf.decode_body(protobuf.MAGIC + b"\x0a\xff")
    assert bad.value.code == 400


def test_openapi_document_hands_validation_to_the_server() -> None:
    registry = Registry("psp")
    index = openapi.index(registry)
    assert "api/v1" in index["paths"] and "apis/policy/v1beta1" in index["paths"]
    doc = openapi.group_version_document(registry, "apis/kubeflow.org/v1beta1")
    assert doc is not None
    post = doc["paths"]["/apis/kubeflow.org/v1beta1/profiles"]["post"]
    assert post["x-kubernetes-action"] == "post"
    assert post["x-kubernetes-group-version-kind"] == {
        "group": "kubeflow.org",
        "version": "v1beta1",
        "kind": "Profile",
    }
    assert any(p["name"] == "fieldValidation" for p in post["parameters"])
    assert openapi.group_version_document(registry, "apis/nope/v1") is None


def test_empty_metadata_maps_are_not_stored(store: Store) -> None:
    created = store.create_object(CONFIGMAPS, "ns", cm("a", annotations={}, labels={"x": "1"}))
    assert "annotations" not in created["metadata"]
    created["metadata"]["labels"] = {}
    created["metadata"]["finalizers"] = []
    updated = store.update_object(CONFIGMAPS, "ns", created)
    assert "labels" not in updated["metadata"] and "finalizers" not in updated["metadata"]
