"""What one installation applied, as a KEP-3659 ApplySet, and what install may prune from it.

``kubectl apply --prune --applyset`` (KEP-3659) records a set of applied objects with labels
and annotations only, and we do the same, so ``kubectl`` and other ApplySet-aware tools read
our installation the way they read their own:

- the **parent**, ConfigMap ``vsphere-kale-applyset`` in the install namespace, labelled
  ``applyset.kubernetes.io/id: applyset-<base64url(sha256("<name>.<namespace>.ConfigMap."))>-v1``
  and annotated with ``applyset.kubernetes.io/tooling: vsphere-kale/<version>`` and
  ``applyset.kubernetes.io/contains-group-kinds`` (the kinds of its members, sorted);
- every **member** (every object install applies, except the Namespace, which holds the parent
  and which install never deletes) labelled ``applyset.kubernetes.io/part-of: <id>``.

Pruning, as kubectl's: before applying, the parent's kinds become the union of the recorded
and the rendered ones (an install interrupted half-way still knows what to look for); after
applying, the members found by label selector that this install did not apply are deleted;
then the parent records exactly the kinds applied. Stricter than kubectl in three ways, because
an admin's hand-made object must never be lost to a label copied from ours:

* an object is pruned only if it *also* carries ``app.kubernetes.io/managed-by: vsphere-kale``
  and its ``managedFields`` hold a server-side **Apply** by our field manager (install wrote
  it; an object someone else created with our labels is kept, and the output says why);
* we look for members of every kind install can render (a static table), not only the kinds
  the parent lists, so a parent deleted by hand does not hide members;
* a delete carries the listed object's uid as a precondition: an object replaced in between is
  not ours any more and is kept.

Pure here (``build_*``/``decide_*``); the lists are :func:`fetch_members`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vsphere_kale import __version__
from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.install import render
from vsphere_kale.kube import Kube, Resource

PARENT_NAME = "vsphere-kale-applyset"
PARENT_KIND = "ConfigMap"
ID_LABEL = "applyset.kubernetes.io/id"
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
TOOLING_ANNOTATION = "applyset.kubernetes.io/tooling"
GROUP_KINDS_ANNOTATION = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES_ANNOTATION = "applyset.kubernetes.io/additional-namespaces"
TOOLING_NAME = "vsphere-kale"
TOOLING = f"{TOOLING_NAME}/{__version__}"

Obj = dict[str, Any]


def build_applyset_id(
    name: str, namespace: str, *, kind: str = PARENT_KIND, group: str = ""
) -> str:
    """KEP-3659's id: ``applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1``,
    unpadded (kubectl's ``ApplySet.ID``)."""
    digest = hashlib.sha256(".".join((name, namespace, kind, group)).encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def group_kind(api_version: str, kind: str) -> str:
    """``Deployment.apps``; ``ConfigMap`` for the core group (Go's ``GroupKind.String``)."""
    group = group_of(api_version)
    return f"{kind}.{group}" if group else kind


@dataclass(frozen=True, order=True)
class MemberKey:
    """An object regardless of the API version it was read at (MAP v1 and v1beta1 are one)."""

    group_kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> MemberKey:
        md = obj.get("metadata") or {}
        return cls(
            group_kind(str(obj.get("apiVersion", "")), render.kind_of(obj)),
            str(md.get("namespace") or ""),
            str(md.get("name") or ""),
        )


def is_member_kind(kind: str) -> bool:
    # The Namespace holds the parent, and may be an admin's (install leaves those alone):
    # never a member, never pruned. uninstall deletes it only when install created it.
    return kind != "Namespace"


def build_member(obj: Mapping[str, Any], applyset_id: str) -> Obj:
    """A copy of ``obj`` labelled as a member of the set (the Namespace unchanged)."""
    copied: Obj = json.loads(json.dumps(obj))
    if is_member_kind(render.kind_of(copied)):
        labels = copied.setdefault("metadata", {}).setdefault("labels", {})
        labels[PART_OF_LABEL] = applyset_id
    return copied


def build_parent(
    namespace: str, *, group_kinds: Iterable[str], additional_namespaces: Iterable[str] = ()
) -> Obj:
    annotations = {
        TOOLING_ANNOTATION: TOOLING,
        GROUP_KINDS_ANNOTATION: ",".join(sorted(set(group_kinds))),
    }
    # Written even when empty, as kubectl does.
    extra = sorted(set(additional_namespaces) - {namespace})
    annotations[NAMESPACES_ANNOTATION] = ",".join(extra)
    return {
        "apiVersion": "v1",
        "kind": PARENT_KIND,
        "metadata": {
            "name": PARENT_NAME,
            "namespace": namespace,
            "labels": {
                **render.COMMON_LABELS,
                ID_LABEL: build_applyset_id(PARENT_NAME, namespace),
            },
            "annotations": annotations,
        },
    }


def _csv(value: object) -> set[str]:
    return {part.strip() for part in str(value or "").split(",") if part.strip()}


def recorded_group_kinds(parent: Mapping[str, Any] | None) -> set[str]:
    annotations = ((parent or {}).get("metadata") or {}).get("annotations") or {}
    return _csv(annotations.get(GROUP_KINDS_ANNOTATION))


def recorded_namespaces(parent: Mapping[str, Any] | None) -> set[str]:
    annotations = ((parent or {}).get("metadata") or {}).get("annotations") or {}
    return _csv(annotations.get(NAMESPACES_ANNOTATION))


def check_parent(parent: Mapping[str, Any] | None, namespace: str) -> None:
    """Refuse to take over an ApplySet parent another tool manages (kubectl does the same)."""
    if parent is None:
        return
    md = parent.get("metadata") or {}
    tooling = str((md.get("annotations") or {}).get(TOOLING_ANNOTATION) or "")
    labels = md.get("labels") or {}
    ours = tooling.split("/", 1)[0] == TOOLING_NAME
    if not ours or labels.get(ID_LABEL) != build_applyset_id(PARENT_NAME, namespace):
        raise VsphereKaleError(
            f"configmap {namespace}/{PARENT_NAME} exists but is not vsphere-kale's ApplySet "
            f"parent (tooling {tooling or 'unset'!r}); rename or delete it, then install again"
        )


def applied_by(obj: Mapping[str, Any], manager: str) -> bool:
    """Did ``manager`` write ``obj`` by server-side apply (its managedFields say so)?"""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return any(
        isinstance(e, dict) and e.get("manager") == manager and e.get("operation") == "Apply"
        for e in entries
    )


@dataclass(frozen=True)
class PruneVerdict:
    obj: Obj
    prune: bool
    why: str


def decide_prune(
    live: Iterable[Obj],
    *,
    applied: Iterable[MemberKey],
    applyset_id: str,
    manager: str,
    keep: Mapping[MemberKey, str] | None = None,
) -> list[PruneVerdict]:
    """For each listed member this install did not apply: prune it, or keep it and say why.
    In the order they should go (reverse apply order: dependents first)."""
    done = set(applied)
    verdicts = []
    for obj in render.sort_for_apply(live)[::-1]:
        key = MemberKey.of(obj)
        md = obj.get("metadata") or {}
        labels = md.get("labels") or {}
        if key in done or labels.get(PART_OF_LABEL) != applyset_id:
            continue
        if not is_member_kind(render.kind_of(obj)) or labels.get(ID_LABEL):
            verdicts.append(PruneVerdict(obj, False, "never pruned"))
        elif keep and key in keep:
            verdicts.append(PruneVerdict(obj, False, keep[key]))
        elif labels.get(render.MANAGED_BY_LABEL) != render.MANAGED_BY:
            verdicts.append(PruneVerdict(obj, False, f"not labelled {render.MANAGED_BY_LABEL}"))
        elif not applied_by(obj, manager):
            verdicts.append(PruneVerdict(obj, False, f"not applied by {manager}"))
        else:
            verdicts.append(PruneVerdict(obj, True, "no longer rendered"))
    return verdicts


def fetch_members(
    kube: Kube, applyset_id: str, *, resources: Iterable[Resource], namespaces: Iterable[str]
) -> list[Obj]:
    """Every object labelled a member of the set, of each kind install can render that the
    API serves (the first served version of each group and kind), in ``namespaces`` for
    namespaced kinds. The installer's (admin's) credentials: list on each kind."""
    discovery = kube.discovery()
    selector = f"{PART_OF_LABEL}={applyset_id}"
    found: list[Obj] = []
    by_kind: dict[tuple[str, str], list[Resource]] = {}
    for res in resources:
        if is_member_kind(res.kind):
            by_kind.setdefault((res.group, res.kind), []).append(res)
    for candidates in by_kind.values():
        served = next((c for c in candidates if discovery.serves(c)), None)
        if served is None:
            continue
        scopes: list[str | None] = [*sorted(set(namespaces))] if served.namespaced else [None]
        for namespace in scopes:
            listing = kube.list(served, namespace=namespace, label_selector=selector)
            for item in listing.get("items") or []:
                item.setdefault("apiVersion", served.api_version)
                item.setdefault("kind", served.kind)
                found.append(item)
    return found
