"""doctor's list of needed permissions is exactly what the rendered manifests grant.

If a rule is added to deploy/ without the code needing it (doctor would not check it), or the
code starts needing one the manifests lack (doctor would flag every installation), this fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from vsphere_kale.install import doctor, render
from vsphere_kale.settings import PodSecuritySettings, Settings, StorageSettings

Key = tuple[str, str, str, str | None, str | None]


def granted(objects: list[dict[str, Any]], namespace: str) -> set[Key]:
    out: set[Key] = set()
    for obj in objects:
        if obj["metadata"]["name"] != "vsphere-kale" or obj["kind"] not in ("ClusterRole", "Role"):
            continue
        where = namespace if obj["kind"] == "Role" else None
        for rule in obj["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            out.add((verb, group, resource, where, name))
    return out


@pytest.mark.parametrize("components", [(), ("psp",), ("cert-manager",), ("kubeflow-only",)])
def test_required_access_equals_the_rendered_rbac(components: tuple[str, ...]) -> None:
    settings = Settings(
        storage=StorageSettings(rwx_storage_class="nfs-client"),
        pod_security=PodSecuritySettings(psp_cluster_role="psp:vmware-system-restricted"),
        namespace="kale-system",
    )
    objects = render.build_manifests(render.fetch_rendered(components), settings=settings)
    needed = doctor.build_required_access(
        doctor.fetch_required_roles(settings, cert_manager="cert-manager" in components)
    )
    assert {(a.verb, a.group, a.resource, a.namespace, a.name) for a in needed} == granted(
        objects, "kale-system"
    )
    assert all(a.why for a in needed)
