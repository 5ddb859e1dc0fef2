"""``vsphere-kale uninstall``: delete what install created, and only that.

What install created is its ApplySet (:mod:`.applyset`): the objects labelled
``applyset.kubernetes.io/part-of`` with this installation's id that also carry
``app.kubernetes.io/managed-by: vsphere-kale`` and were written by our field manager's
server-side apply -- the same test install's prune makes, so uninstall is a prune of
everything. The webhook configuration goes first, then the rest in reverse apply order, then
the ApplySet's parent, and the namespace last, only when install created it (annotation
:data:`~vsphere_kale.install.installer.CREATED_BY_ANNOTATION`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vsphere_kale.install import applyset, render
from vsphere_kale.install.installer import (
    CREATED_BY_ANNOTATION,
    CREATED_BY_INSTALL,
    FIELD_MANAGER,
    RESOURCES,
    Change,
    Installer,
    delete_object,
)
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.settings import Settings


def uninstall(
    kube: Kube,
    *,
    settings: Settings,
    rendered: Sequence[dict[str, Any]] = (),
    dry_run: bool = False,
    purge: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[Change]:
    """Delete what install created, newest dependencies first; see the module docstring.

    ``rendered`` is not needed any more (the cluster says what install applied) and is
    accepted for callers that still pass it. ``purge`` also deletes the reconciler's
    per-namespace RoleBindings.
    """
    del rendered
    installer = Installer(kube, dry_run=dry_run, echo=echo)
    ns = settings.namespace
    set_id = applyset.build_applyset_id(applyset.PARENT_NAME, ns)
    parent_key = render.ObjectKey("v1", applyset.PARENT_KIND, applyset.PARENT_NAME, ns)
    parent = installer.get(parent_key)
    applyset.check_parent(parent, ns)
    live = applyset.fetch_members(
        kube,
        set_id,
        resources=RESOURCES.values(),
        namespaces={ns} | applyset.recorded_namespaces(parent),
    )
    verdicts = applyset.decide_prune(live, applied=(), applyset_id=set_id, manager=FIELD_MANAGER)
    # The webhook configuration first: the API server stops calling us before the pods go
    # (with failurePolicy Ignore a call to a vanished webhook costs each PVC create a timeout).
    verdicts.sort(key=lambda v: render.kind_of(v.obj) != "MutatingWebhookConfiguration")
    changes: list[Change] = []
    for verdict in verdicts:
        key = render.ObjectKey.of(verdict.obj)
        if not verdict.prune:
            changes.append(installer.report(Change(key, "kept", verdict.why)))
            continue
        uid = str(render.meta(verdict.obj).get("uid") or "")
        changes.append(delete_object(installer, key, uid=uid))
    if purge:
        changes += _purge_bindings(installer, settings)
    if parent is not None:
        changes.append(delete_object(installer, parent_key))
    namespace_key = render.ObjectKey("v1", "Namespace", ns, None)
    live_ns = installer.get(namespace_key)
    if live_ns is not None:
        annotations = (live_ns.get("metadata") or {}).get("annotations") or {}
        if annotations.get(CREATED_BY_ANNOTATION) == CREATED_BY_INSTALL:
            changes.append(delete_object(installer, namespace_key))
        else:
            changes.append(
                installer.report(Change(namespace_key, "kept", "existed before install"))
            )
    return changes


def _purge_bindings(installer: Installer, settings: Settings) -> list[Change]:
    name = settings.pod_security.role_binding_name
    listing = installer.kube.list(
        r.ROLE_BINDING, label_selector=f"{render.MANAGED_BY_LABEL}={render.MANAGED_BY}"
    )
    changes = []
    for item in listing.get("items") or []:
        md = item.get("metadata") or {}
        if md.get("name") != name:
            continue
        key = render.ObjectKey(
            "rbac.authorization.k8s.io/v1", "RoleBinding", name, md.get("namespace")
        )
        changes.append(delete_object(installer, key))
    return changes
