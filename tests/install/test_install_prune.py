"""Install prunes what it no longer renders, and only what it applied; uninstall removes exactly
that set. Against the sandbox, with real kubectl for the KEP-3659 ApplySet it shares.

The installation is an ApplySet (vsphere_kale/install/applyset.py): parent ConfigMap
``vsphere-kale-applyset``, members labelled ``applyset.kubernetes.io/part-of``. Mode switches
of ``--admission`` need a MutatingAdmissionPolicy, which the sandbox does not serve: that switch
is tests/realcp/test_admission_policy_install.py::test_switching_modes_removes_the_other_mode,
on kube-apiserver; here the component set changes (``--overlay psp`` dropped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner
from install_helpers import install_outcomes

from vsphere_kale.cli import main
from vsphere_kale.install import applyset, render
from vsphere_kale.install.installer import RESOURCES
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.sandbox.testing import RunningSandbox

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NS = "vsphere-kale"
SET_ID = applyset.build_applyset_id(applyset.PARENT_NAME, NS)
OURS = {render.MANAGED_BY_LABEL: render.MANAGED_BY, applyset.PART_OF_LABEL: SET_ID}
PSP_OBJECTS = (
    "podsecuritypolicy.policy/vsphere-kale-restricted",
    "clusterrole.rbac.authorization.k8s.io/psp:vsphere-kale-restricted",
    "rolebinding.rbac.authorization.k8s.io/psp:vsphere-kale-restricted",
)


def cli(running: RunningSandbox, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        [*args, "--kubeconfig", str(running.kubeconfig_path)],
        env={"VSPHERE_KALE_CONFIG": ""},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, result.stdout


def configmap(name: str, namespace: str, *, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"note": name},
    }


def exists(kube: Kube, resource: r.Resource, *, name: str, namespace: str | None = None) -> bool:
    return kube.get_optional(resource, name, namespace=namespace) is not None


def kubectl_apply_with_applyset(running: RunningSandbox) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --prune --applyset=configmaps/vsphere-kale-applyset`` of one ConfigMap
    (KEP-3659 is alpha in kubectl 1.32: behind ``KUBECTL_APPLYSET=true``)."""
    return subprocess.run(
        [
            *(KUBECTL, "--kubeconfig", str(running.kubeconfig_path), "apply", "-n", NS),
            *("--prune", f"--applyset=configmaps/{applyset.PARENT_NAME}", "--server-side"),
            *("-f", "-"),
        ],
        input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECTL_APPLYSET": "true"},
        check=False,
    )


def test_our_applyset_id_is_the_one_kubectl_computes(sandbox: RunningSandbox) -> None:
    # kubectl (KEP-3659, alpha behind KUBECTL_APPLYSET) makes a ConfigMap parent of the same
    # name; its id label must be ours, so ApplySet-aware tools see one and the same set.
    kube = Kube(sandbox.api_client())
    kube.create(r.NAMESPACE, {"metadata": {"name": NS}})
    done = kubectl_apply_with_applyset(sandbox)
    assert done.returncode == 0, done.stderr
    parent = kube.get(r.CONFIG_MAP, applyset.PARENT_NAME, namespace=NS)
    assert parent["metadata"]["labels"][applyset.ID_LABEL] == SET_ID
    member = kube.get(r.CONFIG_MAP, "probe", namespace=NS)
    assert member["metadata"]["labels"][applyset.PART_OF_LABEL] == SET_ID
    # And install refuses to take over a parent kubectl manages, in one sentence.
    result = CliRunner().invoke(
        main,
        [
            "install",
            "--rwx-storage-class",
            "nfs-client",
            "--kubeconfig",
            str(sandbox.kubeconfig_path),
        ],
        env={"VSPHERE_KALE_CONFIG": ""},
    )
    assert result.exit_code != 0
    assert "is not vsphere-kale's ApplySet parent (tooling 'kubectl/" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert exists(kube, r.CONFIG_MAP, name="probe", namespace=NS)


def test_kubectl_sees_our_applyset_and_will_not_prune_it_as_its_own(
    sandbox: RunningSandbox,
) -> None:
    assert cli(sandbox, "install", "--rwx-storage-class", "nfs-client")[0] == 0
    done = kubectl_apply_with_applyset(sandbox)
    assert done.returncode != 0
    assert 'managed by tooling "vsphere-kale" instead of "kubectl"' in done.stderr, done.stderr
    assert exists(Kube(sandbox.api_client()), r.DEPLOYMENT, name=NS, namespace=NS)


def test_a_dropped_component_is_previewed_then_pruned(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psp")
    kube = Kube(running.api_client())
    code, out = cli(running, "install", "--rwx-storage-class", "nfs-client", "--overlay", "psp")
    assert code == 0, out
    parent = kube.get(r.CONFIG_MAP, applyset.PARENT_NAME, namespace=NS)
    assert "PodSecurityPolicy.policy" in applyset.recorded_group_kinds(parent)

    # When: the admin previews an install without the psp component
    code, out = cli(running, "install", "--dry-run")
    # Then: the three objects only that component rendered would go, and are still there
    assert code == 0, out
    preview = install_outcomes(out)
    for name in PSP_OBJECTS:
        assert preview[name] == "deleted (server dry run) (pruned: no longer rendered)", out
    assert exists(kube, r.POD_SECURITY_POLICY, name="vsphere-kale-restricted")

    # When: it installs so
    code, out = cli(running, "install")
    # Then: they are pruned, and said so; everything else is unchanged
    assert code == 0, out
    done = install_outcomes(out)
    assert {k: v for k, v in done.items() if v != "unchanged"} == {
        name: "deleted (pruned: no longer rendered)" for name in PSP_OBJECTS
    }, out
    assert not exists(kube, r.POD_SECURITY_POLICY, name="vsphere-kale-restricted")
    assert not exists(kube, r.CLUSTER_ROLE, name="psp:vsphere-kale-restricted")
    assert not exists(kube, r.ROLE_BINDING, name="psp:vsphere-kale-restricted", namespace=NS)
    # And the parent no longer names the kind; a second run finds nothing to prune.
    parent = kube.get(r.CONFIG_MAP, applyset.PARENT_NAME, namespace=NS)
    assert "PodSecurityPolicy.policy" not in applyset.recorded_group_kinds(parent)
    code, out = cli(running, "install")
    assert code == 0 and set(install_outcomes(out).values()) == {"unchanged"}, out
    # No orphan: the set's members are exactly what this install printed, bar the Namespace
    # and the parent (neither is a member).
    members = applyset.fetch_members(kube, SET_ID, resources=RESOURCES.values(), namespaces={NS})
    printed = set(install_outcomes(out)) - {f"namespace/{NS}", f"configmap/{applyset.PARENT_NAME}"}
    assert {render.ObjectKey.of(m).describe() for m in members} == printed


def test_only_what_install_applied_is_pruned_and_uninstall_removes_exactly_that(
    sandbox: RunningSandbox,
) -> None:
    kube = Kube(sandbox.api_client())
    kept = ("vsphere-kale-gitops", "vsphere-kale-notes")
    # Given: the team's own namespace (install must not delete it), and vsphere-kale in it
    kube.create(r.NAMESPACE, {"metadata": {"name": "platform"}})
    ns = "platform"
    set_id = applyset.build_applyset_id(applyset.PARENT_NAME, ns)
    ours = {render.MANAGED_BY_LABEL: render.MANAGED_BY, applyset.PART_OF_LABEL: set_id}
    assert cli(sandbox, "install", "--rwx-storage-class", "nfs-client", "--namespace", ns)[0] == 0
    # An object an older version applied and this one no longer renders:
    kube.apply(
        r.CONFIG_MAP,
        configmap("vsphere-kale-legacy", ns, labels=ours),
        namespace=ns,
        field_manager="vsphere-kale",
    )
    # Our labels copied onto an admin's object (created, not applied by us):
    kube.create(r.CONFIG_MAP, configmap("vsphere-kale-notes", ns, labels=ours), namespace=ns)
    # ... and onto another tool's (server-side applied by another manager):
    kube.apply(
        r.CONFIG_MAP,
        configmap("vsphere-kale-gitops", ns, labels=ours),
        namespace=ns,
        field_manager="argocd-controller",
    )
    # A similar name with our managed-by label but outside the set, namespaced and not:
    kube.create(
        r.CONFIG_MAP,
        configmap(
            "vsphere-kale-config-old", ns, labels={render.MANAGED_BY_LABEL: render.MANAGED_BY}
        ),
        namespace=ns,
    )
    kube.create(
        r.CLUSTER_ROLE,
        {
            "metadata": {
                "name": "vsphere-kale-extra",
                "labels": {render.MANAGED_BY_LABEL: render.MANAGED_BY},
            },
            "rules": [],
        },
    )

    # When: install runs again
    code, out = cli(sandbox, "install", "--namespace", ns)

    # Then: only the object we applied is pruned; the others are kept and the output says why
    assert code == 0, out
    said = install_outcomes(out)
    assert said["configmap/vsphere-kale-legacy"] == "deleted (pruned: no longer rendered)"
    assert said["configmap/vsphere-kale-notes"] == "kept (not applied by vsphere-kale)"
    assert said["configmap/vsphere-kale-gitops"] == "kept (not applied by vsphere-kale)"
    assert "configmap/vsphere-kale-config-old" not in said
    assert "clusterrole.rbac.authorization.k8s.io/vsphere-kale-extra" not in said
    assert not exists(kube, r.CONFIG_MAP, name="vsphere-kale-legacy", namespace=ns)
    for name in ("vsphere-kale-notes", "vsphere-kale-gitops", "vsphere-kale-config-old"):
        assert exists(kube, r.CONFIG_MAP, name=name, namespace=ns), name

    # When: uninstall
    code, out = cli(sandbox, "uninstall", "--namespace", ns)

    # Then: every object install applied is gone, the parent last, and nothing else
    assert code == 0, out
    gone = install_outcomes(out)
    assert gone.pop("namespace/platform") == "kept (existed before install)"
    assert gone.pop("configmap/vsphere-kale-notes") == "kept (not applied by vsphere-kale)"
    assert gone.pop("configmap/vsphere-kale-gitops") == "kept (not applied by vsphere-kale)"
    assert set(gone.values()) == {"deleted"}, out
    assert list(gone)[-1] == f"configmap/{applyset.PARENT_NAME}"
    left = applyset.fetch_members(kube, set_id, resources=RESOURCES.values(), namespaces={ns})
    assert sorted(m["metadata"]["name"] for m in left) == list(kept)
    for name in (*kept, "vsphere-kale-config-old"):
        assert exists(kube, r.CONFIG_MAP, name=name, namespace=ns), name
    assert exists(kube, r.CLUSTER_ROLE, name="vsphere-kale-extra")
    for resource, name, where in (
        (r.DEPLOYMENT, "vsphere-kale", ns),
        (r.CLUSTER_ROLE, "vsphere-kale", None),
        (r.MUTATING_WEBHOOK_CONFIGURATION, "vsphere-kale", None),
        (r.SECRET, render.TLS_SECRET, ns),
        (r.CONFIG_MAP, applyset.PARENT_NAME, ns),
    ):
        assert not exists(kube, resource, name=name, namespace=where), name


def test_an_object_our_manager_only_updated_is_not_pruned() -> None:
    # Pruning needs our server-side Apply in managedFields, not just any write of ours.
    stale = configmap("x", NS, labels=OURS)
    stale["metadata"]["managedFields"] = [{"manager": "vsphere-kale", "operation": "Update"}]
    (verdict,) = applyset.decide_prune(
        [stale], applied=(), applyset_id=SET_ID, manager="vsphere-kale"
    )
    assert not verdict.prune and verdict.why == "not applied by vsphere-kale"
