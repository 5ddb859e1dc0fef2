"""``vsphere-kale install --admission policy`` on the real kube-apiserver 1.36: no webhook on
the path, claims rewritten by the API server itself, doctor names the mode, uninstall cleans,
and a second install after an uninstall rewrites again (the paramKind defect of 1.36.3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from admission_policy_helpers import (
    BLOCK,
    WARNING_PREFIX,
    create_claim,
    rwx_claim,
    unique,
    wait_until_policy_active,
)
from kubernetes import client
from realcp_helpers import NFS_CLASS, cli, wait_for

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.install import admission_policy
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.storage import ORIGINAL_CLASS_ANNOTATION

POLICY_KINDS = (
    r.MUTATING_ADMISSION_POLICY,
    r.MUTATING_ADMISSION_POLICY_BINDING,
    r.VALIDATING_ADMISSION_POLICY,
    r.VALIDATING_ADMISSION_POLICY_BINDING,
)


@dataclass(frozen=True)
class Cluster:
    kube: Kube
    kubeconfig: str
    namespace: str
    """Where vsphere-kale is installed."""
    team: str
    """An ordinary namespace whose claims are rewritten."""

    def cli(self, *args: str) -> str:
        done = cli(*args, "--kubeconfig", self.kubeconfig, "--namespace", self.namespace)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _install(cluster: Cluster) -> str:
    return cluster.cli("install", "--admission", "policy", "--rwx-storage-class", NFS_CLASS)


@pytest.fixture(scope="module")
def cluster(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    storage_classes: tuple[str, str],
) -> Iterator[Cluster]:
    kube = Kube(admin_api)
    team = unique("team")
    kube.create(r.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team}})
    made = Cluster(kube, str(real_control_plane.kubeconfig_path), unique("kale-pol"), team)
    _install(made)
    try:
        yield made
    finally:
        made.cli("uninstall")
        kube.delete(r.NAMESPACE, team)


def test_install_policy_puts_the_policies_in_place_of_the_webhook(cluster: Cluster) -> None:
    kube = cluster.kube
    assert kube.get_optional(r.MUTATING_WEBHOOK_CONFIGURATION, "vsphere-kale") is None
    # discovery chose v1 on 1.36
    policy = kube.get(r.MUTATING_ADMISSION_POLICY, admission_policy.MUTATING_POLICY)
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    # the settings are in the policy itself: no parameters object to resolve
    assert "paramKind" not in policy["spec"]
    assert f'value: "{NFS_CLASS}"' in policy["spec"]["mutations"][0]["jsonPatch"]["expression"]
    # serve runs without the webhook route, and the webhook container is gone
    deployment = kube.get(r.DEPLOYMENT, "vsphere-kale", namespace=cluster.namespace)
    (serve,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--no-webhook" in serve["args"]


def test_a_second_install_is_unchanged(cluster: Cluster) -> None:
    lines = _install(cluster).splitlines()
    assert lines and all(
        line.endswith(("unchanged", "(existed before install; left as is)")) for line in lines
    ), lines


def test_claims_are_rewritten_with_the_webhook_s_warning_and_doctor_says_policy(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    wait_until_policy_active(kube, cluster.team, NFS_CLASS)
    stored, warnings = create_claim(kube, cluster.team, rwx_claim(BLOCK))
    assert stored["spec"]["storageClassName"] == NFS_CLASS
    assert stored["metadata"]["annotations"] == {ORIGINAL_CLASS_ANNOTATION: BLOCK}
    assert warnings == [
        WARNING_PREFIX + f"storageClassName rewritten from {BLOCK} to {NFS_CLASS} "
        "(ReadWriteMany needs an RWX-capable class)"
    ]
    # claims in our own namespace are never touched
    own, _ = create_claim(kube, cluster.namespace, rwx_claim(BLOCK))
    assert own["spec"]["storageClassName"] == BLOCK
    done = cli(
        "doctor", "--kubeconfig", cluster.kubeconfig, "--namespace", cluster.namespace, "-o", "json"
    )
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["admission"]["status"] == "ok", checks["admission"]
    assert checks["admission"]["message"].startswith("admission by policy: ")
    assert "webhook-configuration" not in checks


def test_the_status_the_panel_shows_names_the_policy_mode(cluster: Cluster) -> None:
    """With no webhook configuration at all, the health status is not "missing": it reads our
    MutatingAdmissionPolicy (found through the real server's discovery) and says so."""
    from vsphere_kale.health.status import collect_status
    from vsphere_kale.settings import settings_from_mapping

    settings = settings_from_mapping({"storage": {"rwxStorageClass": NFS_CLASS}})
    status = collect_status(
        cluster.kube,
        cluster.team,
        settings=settings,
        mode="off",
        can_reconcile=False,
        source="service",
    )
    webhook = status["webhook"]
    assert webhook["admission"] == "policy", webhook
    assert webhook["verdict"] == "ok" and webhook["severity"] is None, webhook
    assert webhook["caBundleNotAfter"] is None
    assert f"places ReadWriteMany claims on {NFS_CLASS}" in webhook["message"]
    assert not [p for p in status["problems"] if p["kind"] == "webhook"], status["problems"]


def _policy_gets(api: client.ApiClient) -> float:
    """GETs of mutatingadmissionpolicies kube-apiserver has served (its own request counter,
    ``apiserver_request_total``): the requests counted where they arrive."""
    request = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request)
    response.read()
    total = 0.0
    for line in response.data.decode().splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="mutatingadmissionpolicies"' in line
            and 'verb="GET"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_status_reads_the_policy_only_when_there_is_no_webhook_configuration(
    cluster: Cluster, admin_api: client.ApiClient
) -> None:
    """A status call in webhook mode (a webhook configuration exists) costs no read of the
    MutatingAdmissionPolicy; in policy mode (none exists) exactly one, and the verdicts are
    each mode's own."""
    from vsphere_kale.health.status import collect_status
    from vsphere_kale.settings import settings_from_mapping

    settings = settings_from_mapping({"storage": {"rwxStorageClass": NFS_CLASS}})
    hooks = unique("hooks")
    cluster.kube.create(
        r.MUTATING_WEBHOOK_CONFIGURATION,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": hooks},
            "webhooks": [],
        },
    )

    def status(webhook_name: str) -> dict[str, Any]:
        doc = collect_status(
            cluster.kube,
            cluster.team,
            settings=settings,
            mode="off",
            can_reconcile=False,
            source="service",
            webhook_name=webhook_name,
        )
        return dict(doc["webhook"])

    try:
        before = _policy_gets(admin_api)
        # When: a status where the webhook configuration exists (our policy exists too)
        with_hooks = status(hooks)
        # and one where it does not
        without = status("vsphere-kale")
        # Then: one GET in all (counted once the server has recorded the second call's)
        wait_for("the policy read counted", lambda: _policy_gets(admin_api) > before)
        assert _policy_gets(admin_api) - before == 1
        assert (with_hooks["admission"], with_hooks["verdict"]) == ("webhook", "ca-invalid")
        assert (without["admission"], without["verdict"]) == ("policy", "ok")
    finally:
        cluster.kube.delete(r.MUTATING_WEBHOOK_CONFIGURATION, hooks)


def test_install_uninstall_install_rewrites_claims_again(cluster: Cluster) -> None:
    """On 1.36.3 a re-created policy with paramKind stayed inert; the inlined one does not."""
    kube = cluster.kube
    wait_until_policy_active(kube, cluster.team, NFS_CLASS)
    # When the admin uninstalls
    cluster.cli("uninstall")
    for kind in POLICY_KINDS:
        assert kube.get_optional(kind, admission_policy.MUTATING_POLICY) is None, kind.kind

    def unchanged() -> bool:
        stored, warnings = create_claim(kube, cluster.team, rwx_claim(BLOCK))
        return stored["spec"]["storageClassName"] == BLOCK and not warnings

    # claims keep their class once the API server has dropped the policies
    wait_for("the policies to stop acting", unchanged)
    # (install waits for the namespace uninstall deletes to be gone; it is re-created)
    wait_for(
        "the install namespace to be deleted",
        lambda: kube.get_optional(r.NAMESPACE, cluster.namespace) is None,
        timeout=120,
    )
    # and installs again
    _install(cluster)
    # Then claims are rewritten again, with the warning (within the bound, not inert)
    wait_until_policy_active(kube, cluster.team, NFS_CLASS, timeout=60)
    stored, _ = create_claim(kube, cluster.team, rwx_claim(BLOCK), dry_run=False)
    assert stored["spec"]["storageClassName"] == NFS_CLASS
    assert stored["metadata"]["annotations"][ORIGINAL_CLASS_ANNOTATION] == BLOCK


def test_offline_render_takes_the_version_from_the_flag() -> None:
    done = cli(
        "install",
        "-o",
        "yaml",
        "--admission",
        "policy",
        "--admission-policy-version",
        "v1beta1",
        "--rwx-storage-class",
        NFS_CLASS,
    )
    assert done.returncode == 0, done.stderr
    assert "kind: MutatingWebhookConfiguration" not in done.stdout
    assert "apiVersion: admissionregistration.k8s.io/v1beta1\nkind: MutatingAdmissionPolicy\n" in (
        done.stdout
    )
    assert "paramKind" not in done.stdout


def test_switching_modes_removes_the_other_mode(cluster: Cluster) -> None:
    kube = cluster.kube
    # Given policy mode, when the admin installs the webhook mode
    out = cluster.cli("install", "--rwx-storage-class", NFS_CLASS)
    # Then the webhook configuration is there and our policies are gone
    assert kube.get_optional(r.MUTATING_WEBHOOK_CONFIGURATION, "vsphere-kale") is not None
    for kind in POLICY_KINDS:
        assert kube.get_optional(kind, admission_policy.MUTATING_POLICY) is None, kind.kind
    assert "mutatingadmissionpolicy.admissionregistration.k8s.io/vsphere-kale deleted" in out
    # and back: the webhook configuration goes, the policies act again
    out = _install(cluster)
    assert kube.get_optional(r.MUTATING_WEBHOOK_CONFIGURATION, "vsphere-kale") is None
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/vsphere-kale deleted" in out
    wait_until_policy_active(kube, cluster.team, NFS_CLASS)
