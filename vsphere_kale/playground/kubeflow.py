"""Kubeflow's Profile CRD and profile controller, as a client of the API (either control plane).

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
collector do it; the embedded sandbox has none, so the controller deletes it itself).
The same code runs against the embedded sandbox and a real kube-apiserver: it only talks to
the API (:class:`ApiObjects`). :mod:`vsphere_kale.playground.crd` registers the Profile CRD
where the server does not serve Profiles already (the sandbox serves them built in). Not
emulated: Istio AuthorizationPolicies, ResourceQuotas, plugins (workload identity), Profile
status conditions, KFAM.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from vsphere_kale.errors import KubeConflict, KubeError
from vsphere_kale.kube import Kube
from vsphere_kale.playground.objects import ApiObjects, WatchLoop, wait_converged
from vsphere_kale.sandbox.types import JSONObject, ObjectWriter, ResourceRef

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


# --- the controller, as an API client -----------------------------------------------------


class ProfileController:
    """Reacts to Profile events like Kubeflow's profile controller, through the API.

    :meth:`start` lists and watches Profiles (a :class:`WatchLoop`); a worker thread takes
    each event and creates what :func:`plan_profile` says, ``step_delay`` seconds before each
    step (namespace, each service account, each role binding), so watchers see the real
    controller's order with gaps in between. Deleting a Profile deletes the namespace it owns:
    on a real cluster the garbage collector would too (the ownerReference has
    ``controller: true``); the embedded sandbox has no garbage collector, and a delete that
    finds the namespace gone already is not an error.
    """

    def __init__(self, objects: ApiObjects, *, step_delay: float = 0.05) -> None:
        self._objects = objects
        self.step_delay = step_delay
        self._queue: queue.Queue[tuple[str, JSONObject, int] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._watch = WatchLoop(
            objects, PROFILES, self._enqueue, name="playground-profiles", stopping=self._stopping
        )
        self._worker = threading.Thread(
            target=self._run, name="playground-profile-controller", daemon=True
        )

    def start(self) -> ProfileController:
        self._worker.start()
        self._watch.start()
        return self

    def _enqueue(self, event_type: str, obj: JSONObject) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self._busy += 1
        self._queue.put((event_type, obj, 0))

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            event_type, profile, attempt = item
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
        try:
            current = self._objects.get_object(PROFILES, None, name)
        except KubeError:
            current = profile  # the API is briefly unreachable: keep the event
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
        meta = profile.get("metadata") or {}
        name = str(meta.get("name", ""))
        if meta.get("deletionTimestamp"):
            return
        if _terminating(self._objects.get_object(NAMESPACES, None, name)):
            # The namespace of an earlier Profile of this name is still being emptied: its
            # children look present but are about to go. Retry once it is gone.
            raise KubeError(f'namespace "{name}" is still terminating', status=409)
        for step in plan_profile(profile):
            ref, namespace, obj = step
            if self._objects.get_object(ref, namespace or None, obj["metadata"]["name"]):
                continue  # already there: no delay, no write (a MODIFIED re-reconcile)
            if self._stopping.wait(self.step_delay):
                return
            if apply_step(self._objects, step):
                log.info(
                    "profile %s: created %s %s/%s",
                    name,
                    ref.plural,
                    namespace,
                    obj["metadata"]["name"],
                )

    def _delete(self, profile: JSONObject) -> None:
        name = str((profile.get("metadata") or {}).get("name", ""))
        namespace = self._objects.get_object(NAMESPACES, None, name)
        if namespace is None or _terminating(namespace):
            return
        owners = (namespace.get("metadata") or {}).get("ownerReferences") or []
        uid = (profile.get("metadata") or {}).get("uid")
        # Only a namespace this profile owns goes with it (garbage collector semantics).
        if any(o.get("kind") == "Profile" and o.get("uid") == uid for o in owners):
            self._objects.delete_object(NAMESPACES, None, name)
            log.info("profile %s: deleted its namespace", name)

    def _converged(self) -> bool:
        for profile in self._objects.list_objects(PROFILES):
            if (profile.get("metadata") or {}).get("deletionTimestamp"):
                continue
            for ref, namespace, obj in plan_profile(profile):
                found = self._objects.get_object(ref, namespace or None, obj["metadata"]["name"])
                if found is None or _terminating(found):
                    return False
        return True

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no work is queued and the API shows every object in its end state."""
        return wait_converged(
            idle=self._idle,
            converged=self._converged,
            stopping=self._stopping,
            timeout=timeout,
            what="profile controller",
        )

    def _idle(self) -> bool:
        with self._lock:
            return self._busy == 0

    def stop(self, timeout: float = 2.0) -> None:
        """Stop watching and reacting; the worker ends after its current step."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout)
        self._watch.join(timeout)

    @property
    def running(self) -> bool:
        """Whether its watch or worker thread is alive right now."""
        return self._worker.is_alive() or self._watch.alive


def start_profile_controller(api: Kube, *, step_delay: float = 0.05) -> ProfileController:
    """The profile controller on ``api``, watching (its initial list handled) on return."""
    return ProfileController(ApiObjects(api), step_delay=step_delay).start()
