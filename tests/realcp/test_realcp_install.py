"""``install`` as server-side apply (field manager ``vsphere-kale``), judged by kube-apiserver.

What an admin relies on when re-running install on a cluster they have touched:
- an edit of a field install renders (``kubectl scale``) is a conflict the API server names;
  install takes the field back and says whose it was;
- what they added beside our fields (an env var in our container, a label) survives, where
  a merge patch replaced the whole container list;
- a field an older install applied and this one no longer renders is removed (upgrades);
- a re-run with nothing to do leaves every object's resourceVersion alone (``unchanged``);
- uninstall leaves none of our objects;
- the namespace guard is there by default and goes when ``podSecurity.namespaceGuard`` says
  ``never``.
"""

from __future__ import annotations

from pathlib import Path

from install_helpers import install_outcomes
from kubernetes import client
from realcp_helpers import NFS_CLASS, cli, kubectl, wait_namespace_gone

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.install import namespace_guard
from vsphere_kale.install.installer import FIELD_MANAGER
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r

NS = "vsphere-kale"


def test_reinstall_after_admin_edits_takes_back_our_fields_keeps_theirs_and_prunes(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    storage_classes: tuple[str, str],
) -> None:
    cp = real_control_plane
    kubeconfig = str(cp.kubeconfig_path)
    apps = client.AppsV1Api(admin_api)
    core = client.CoreV1Api(admin_api)
    first = cli("install", "--kubeconfig", kubeconfig, "--rwx-storage-class", NFS_CLASS)
    assert first.returncode == 0, first.stderr
    try:
        # Nothing to do: the same install again writes nothing.
        versions = {
            "deployment": apps.read_namespaced_deployment(NS, NS).metadata.resource_version,
            "configmap": core.read_namespaced_config_map(
                "vsphere-kale-config", NS
            ).metadata.resource_version,
        }
        again = cli("install", "--kubeconfig", kubeconfig)
        assert again.returncode == 0, again.stderr
        assert set(install_outcomes(again.stdout).values()) == {"unchanged"}, again.stdout
        assert (
            apps.read_namespaced_deployment(NS, NS).metadata.resource_version
            == (versions["deployment"])
        )
        # Given: an admin scales our Deployment, adds an env var to our container and a
        # label; and an older install had applied an annotation this one no longer renders.
        assert (
            kubectl(cp, "-n", NS, "scale", "deployment/vsphere-kale", "--replicas=5").returncode
            == 0
        )
        added = kubectl(
            cp, "-n", NS, "set", "env", "deployment/vsphere-kale", "HTTPS_PROXY=http://proxy:3128"
        )
        assert added.returncode == 0, added.stderr
        assert (
            kubectl(cp, "-n", NS, "label", "deployment/vsphere-kale", "team=platform").returncode
            == 0
        )
        # (The older install: our manager's last apply of the ConfigMap had an annotation.)
        live = Kube(admin_api).get(r.CONFIG_MAP, "vsphere-kale-config", namespace=NS)
        older = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "vsphere-kale-config",
                "namespace": NS,
                "labels": live["metadata"]["labels"],
                "annotations": {"vsphere-kale.io/rendered-by": "an older version"},
            },
            "data": live["data"],
        }
        Kube(admin_api).apply(r.CONFIG_MAP, older, field_manager=FIELD_MANAGER, force=True)

        # When: install runs again.
        third = cli("install", "--kubeconfig", kubeconfig)

        # Then: the API server named the conflict and install says what it took back...
        assert third.returncode == 0, third.stderr
        line = install_outcomes(third.stdout)["deployment.apps/vsphere-kale"]
        assert line.startswith("configured (took over .spec.replicas from "), line
        assert '"kubectl' in line, line  # kubectl scale's manager, as the API server names it
        deployment = apps.read_namespaced_deployment(NS, NS)
        assert deployment.spec.replicas == 2
        # ...kept what the admin added beside our fields...
        # (kubectl set env sets it in both containers: serve and webhook)
        containers = deployment.spec.template.spec.containers
        assert [c.name for c in containers] == ["vsphere-kale", "webhook"]
        for container in containers:
            env = {e.name: e.value for e in container.env or []}
            assert env["HTTPS_PROXY"] == "http://proxy:3128", container.name
        assert deployment.metadata.labels["team"] == "platform"
        managers = {m.manager for m in deployment.metadata.managed_fields}
        assert FIELD_MANAGER in managers
        # ...and removed what an older install applied and this one does not render.
        assert install_outcomes(third.stdout)["configmap/vsphere-kale-config"] == "configured"
        config_map = core.read_namespaced_config_map("vsphere-kale-config", NS)
        assert "vsphere-kale.io/rendered-by" not in (config_map.metadata.annotations or {})
    finally:
        gone = cli("uninstall", "--kubeconfig", kubeconfig)
        assert gone.returncode == 0, gone.stderr
        wait_namespace_gone(admin_api, NS)
    # Uninstall left none of our cluster-scoped objects either.
    rbac = client.RbacAuthorizationV1Api(admin_api)
    hooks = client.AdmissionregistrationV1Api(admin_api)
    ours = "app.kubernetes.io/managed-by=vsphere-kale"
    assert rbac.list_cluster_role(label_selector=ours).items == []
    assert rbac.list_cluster_role_binding(label_selector=ours).items == []
    assert hooks.list_mutating_webhook_configuration(label_selector=ours).items == []
    assert hooks.list_validating_admission_policy(label_selector=ours).items == []
    assert hooks.list_validating_admission_policy_binding(label_selector=ours).items == []


def test_the_namespace_guard_follows_its_setting(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    storage_classes: tuple[str, str],
    tmp_path: Path,
) -> None:
    """``auto`` installs it on kube-apiserver 1.36; ``never`` prunes it on the next install."""
    kubeconfig = str(real_control_plane.kubeconfig_path)
    policies = client.AdmissionregistrationV1Api(admin_api)
    first = cli("install", "--kubeconfig", kubeconfig, "--rwx-storage-class", NFS_CLASS)
    assert first.returncode == 0, first.stderr
    try:
        outcomes = install_outcomes(first.stdout)
        policy = f"validatingadmissionpolicy.admissionregistration.k8s.io/{namespace_guard.NAME}"
        binding = policy.replace("policy.", "policybinding.", 1)
        assert outcomes[policy] == outcomes[binding] == "created", first.stdout
        config = tmp_path / "config.yaml"
        config.write_text(
            f"storage:\n  rwxStorageClass: {NFS_CLASS}\npodSecurity:\n  namespaceGuard: never\n",
            encoding="utf-8",
        )
        off = cli("install", "--kubeconfig", kubeconfig, "--config", str(config))
        assert off.returncode == 0, off.stderr
        outcomes = install_outcomes(off.stdout)
        for key in (policy, binding):
            assert outcomes[key].startswith("deleted (pruned"), off.stdout
        ours = "app.kubernetes.io/managed-by=vsphere-kale"
        names = [
            p.metadata.name
            for p in policies.list_validating_admission_policy(label_selector=ours).items
        ]
        assert namespace_guard.NAME not in names
    finally:
        gone = cli("uninstall", "--kubeconfig", kubeconfig)
        assert gone.returncode == 0, gone.stderr
        wait_namespace_gone(admin_api, NS)
