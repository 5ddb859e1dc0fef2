"""Watch contract: the real client's ``kubernetes.watch.Watch`` against the sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from vsphere_kale.sandbox.testing import RunningSandbox


def meta(name: str, **kw: Any) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, **kw)


@pytest.fixture
def core(sandbox: RunningSandbox) -> client.CoreV1Api:
    api = client.CoreV1Api(sandbox.api_client())
    api.create_namespace(client.V1Namespace(metadata=meta("w")))
    return api


def collect(
    func: Callable[..., Any], *args: Any, count: int, timeout: int = 5, **kwargs: Any
) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first ``count`` events (or all until timeout)."""
    w = watch.Watch()
    seen: list[tuple[str, str, str]] = []
    for event in w.stream(func, *args, timeout_seconds=timeout, **kwargs):
        raw = event["raw_object"]
        seen.append(
            (event["type"], raw["metadata"].get("name", ""), raw["metadata"]["resourceVersion"])
        )
        if len(seen) >= count:
            w.stop()
    return seen


def test_watch_from_a_version_replays_later_events_in_order(core: client.CoreV1Api) -> None:
    a = core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("a")))
    start = a.metadata.resource_version
    core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("b")))
    core.patch_namespaced_config_map("a", "w", {"data": {"x": "1"}})
    core.delete_namespaced_config_map("b", "w")
    events = collect(core.list_namespaced_config_map, "w", count=3, resource_version=start)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    versions = [int(rv) for _, _, rv in events]
    assert versions == sorted(versions) and versions[0] > int(start)


def test_watch_without_a_version_starts_with_the_current_state(
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("old")))
    writer = threading.Timer(
        0.3,
        lambda: core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("new"))),
    )
    writer.start()
    try:
        events = collect(core.list_namespaced_config_map, "w", count=2)
    finally:
        writer.join()
    assert [(t, n) for t, n, _ in events] == [("ADDED", "old"), ("ADDED", "new")]


def test_too_old_version_gets_410_then_relist_recovers(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(watch_history=5)
    core = client.CoreV1Api(running.api_client())
    core.create_namespace(client.V1Namespace(metadata=meta("w")))
    first = core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("c0")))
    for i in range(1, 10):
        core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta(f"c{i}")))
    with pytest.raises(ApiException) as info:
        # With timeout_seconds the client does not retry; it raises the ERROR event.
        collect(
            core.list_namespaced_config_map,
            "w",
            count=1,
            resource_version=first.metadata.resource_version,
        )
    assert info.value.status == 410 and "Expired" in str(info.value.reason)
    listed = core.list_namespaced_config_map("w")
    assert len(listed.items) == 10
    core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("after")))
    events = collect(
        core.list_namespaced_config_map,
        "w",
        count=1,
        resource_version=listed.metadata.resource_version,
    )
    assert [(t, n) for t, n, _ in events] == [("ADDED", "after")]


def test_raw_410_event_is_a_kube_status(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(watch_history=1)
    core = client.CoreV1Api(running.api_client())
    for name in ("a", "b", "c"):
        core.create_namespace(client.V1Namespace(metadata=meta(name)))
    response = core.list_namespace(watch=True, resource_version="1", _preload_content=False)
    line = response.data.decode().strip()
    import json

    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith("too old resource version: 1")


def test_bookmarks_carry_the_latest_version(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(bookmark_interval=0.1)
    core = client.CoreV1Api(running.api_client())
    core.create_namespace(client.V1Namespace(metadata=meta("w")))
    core.create_namespace(client.V1Namespace(metadata=meta("x")))  # rv 2, not a configmap
    w = watch.Watch()
    bookmark: dict[str, Any] = {}
    for event in w.stream(
        core.list_namespaced_config_map,
        "w",
        resource_version="1",
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        if event["type"] == "BOOKMARK":
            bookmark = event["raw_object"]
            w.stop()
    assert bookmark["metadata"] == {"resourceVersion": "2"}
    assert bookmark["kind"] == "ConfigMap"
    assert w.resource_version == "2"


def test_timeout_seconds_ends_the_stream(core: client.CoreV1Api) -> None:
    # The server ends the stream after timeoutSeconds: the client, which would wait 60 s
    # for data (and then fail with a read timeout), sees a clean end, not before 1 s.
    started = time.monotonic()
    events = collect(core.list_namespaced_config_map, "w", count=1, timeout=1, _request_timeout=60)
    assert events == []
    assert time.monotonic() - started >= 0.9


def test_label_selector_watch_reports_objects_entering_and_leaving(
    core: client.CoreV1Api,
) -> None:
    cm = core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("a")))
    core.patch_namespaced_config_map("a", "w", {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_config_map("a", "w", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("a", "w", {"metadata": {"labels": {"app": "db"}}})
    core.create_namespaced_config_map(
        "w", client.V1ConfigMap(metadata=meta("other", labels={"app": "db"}))
    )
    events = collect(
        core.list_namespaced_config_map,
        "w",
        count=3,
        timeout=2,
        label_selector="app=web",
        resource_version=cm.metadata.resource_version,
    )
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_is_scoped_to_its_namespace_and_field_selector(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=meta("elsewhere")))
    rv = core.list_namespaced_config_map("w").metadata.resource_version
    core.create_namespaced_config_map("elsewhere", client.V1ConfigMap(metadata=meta("x")))
    core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("x")))
    core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta("y")))
    scoped = collect(core.list_namespaced_config_map, "w", count=5, timeout=1, resource_version=rv)
    assert [n for _, n, _ in scoped] == ["x", "y"]
    one = collect(
        core.list_config_map_for_all_namespaces,
        count=5,
        timeout=1,
        resource_version=rv,
        field_selector="metadata.name=x",
    )
    assert len(one) == 2


def test_watch_of_profiles_in_either_version(sandbox: RunningSandbox) -> None:
    custom = client.CustomObjectsApi(sandbox.api_client())
    custom.create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "alice"},
            "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
        },
    )
    w = watch.Watch()
    for event in w.stream(
        custom.list_cluster_custom_object, "kubeflow.org", "v1beta1", "profiles", timeout_seconds=2
    ):
        assert event["type"] == "ADDED"
        assert event["object"]["apiVersion"] == "kubeflow.org/v1beta1"
        w.stop()


def test_injected_410_and_close_watches(sandbox: RunningSandbox, core: client.CoreV1Api) -> None:
    sandbox.sandbox.faults.inject(verb="watch", resource="configmaps", status=410)
    with pytest.raises(ApiException) as info:
        collect(core.list_namespaced_config_map, "w", count=1)
    assert info.value.status == 410

    done = threading.Event()

    def watch_forever() -> None:
        collect(core.list_namespaced_config_map, "w", count=1, timeout=30)
        done.set()

    thread = threading.Thread(target=watch_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while sandbox.sandbox.open_watches == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.sandbox.open_watches == 1
    sandbox.sandbox.close_watches()
    assert done.wait(5), "close_watches did not end the stream"
    thread.join(5)


def test_concurrent_writers_and_watchers_lose_nothing(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    """Given 4 writers x 90 writes and 3 watchers from one version, every watcher sees every
    write once, in resourceVersion order."""
    running = sandbox_factory()
    admin = client.CoreV1Api(running.api_client())
    admin.create_namespace(client.V1Namespace(metadata=meta("w")))
    start = admin.list_namespaced_config_map("w").metadata.resource_version
    writers, writes = 4, 90
    expected = writers * writes

    results: list[list[tuple[str, str, str]]] = []
    errors: list[BaseException] = []

    def watcher() -> None:
        try:
            core = client.CoreV1Api(running.api_client())
            results.append(
                collect(
                    core.list_namespaced_config_map,
                    "w",
                    count=expected,
                    timeout=30,
                    resource_version=start,
                )
            )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def writer(index: int) -> None:
        try:
            core = client.CoreV1Api(running.api_client())
            for i in range(writes // 3):
                name = f"w{index}-{i}"
                core.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta(name)))
                core.patch_namespaced_config_map(name, "w", {"data": {"i": str(i)}})
                core.delete_namespaced_config_map(name, "w")
        except BaseException as exc:
            errors.append(exc)

    watchers = [threading.Thread(target=watcher) for _ in range(3)]
    for t in watchers:
        t.start()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads + watchers:
        t.join(60)
    assert not errors, errors
    assert len(results) == 3
    for seen in results:
        assert len(seen) == expected
        versions = [int(rv) for _, _, rv in seen]
        assert versions == sorted(set(versions)), "out of order or duplicated events"
        per_object: dict[str, list[str]] = {}
        for kind, name, _ in seen:
            per_object.setdefault(name, []).append(kind)
        assert all(kinds == ["ADDED", "MODIFIED", "DELETED"] for kinds in per_object.values())
    assert results[0] == results[1] == results[2]
