"""The playground's controllers and seed reach the API through this one small client.

:class:`ApiObjects` speaks plain JSON through :class:`vsphere_kale.kube.Kube` (the one client
adapter: auth, TLS, pool) and raises our error tree, so the same
Kubeflow and storage emulation runs against the embedded sandbox and a real kube-apiserver.
It has the read/write methods of the sandbox's in-process ``ObjectEditor`` too, so the seed can
be written either way (see :mod:`vsphere_kale.playground.seed`).

:class:`WatchLoop` is list-then-watch on a thread for one resource, calling a handler per
event, re-listing after a 410 and re-watching after a dropped stream: what an informer does,
without the cache (the controllers here read what they need).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.kube import Kube, Resource, kube_errors, path
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

MERGE_PATCH = "application/merge-patch+json"

log = logging.getLogger(__name__)

#: The version each resource the playground writes is served at (group, plural -> version).
VERSIONS: Mapping[ResourceRef, str] = {
    ResourceRef("", "namespaces"): "v1",
    ResourceRef("", "serviceaccounts"): "v1",
    ResourceRef("", "persistentvolumeclaims"): "v1",
    ResourceRef("", "persistentvolumes"): "v1",
    ResourceRef("", "pods"): "v1",
    ResourceRef("", "events"): "v1",
    ResourceRef("storage.k8s.io", "storageclasses"): "v1",
    ResourceRef("rbac.authorization.k8s.io", "clusterroles"): "v1",
    ResourceRef("rbac.authorization.k8s.io", "clusterrolebindings"): "v1",
    ResourceRef("rbac.authorization.k8s.io", "rolebindings"): "v1",
    ResourceRef("kubeflow.org", "profiles"): "v1",
    ResourceRef("apps", "statefulsets"): "v1",
    ResourceRef("policy", "podsecuritypolicies"): "v1beta1",
    ResourceRef("apiextensions.k8s.io", "customresourcedefinitions"): "v1",
}


def resource_path(ref: ResourceRef, namespace: str | None = None, name: str | None = None) -> str:
    """``/api/v1/namespaces/alice/persistentvolumeclaims/x`` for a ref, namespace and name."""
    version = VERSIONS[ref]
    segments = ["api", version] if not ref.group else ["apis", ref.group, version]
    if namespace:
        segments += ["namespaces", namespace]
    segments.append(ref.plural)
    if name:
        segments.append(name)
    return path(*segments)


def _what(ref: ResourceRef, namespace: str | None, name: str) -> str:
    kind = ref.plural.rstrip("s")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class ApiObjects:
    """get/list/create/update/patch/delete of JSON objects by :class:`ResourceRef`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def get_object(self, ref: ResourceRef, namespace: str | None, name: str) -> JSONObject | None:
        try:
            found: JSONObject = self.kube.request(
                "GET",
                resource_path(ref, namespace, name),
                action=f"get {_what(ref, namespace, name)}",
            )
        except KubeNotFound:
            return None
        return found

    def list_objects(self, ref: ResourceRef, namespace: str | None = None) -> list[JSONObject]:
        return list(self.list_with_version(ref, namespace)[0])

    def list_with_version(
        self, ref: ResourceRef, namespace: str | None = None, **query: Any
    ) -> tuple[list[JSONObject], str]:
        answer = self.kube.request(
            "GET", resource_path(ref, namespace), action=f"list {ref.plural}", query=query
        )
        items = [dict(i) for i in answer.get("items") or []]
        return items, str((answer.get("metadata") or {}).get("resourceVersion") or "")

    def create_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        name = str((obj.get("metadata") or {}).get("name") or "")
        created: JSONObject = self.kube.request(
            "POST",
            resource_path(ref, namespace),
            action=f"create {_what(ref, namespace, name)}",
            body=obj,
        )
        return created

    def update_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        name = str((obj.get("metadata") or {}).get("name") or "")
        updated: JSONObject = self.kube.request(
            "PUT",
            resource_path(ref, namespace, name),
            action=f"update {_what(ref, namespace, name)}",
            body=obj,
        )
        return updated

    def patch_object(
        self, ref: ResourceRef, namespace: str | None, name: str, patch: JSONObject
    ) -> JSONObject:
        patched: JSONObject = self.kube.request(
            "PATCH",
            resource_path(ref, namespace, name),
            action=f"patch {_what(ref, namespace, name)}",
            body=patch,
            content_type=MERGE_PATCH,
        )
        return patched

    def patch_status(
        self, ref: ResourceRef, namespace: str | None, name: str, status: JSONObject
    ) -> JSONObject:
        """Merge-patch ``status`` through the status subresource.

        kube-apiserver ignores ``status`` in writes to the main resource of PVCs and PVs; the
        embedded sandbox has no status subresources (404) and stores ``status`` with the
        object, so there the main resource is patched instead.
        """
        body = {"status": status}
        try:
            patched: JSONObject = self.kube.request(
                "PATCH",
                resource_path(ref, namespace, name) + "/status",
                action=f"patch status of {_what(ref, namespace, name)}",
                body=body,
                content_type=MERGE_PATCH,
            )
            return patched
        except KubeNotFound:
            if self.get_object(ref, namespace, name) is None:
                raise
            return self.patch_object(ref, namespace, name, body)

    def delete_object(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        with contextlib.suppress(KubeNotFound):  # gone already: what we wanted
            self.kube.request(
                "DELETE",
                resource_path(ref, namespace, name),
                action=f"delete {_what(ref, namespace, name)}",
                body={"propagationPolicy": "Background"},
            )

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the server serves ``group/version`` ``plural`` (discovery)."""
        try:
            answer = self.kube.get_json(
                path("apis", group, version), action=f"discover {group}/{version}"
            )
        except KubeNotFound:
            return False
        return any(r.get("name") == plural for r in answer.get("resources") or [])


Handler = Callable[[str, JSONObject], None]


def wait_converged(
    *,
    idle: Callable[[], bool],
    converged: Callable[[], bool],
    stopping: threading.Event,
    timeout: float,
    what: str,
) -> bool:
    """Poll until ``idle()`` (nothing queued) and ``converged()`` (the API shows the end
    state), or ``timeout``/``stopping``. Checking the API, not only the queue, closes the gap
    between a write and its watch event reaching the controller."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if idle() and converged():
                return True
        except KubeError as exc:
            log.debug("%s: cannot check convergence: %s", what, exc)
        if time.monotonic() >= deadline or stopping.is_set():
            return False
        time.sleep(0.02)


class WatchLoop:
    """List, then watch ``ref`` on a daemon thread; ``handler(type, obj)`` for every change.

    The initial list is delivered as ADDED events before :meth:`start` returns, so a caller
    knows the loop has seen the state of the world at start. Errors in the handler are logged
    and do not end the loop (one object's failure must not stop a controller).
    """

    def __init__(
        self,
        objects: ApiObjects,
        ref: ResourceRef,
        handler: Handler,
        *,
        name: str,
        stopping: threading.Event,
        watch_timeout: int = 30,
    ) -> None:
        self._objects = objects
        self._ref = ref
        self._handler = handler
        self._stopping = stopping
        self._watch_timeout = watch_timeout
        self._version = ""
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._relist()
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread (call after setting ``stopping``); an open stream is shut
        down first, so the thread does not sit in a read until the server's timeout."""
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed: nothing to interrupt
                response.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _deliver(self, event_type: str, obj: JSONObject) -> None:
        try:
            self._handler(event_type, obj)
        except Exception:  # a controller bug must not end the watch: log and go on
            meta = obj.get("metadata") or {}
            log.exception(
                "%s: handler failed on %s %s/%s",
                self._thread.name,
                event_type,
                meta.get("namespace", ""),
                meta.get("name", ""),
            )

    def _relist(self) -> None:
        items, self._version = self._objects.list_with_version(self._ref)
        for item in items:
            self._deliver("ADDED", item)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                if not self._version:
                    self._relist()
                for event_type, obj in self._stream():
                    backoff = 0.05
                    if self._stopping.is_set():
                        return
                    if event_type == "BOOKMARK":
                        continue
                    self._deliver(event_type, obj)
            except KubeError as exc:
                # Typically the server is stopping or restarting; try again shortly.
                log.debug("%s: watch failed: %s", self._thread.name, exc)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, 2.0)

    def _stream(self) -> Iterator[tuple[str, JSONObject]]:
        ref = self._ref
        # namespaced=True with no namespace: the all-namespaces path for namespaced types,
        # and the same collection path as a cluster-scoped one would have.
        resource = Resource(ref.group, VERSIONS[ref], ref.plural, True, ref.plural)
        list_fn = self._objects.kube.list_function(resource)
        with kube_errors(f"watch {ref.plural}"):
            response = list_fn(
                watch=True,
                resource_version=self._version,
                timeout_seconds=self._watch_timeout,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(10.0, self._watch_timeout + 10.0),
            )
        self._response = response
        try:
            for line in _lines(response):
                event = json.loads(line)
                obj = event.get("object") or {}
                event_type = str(event.get("type") or "")
                if event_type == "ERROR":
                    # 410 Expired: our version is too old; list again.
                    self._version = ""
                    return
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._version = str(version)
                yield event_type, obj
        except Exception as exc:  # any transport failure mid-stream (urllib3's own errors
            # stay inside vsphere_kale.kube): the loop watches again from the last version
            raise KubeError(f"watch {self._ref.plural}: stream ended ({exc})") from exc
        finally:
            self._response = None
            response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-separated watch events from a streaming urllib3 response."""
    buffer = b""
    for chunk in response.stream(4096, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
