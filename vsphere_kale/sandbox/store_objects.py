"""The sandbox store's values and defaults: deep copies, watch events and watchers, the
metadata helpers, and the defaults kube-apiserver fills in on create and update.

Every name is importable from :mod:`vsphere_kale.sandbox.store` as well.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar, cast

from vsphere_kale.sandbox.resources import (
    ResourceType,
    StatusError,
)
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

T = TypeVar("T")

NAMESPACES = ResourceRef("", "namespaces")
SECRETS = ResourceRef("", "secrets")
SERVICES = ResourceRef("", "services")
#: The finalizer kube-apiserver puts in every namespace's spec; the namespace controller
#: removes it once the namespace is empty.
NAMESPACE_FINALIZER = "kubernetes"
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as k8s.io/apiserver's names.SimpleNameGenerator

Listener = Callable[[str, ResourceRef, JSONObject], None]


def clone(obj: T) -> T:
    """Deep copy of JSON data (a JSON round trip is faster than copy.deepcopy)."""
    return cast(T, json.loads(json.dumps(obj)))


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One committed change. ``obj`` is shared: never mutate it."""

    rv: int
    ref: ResourceRef
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    obj: JSONObject
    prev: JSONObject | None = None
    """The object before this change (None for ADDED); watches with selectors need it."""


class Watcher:
    """A registered watch on one storage; ``deliver`` is called under the store lock.

    ``deliver`` must not block and must not call back into the store (the server's watcher
    hands events to its IOLoop with ``call_soon_threadsafe``).
    """

    def __init__(self, ref: ResourceRef, deliver: Callable[[WatchEvent], None]) -> None:
        self.ref = ref
        self.deliver = deliver


def ensure_meta(obj: JSONObject) -> JSONObject:
    """An object's metadata for writing: created when absent, 400 when not an object."""
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise StatusError(400, "BadRequest", "metadata must be an object")
    return meta


#: ObjectMeta fields Go serializes with ``omitempty``: an empty one is as good as absent.
_OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")


def normalize_meta(meta: JSONObject) -> None:
    """Drop empty maps and lists kube-apiserver would not store (Go's omitempty), so a
    patch that leaves ``annotations: {}`` behind reads back as it would from a cluster."""
    for key in _OMIT_EMPTY_META:
        if key in meta and meta[key] in ({}, [], None):
            del meta[key]


def generation_content(obj: JSONObject) -> JSONObject:
    """Everything generation tracks: the object without metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def apply_create_defaults(rt: ResourceType, obj: JSONObject) -> None:
    """The few defaults kube-apiserver fills in that our users look at."""
    if rt.ref == NAMESPACES:
        meta = obj["metadata"]
        # Since Kubernetes 1.21 every namespace carries its name as a label, which is what
        # webhook namespaceSelectors usually match on.
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", [NAMESPACE_FINALIZER])
        obj.setdefault("status", {})["phase"] = "Active"
    elif rt.ref == ResourceRef("", "persistentvolumeclaims"):
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        if isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("volumeMode", "Filesystem")
    elif rt.ref == ResourceRef("", "persistentvolumes"):
        obj.setdefault("status", {}).setdefault("phase", "Available")
    apply_update_defaults(rt, obj, None)


def apply_update_defaults(rt: ResourceType, obj: JSONObject, current: JSONObject | None) -> None:
    """Defaults kube applies on every write: Secret ``stringData`` folds into ``data``;
    a Service keeps (or gets) its cluster IP, type and port defaults."""
    if rt.ref == SECRETS and isinstance(obj.get("stringData"), dict):
        data: JSONObject = obj["data"] if isinstance(obj.get("data"), dict) else {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode("ascii")
        obj["data"] = dict(sorted(data.items()))  # a Go map: served sorted by key
    elif rt.ref == SERVICES and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("type", "ClusterIP")
        old_ip = ((current or {}).get("spec") or {}).get("clusterIP")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_ip or _cluster_ip(str(obj["metadata"].get("uid", "")))
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))


def _cluster_ip(seed: str) -> str:
    """A stable address in 10.96.0.0/12 (kube's default service range) for a Service uid."""
    digest = int(uuid.UUID(seed).hex[:8], 16) if seed else secrets.randbits(32)
    return f"10.{96 + (digest >> 16) % 16}.{(digest >> 8) % 256}.{1 + digest % 254}"
