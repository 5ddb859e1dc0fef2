"""The Kube adapter over HTTP against the sandbox API server: every verb, errors, warnings,
discovery, and the list function the informers use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.sandbox.types import AdmissionRejected, AdmissionResult


@pytest.fixture
def kube(sandbox: RunningSandbox) -> Iterator[Kube]:
    api = Kube.from_kubeconfig(str(sandbox.kubeconfig_path))
    api.create(r.NAMESPACE, {"metadata": {"name": "default"}})
    yield api
    api.close()


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def test_create_get_list_update_delete_round_trip(kube: Kube) -> None:
    created = kube.create(r.CONFIG_MAP, configmap("a", k="1"))
    assert created["metadata"]["uid"]
    kube.create(r.CONFIG_MAP, configmap("b", k="2"))

    assert kube.get(r.CONFIG_MAP, "a", namespace="default")["data"] == {"k": "1"}
    names = [i["metadata"]["name"] for i in kube.list(r.CONFIG_MAP, namespace="default")["items"]]
    assert {"a", "b"} <= set(names)

    created["data"] = {"k": "3"}
    updated = kube.update(r.CONFIG_MAP, created)
    assert updated["data"] == {"k": "3"}
    # The first body's resourceVersion is now stale: an update with it is a conflict.
    with pytest.raises(KubeConflict, match="update configmaps default/a"):
        kube.update(r.CONFIG_MAP, created)

    kube.delete(r.CONFIG_MAP, "a", namespace="default")
    assert kube.get_optional(r.CONFIG_MAP, "a", namespace="default") is None
    with pytest.raises(KubeNotFound, match="get configmaps default/a"):
        kube.get(r.CONFIG_MAP, "a", namespace="default")


def test_list_pages_with_limit_and_continue(kube: Kube) -> None:
    # The sandbox may answer a limited list in one page (kube-apiserver pages it); the loop a
    # caller writes with ``limit``/``continue_`` must see every object either way.
    for i in range(5):
        kube.create(r.CONFIG_MAP, configmap(f"page-{i}", p="yes"))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = kube.list(
            r.CONFIG_MAP, namespace="default", label_selector=None, limit=2, continue_=token
        )
        pages += 1
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
    assert sorted(seen) == [f"page-{i}" for i in range(5)]
    assert 1 <= pages <= 3


def test_list_selectors(kube: Kube) -> None:
    a = configmap("sel-a")
    a["metadata"]["labels"] = {"team": "x"}
    kube.create(r.CONFIG_MAP, a)
    kube.create(r.CONFIG_MAP, configmap("sel-b"))
    by_label = kube.list(r.CONFIG_MAP, namespace="default", label_selector="team=x")
    assert [i["metadata"]["name"] for i in by_label["items"]] == ["sel-a"]
    by_field = kube.list(r.CONFIG_MAP, field_selector="metadata.name=sel-b")
    assert [i["metadata"]["name"] for i in by_field["items"]] == ["sel-b"]


@pytest.mark.parametrize(
    ("patch_type", "patch", "expected"),
    [
        ("merge", {"data": {"k": None, "n": "new"}}, {"n": "new"}),
        ("json", [{"op": "replace", "path": "/data/k", "value": "j"}], {"k": "j"}),
        ("strategic", {"data": {"s": "1"}}, {"k": "1", "s": "1"}),
    ],
)
def test_patch_types(kube: Kube, patch_type: Any, patch: Any, expected: dict[str, str]) -> None:
    kube.create(r.CONFIG_MAP, configmap("p", k="1"))
    patched = kube.patch(r.CONFIG_MAP, "p", patch, namespace="default", patch_type=patch_type)
    assert patched["data"] == expected
    assert kube.get(r.CONFIG_MAP, "p", namespace="default")["data"] == expected


def test_json_patch_must_be_a_list(kube: Kube) -> None:
    with pytest.raises(TypeError, match="list of operations"):
        kube.patch(r.CONFIG_MAP, "p", {"op": "add"}, namespace="default", patch_type="json")


def test_server_side_apply_creates_then_updates(kube: Kube) -> None:
    applied = kube.apply(r.CONFIG_MAP, configmap("ssa", k="1"), field_manager="vsphere-kale")
    assert applied["data"] == {"k": "1"}
    again = kube.apply(
        r.CONFIG_MAP, configmap("ssa", k="2"), field_manager="vsphere-kale", force=True
    )
    assert again["data"]["k"] == "2"
    with pytest.raises(ValueError, match="field manager"):
        kube.apply(r.CONFIG_MAP, configmap("ssa"), field_manager="")


def test_dry_run_writes_nothing(kube: Kube) -> None:
    answer = kube.create(r.CONFIG_MAP, configmap("dry", k="1"), dry_run=True)
    assert answer["metadata"]["name"] == "dry"
    assert kube.get_optional(r.CONFIG_MAP, "dry", namespace="default") is None

    kube.create(r.CONFIG_MAP, configmap("dry", k="1"))
    kube.patch(r.CONFIG_MAP, "dry", {"data": {"k": "2"}}, namespace="default", dry_run=True)
    # force: the patch above made the client's default manager own .data.k (a real conflict)
    kube.apply(r.CONFIG_MAP, configmap("dry", k="3"), field_manager="t", force=True, dry_run=True)
    kube.delete(r.CONFIG_MAP, "dry", namespace="default", dry_run=True)
    assert kube.get(r.CONFIG_MAP, "dry", namespace="default")["data"] == {"k": "1"}


def test_delete_preconditions_protect_a_replaced_object(kube: Kube) -> None:
    old = kube.create(r.CONFIG_MAP, configmap("pre"))
    kube.delete(r.CONFIG_MAP, "pre", namespace="default")
    kube.create(r.CONFIG_MAP, configmap("pre"))
    with pytest.raises(KubeConflict, match="delete configmaps default/pre"):
        kube.delete(
            r.CONFIG_MAP,
            "pre",
            namespace="default",
            preconditions={"uid": old["metadata"]["uid"]},
            propagation_policy="Background",
        )
    assert kube.get_optional(r.CONFIG_MAP, "pre", namespace="default") is not None


def test_cluster_scoped_and_subresource_paths(kube: Kube) -> None:
    kube.create(r.NAMESPACE, {"metadata": {"name": "alice"}})
    assert kube.get(r.NAMESPACE, "alice")["metadata"]["name"] == "alice"
    kube.create(r.SERVICE_ACCOUNT, {"metadata": {"name": "robot", "namespace": "alice"}})
    token = kube.create(
        r.TOKEN_REQUEST,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        namespace="alice",
        name="robot",
    )
    assert token["status"]["token"]


def test_writes_collect_warning_headers(sandbox: RunningSandbox, kube: Kube) -> None:
    # Given an admission chain that warns (as a webhook or Pod Security Admission does)
    async def warn(attrs: Any, obj: Any, old: Any) -> AdmissionResult:
        if obj.get("metadata", {}).get("name") == "denied":
            raise AdmissionRejected(403, "Forbidden", "no")
        return AdmissionResult(obj, warnings=('would violate "restricted"', "second \\ one"))

    sandbox.sandbox.admit = warn
    warnings: list[str] = []
    # When a dry-run write is made, the warnings reach the caller's list, unescaped
    kube.create(r.CONFIG_MAP, configmap("w"), dry_run=True, warnings=warnings)
    assert warnings == ['would violate "restricted"', "second \\ one"]
    # And a write without a list still works
    kube.create(r.CONFIG_MAP, configmap("w"))
    # And a denial is translated, naming the action
    with pytest.raises(KubeForbidden, match="create configmaps default/denied: no"):
        kube.create(r.CONFIG_MAP, configmap("denied"))


def test_non_ascii_warnings_arrive_as_written(sandbox: RunningSandbox, kube: Kube) -> None:
    """kube-apiserver writes warning texts as UTF-8 bytes (k8s.io/apimachinery
    ``NewWarningHeader``); http.client reads header bytes as latin-1. Our webhook's own
    shortened warnings carry "…" (policy.storage ``_short``)."""
    texts = (
        "storageClassName rewritten from vsphere-block-storage-policy-with-a-very-long-n… "
        "to nfs-client",
        "la classe « nfs-client » est préférée",
    )

    async def warn(attrs: Any, obj: Any, old: Any) -> AdmissionResult:
        return AdmissionResult(obj, warnings=texts)

    sandbox.sandbox.admit = warn
    warnings: list[str] = []
    kube.create(r.CONFIG_MAP, configmap("utf8"), dry_run=True, warnings=warnings)
    assert warnings == list(texts)


def test_warnings_with_control_characters_are_dropped_as_kube_apiserver_does(
    sandbox: RunningSandbox, kube: Kube
) -> None:
    # kube-apiserver's warning recorder drops a text with control characters (it cannot be
    # a header value); the write itself succeeds.
    async def warn(attrs: Any, obj: Any, old: Any) -> AdmissionResult:
        return AdmissionResult(obj, warnings=("kept", "forged\r\nSet-Cookie: x=1", "kept"))

    sandbox.sandbox.admit = warn
    warnings: list[str] = []
    kube.create(r.CONFIG_MAP, configmap("ctl"), warnings=warnings)
    assert warnings == ["kept"]  # and duplicates once, as kube-apiserver dedupes
    assert kube.get(r.CONFIG_MAP, "ctl", namespace="default")


def test_warnings_past_4k_characters_are_cut_as_kube_apiserver_cuts_them(
    sandbox: RunningSandbox, kube: Kube
) -> None:
    # kube-apiserver's recorder: 4096 characters in all, then every text cut to 256 and
    # later ones added until 4096 again (k8s.io/apiserver endpoints/filters/warning.go).
    texts = tuple(f"{i:02d}" + "x" * 298 for i in range(20))

    async def warn(attrs: Any, obj: Any, old: Any) -> AdmissionResult:
        return AdmissionResult(obj, warnings=texts)

    sandbox.sandbox.admit = warn
    warnings: list[str] = []
    kube.create(r.CONFIG_MAP, configmap("long"), dry_run=True, warnings=warnings)
    # 13 texts fit (3900); the 14th starts the cut: 14 x 256, then 2 more reach 4096
    assert warnings == [t[:256] for t in texts[:16]]


def test_errors_are_translated_with_retry_after(sandbox: RunningSandbox, kube: Kube) -> None:
    # (A GET answered 429 is retried by the client itself after Retry-After; a POST is not.)
    sandbox.sandbox.faults.inject(verb="create", resource="configmaps", status=429, retry_after=3)
    with pytest.raises(KubeUnavailable, match="create configmaps default/busy") as caught:
        kube.create(r.CONFIG_MAP, configmap("busy"))
    assert caught.value.retry_after == 3.0
    assert caught.value.status == 429
    kube.create(r.CONFIG_MAP, configmap("dup"))
    with pytest.raises(KubeConflict, match="create configmaps default/dup"):
        kube.create(r.CONFIG_MAP, configmap("dup"))
    with pytest.raises(KubeError):
        kube.create(r.CONFIG_MAP, {"metadata": {"namespace": "default"}})


def test_unreachable_server_is_unavailable(sandbox: RunningSandbox) -> None:
    kube = Kube.from_kubeconfig(str(sandbox.kubeconfig_path))
    sandbox.stop()
    with pytest.raises(KubeUnavailable, match="get namespaces default"):
        kube.get(r.NAMESPACE, "default")


def test_bad_kubeconfig_says_what_to_do(tmp_path: Any) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(KubeError, match="pass --kubeconfig"):
        Kube.from_kubeconfig(str(missing))


def test_forbidden_for_another_user(sandbox_factory: Any) -> None:
    running = sandbox_factory(authorization=True, seed="kubeflow-demo", flavor="psa")
    user = next(t for name, t in running.tokens.items() if name != "admin")
    kube = Kube(running.api_client(user))
    with pytest.raises(KubeForbidden, match="list clusterrolebindings"):
        kube.list(r.CLUSTER_ROLE_BINDING)


def test_discovery_is_cached_and_answers_our_questions(sandbox_factory: Any) -> None:
    psa = sandbox_factory(flavor="psa", kubeflow=True)
    kube = Kube(psa.api_client())
    found = kube.discovery()
    assert kube.discovery() is found
    assert found.served("", "v1", "namespaces")
    assert found.served("rbac.authorization.k8s.io", "v1")
    assert not found.served("nothing.example.com", "v1")
    assert found.profile_version in ("v1", "v1beta1")
    assert found.psp_served is False
    assert kube.discovery(refresh=True) is not found

    psp = sandbox_factory(flavor="psp", kubeflow=False)
    older = Kube(psp.api_client()).discovery()
    assert older.psp_served is True


def test_list_function_serves_watch_and_informer_calls(kube: Kube) -> None:
    from kubernetes import watch

    listed = kube.list_function(r.CONFIG_MAP, namespace="default")
    first = listed()
    version = first["metadata"]["resourceVersion"]
    seen: list[str] = []
    ready = threading.Event()

    def stream() -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(listed, resource_version=version, timeout_seconds=5):
            obj = event["object"]
            assert isinstance(obj, dict)
            seen.append(f"{event['type']} {obj['metadata']['name']}")
            w.stop()

    thread = threading.Thread(target=stream)
    thread.start()
    ready.wait(5)
    kube.create(r.CONFIG_MAP, configmap("watched"))
    thread.join(10)
    assert seen == ["ADDED watched"]
    with pytest.raises(TypeError, match="unsupported list arguments"):
        listed(pretty=True)
