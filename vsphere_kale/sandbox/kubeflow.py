"""A minimal Kubeflow profile controller for the sandbox, and the builders it shares with seeds.

The real controller (kubeflow/kubeflow ``components/profile-controller``) reconciles a
Profile asynchronously: the Namespace appears first, then the ``default-editor`` and
``default-viewer`` ServiceAccounts, then the RoleBindings. Whatever reacts to Kubeflow
namespaces (our reconciler) must cope with seeing a namespace before its service accounts,
so :class:`ProfileController` keeps that order and puts a short delay between the steps.

What it creates for a Profile ``p`` owned by ``spec.owner.name`` (all with an ownerReference
to the Profile):

1. Namespace ``p``: labels ``app.kubernetes.io/part-of: kubeflow-profile``,
   ``istio-injection: enabled``, ``katib.kubeflow.org/metrics-collector-injection: enabled``,
   ``pipelines.kubeflow.org/enabled: "true"``, ``serving.kubeflow.org/inferenceservice:
   enabled``; annotation ``owner: <owner>``;
2. ServiceAccounts ``default-editor`` and ``default-viewer``;
3. RoleBindings ``namespaceAdmin`` (ClusterRole ``kubeflow-admin`` to the owner, annotations
   ``role: admin``, ``user: <owner>``), ``default-editor`` (``kubeflow-edit``) and
   ``default-viewer`` (``kubeflow-view``) to the service accounts of the same names.

Creates that answer 409 are fine (idempotent; a MODIFIED Profile is reconciled again, which
repairs missing children). Failures (typically a Profile recreated while its old namespace is
still terminating) are retried with backoff, as the real controller requeues. Deleting a
Profile deletes its namespace (the real controller's owner references let the garbage
collector do it). Not emulated: Istio AuthorizationPolicies, ResourceQuotas, plugins
(workload identity), Profile status conditions, KFAM.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from vsphere_kale.errors import KubeConflict, KubeError
from vsphere_kale.sandbox.types import JSONObject, ObjectEditor, ObjectWriter, ResourceRef

log = logging.getLogger(__name__)

PROFILES = ResourceRef("kubeflow.org", "profiles")
NAMESPACES = ResourceRef("", "namespaces")
SERVICE_ACCOUNTS = ResourceRef("", "serviceaccounts")
ROLE_BINDINGS = ResourceRef("rbac.authorization.k8s.io", "rolebindings")

#: Labels the profile controller puts on every profile namespace (Kubeflow 1.7+
#: ``namespace-labels.yaml``; ``istio-injection`` because Kubeflow runs with Istio).
PROFILE_NAMESPACE_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/part-of": "kubeflow-profile",
    "istio-injection": "enabled",
    "katib.kubeflow.org/metrics-collector-injection": "enabled",
    "pipelines.kubeflow.org/enabled": "true",
    "serving.kubeflow.org/inferenceservice": "enabled",
}

#: Reconcile attempts per event before giving up (backoff 50 ms doubling, at most 1 s).
MAX_RETRIES = 10

EDITOR_SA = "default-editor"
VIEWER_SA = "default-viewer"
ADMIN_BINDING = "namespaceAdmin"

#: The steps in the order the real controller takes them (and that tests watch for).
Step = tuple[ResourceRef, str, JSONObject]


# --- builders (pure) ----------------------------------------------------------------------


def build_profile(name: str, owner: str, *, api_version: str = "kubeflow.org/v1") -> JSONObject:
    """A Profile as Kubeflow's dashboard registration flow creates it."""
    return {
        "apiVersion": api_version,
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }


def profile_owner(profile: Mapping[str, Any]) -> str:
    owner = (profile.get("spec") or {}).get("owner") or {}
    return str(owner.get("name") or "")


def _owner_reference(profile: Mapping[str, Any]) -> JSONObject:
    meta = profile.get("metadata") or {}
    return {
        "apiVersion": str(profile.get("apiVersion") or "kubeflow.org/v1"),
        "kind": "Profile",
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_namespace(profile: Mapping[str, Any]) -> JSONObject:
    name = str((profile.get("metadata") or {}).get("name", ""))
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": dict(PROFILE_NAMESPACE_LABELS),
            "annotations": {"owner": profile_owner(profile)},
            "ownerReferences": [_owner_reference(profile)],
        },
    }


def build_service_account(profile: Mapping[str, Any], name: str) -> JSONObject:
    namespace = str((profile.get("metadata") or {}).get("name", ""))
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [_owner_reference(profile)],
        },
    }


def _role_binding(
    profile: Mapping[str, Any],
    name: str,
    cluster_role: str,
    subject: JSONObject,
    *,
    annotations: Mapping[str, str] | None = None,
) -> JSONObject:
    namespace = str((profile.get("metadata") or {}).get("name", ""))
    meta: JSONObject = {
        "name": name,
        "namespace": namespace,
        "ownerReferences": [_owner_reference(profile)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [subject],
    }


def build_role_bindings(profile: Mapping[str, Any]) -> list[JSONObject]:
    namespace = str((profile.get("metadata") or {}).get("name", ""))
    owner = profile_owner(profile)
    return [
        _role_binding(
            profile,
            ADMIN_BINDING,
            "kubeflow-admin",
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner},
            annotations={"role": "admin", "user": owner},
        ),
        _role_binding(
            profile,
            EDITOR_SA,
            "kubeflow-edit",
            {"kind": "ServiceAccount", "name": EDITOR_SA, "namespace": namespace},
        ),
        _role_binding(
            profile,
            VIEWER_SA,
            "kubeflow-view",
            {"kind": "ServiceAccount", "name": VIEWER_SA, "namespace": namespace},
        ),
    ]


def plan_profile(profile: Mapping[str, Any]) -> list[Step]:
    """Every object the controller creates for ``profile``, in its order."""
    namespace = str((profile.get("metadata") or {}).get("name", ""))
    steps: list[Step] = [(NAMESPACES, "", build_namespace(profile))]
    steps += [
        (SERVICE_ACCOUNTS, namespace, build_service_account(profile, sa))
        for sa in (EDITOR_SA, VIEWER_SA)
    ]
    steps += [(ROLE_BINDINGS, namespace, rb) for rb in build_role_bindings(profile)]
    return steps


def apply_step(writer: ObjectWriter, step: Step) -> bool:
    """Create one planned object; True if created, False if it already existed."""
    ref, namespace, obj = step
    try:
        writer.create_object(ref, namespace or None, obj)
    except KubeConflict:
        return False
    return True


def reconcile_profile(writer: ObjectWriter, profile: Mapping[str, Any]) -> None:
    """Create everything for ``profile`` at once (seed data; no delays)."""
    for step in plan_profile(profile):
        apply_step(writer, step)


def _terminating(obj: Mapping[str, Any] | None) -> bool:
    return obj is not None and bool((obj.get("metadata") or {}).get("deletionTimestamp"))


# --- the controller -----------------------------------------------------------------------


class ProfileController:
    """Reacts to Profile events like Kubeflow's profile controller, on its own thread.

    Register it with ``sandbox.add_controller(controller)``. ``step_delay`` seconds pass
    before each step (namespace, each service account, each role binding), so watchers see
    the real controller's order with gaps in between.

    The worker thread exists only while there is work: it starts on the first Profile event
    and ends once the queue has been empty for ``linger`` seconds, so a sandbox that stops
    leaves no thread behind even if nobody calls :meth:`stop` (which ends it at once).
    """

    def __init__(
        self, writer: ObjectEditor, *, step_delay: float = 0.05, linger: float = 0.5
    ) -> None:
        self._writer = writer
        self.step_delay = step_delay
        self.linger = linger
        self._queue: queue.Queue[tuple[str, JSONObject, int]] = queue.Queue()
        self._stopping = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, event_type: str, ref: ResourceRef, obj: JSONObject) -> None:
        if ref != PROFILES or self._stopping.is_set():
            return
        with self._lock:
            self._busy += 1
            self._queue.put((event_type, obj, 0))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sandbox-kubeflow", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                event_type, profile, attempt = self._queue.get(timeout=self.linger)
            except queue.Empty:
                with self._lock:
                    # Checked under the lock __call__ enqueues under: no event is stranded.
                    if self._queue.empty() or self._stopping.is_set():
                        self._thread = None
                        return
                continue
            try:
                if self._stopping.is_set():
                    continue
                if event_type == "DELETED":
                    self._delete(profile)
                else:
                    self._reconcile(profile)
            except KubeError as exc:
                # Typically the namespace of a deleted-and-recreated Profile is still
                # terminating: like the real controller, requeue with backoff.
                self._retry(event_type, profile, attempt, exc)
            except Exception:  # a controller bug must not kill the thread: log and go on
                log.exception("profile controller failed on %s", event_type)
            finally:
                with self._lock:
                    self._busy -= 1

    def _retry(self, event_type: str, profile: JSONObject, attempt: int, exc: KubeError) -> None:
        meta = profile.get("metadata") or {}
        name = str(meta.get("name", ""))
        current = self._writer.get_object(PROFILES, None, name)
        if (
            attempt >= MAX_RETRIES
            or current is None
            or (current.get("metadata") or {}).get("uid") != meta.get("uid")
        ):
            log.warning("profile %s: reconcile failed, giving up: %s", name, exc)
            return
        log.info("profile %s: reconcile failed (%s); retrying", name, exc)
        if self._stopping.wait(min(0.05 * 2**attempt, 1.0)):
            return
        with self._lock:
            self._busy += 1
            self._queue.put((event_type, current, attempt + 1))

    def _reconcile(self, profile: JSONObject) -> None:
        name = str((profile.get("metadata") or {}).get("name", ""))
        if _terminating(self._writer.get_object(NAMESPACES, None, name)):
            # The namespace of an earlier Profile of this name is still being emptied: its
            # children look present but are about to go. Retry once it is gone.
            raise KubeError(f'namespace "{name}" is still terminating', status=409)
        for step in plan_profile(profile):
            ref, namespace, obj = step
            if self._writer.get_object(ref, namespace or None, obj["metadata"]["name"]):
                continue  # already there: no delay, no write (a MODIFIED re-reconcile)
            if self._stopping.wait(self.step_delay):
                return
            if apply_step(self._writer, step):
                log.info(
                    "profile %s: created %s %s/%s",
                    name,
                    ref.plural,
                    namespace,
                    obj["metadata"]["name"],
                )

    def _delete(self, profile: JSONObject) -> None:
        name = str((profile.get("metadata") or {}).get("name", ""))
        namespace = self._writer.get_object(NAMESPACES, None, name)
        if namespace is None:
            return
        owners = (namespace.get("metadata") or {}).get("ownerReferences") or []
        uid = (profile.get("metadata") or {}).get("uid")
        # Only a namespace this profile owns goes with it (garbage collector semantics).
        if any(o.get("kind") == "Profile" and o.get("uid") == uid for o in owners):
            self._writer.delete_object(NAMESPACES, None, name)
            log.info("profile %s: deleted its namespace", name)

    def _converged(self) -> bool:
        for profile in self._writer.list_objects(PROFILES):
            if (profile.get("metadata") or {}).get("deletionTimestamp"):
                continue
            for ref, namespace, obj in plan_profile(profile):
                found = self._writer.get_object(ref, namespace or None, obj["metadata"]["name"])
                if found is None or _terminating(found):
                    return False
        return True

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no work is queued and every stored Profile has all its objects.

        Checking the store (not only the queue) closes the gap between a write and the
        store's dispatcher handing its event to this controller.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = self._busy
            if not busy and self._converged():
                return True
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            time.sleep(0.01)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reacting; the worker (if any) ends after its current step."""
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether a worker thread is alive right now."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()


def build_controller(writer: ObjectEditor, *, step_delay: float = 0.05) -> ProfileController:
    """The Kubeflow emulation as ``build_sandbox`` registers it."""
    return ProfileController(writer, step_delay=step_delay)
