"""``vsphere-kale uninstall``: delete what install created, and only that.

Only objects that carry ``app.kubernetes.io/managed-by: vsphere-kale`` *and* have one of the
names install renders, in reverse apply order; the namespace only when install created it
(annotation :data:`~vsphere_kale.install.installer.CREATED_BY_ANNOTATION`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vsphere_kale.install import admission_policy, render
from vsphere_kale.install.installer import (
    CREATED_BY_ANNOTATION,
    CREATED_BY_INSTALL,
    Change,
    Installer,
    delete_object,
    fetch_served,
    is_managed,
)
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.settings import Settings


def uninstall(
    kube: Kube,
    *,
    settings: Settings,
    rendered: Sequence[dict[str, Any]],
    dry_run: bool = False,
    purge: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[Change]:
    """Delete what install created, newest dependencies first; see the module docstring.

    ``rendered`` should be the base with every component, so every name install could have
    created is known. ``purge`` also deletes the reconciler's per-namespace RoleBindings.
    """
    installer = Installer(kube, dry_run=dry_run, echo=echo)
    ns = settings.namespace
    objects = render.build_manifests(rendered, settings=settings)
    objects.append(render.build_tls_secret(ns, {}))
    objects += admission_policy.build_policy_stubs()  # either --admission mode
    changes: list[Change] = []
    served: dict[str, bool] = {}
    namespace_obj: dict[str, Any] | None = None
    # The webhook configuration first: the API server stops calling us before the pods go
    # (with failurePolicy Ignore a call to a vanished webhook costs each PVC create a timeout).
    ordered = sorted(
        reversed(render.sort_for_apply(objects)),
        key=lambda o: render.kind_of(o) != "MutatingWebhookConfiguration",
    )
    for obj in ordered:
        key = render.ObjectKey.of(obj)
        if key.kind == "Namespace":
            namespace_obj = obj
            continue
        if key.api_version not in served:
            served[key.api_version] = fetch_served(kube, key.api_version)
        if not served[key.api_version]:
            continue
        live = installer.get(key)
        if live is None:
            continue
        if not is_managed(live):
            changes.append(installer.report(Change(key, "kept", "not labelled managed-by")))
            continue
        changes.append(delete_object(installer, key))
    if purge:
        changes += _purge_bindings(installer, settings)
    if namespace_obj is not None:
        key = render.ObjectKey.of(namespace_obj)
        live = installer.get(key)
        if live is not None:
            annotations = (live.get("metadata") or {}).get("annotations") or {}
            if annotations.get(CREATED_BY_ANNOTATION) == CREATED_BY_INSTALL:
                changes.append(delete_object(installer, key))
            else:
                changes.append(installer.report(Change(key, "kept", "existed before install")))
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
