"""Our least-privilege RBAC judged by kube-apiserver's own authorizer.

``serve`` runs as the installed ServiceAccount (a TokenRequest token, nothing but
deploy/base's ClusterRole and Role): a scenario of Profiles created, drifted and deleted,
admin API calls (TokenReview + SubjectAccessReview), leader Lease and Events produces no 403
in the API server's audit log. Removing a rule makes exactly the step that needs it fail with
the API server's 403 (for the RoleBinding the psp mode creates: RBAC's escalation check
too).
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from realcp_helpers import NFS_CLASS, Process, cli, free_port, wait_for, wait_namespace_gone

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.install import certs
from vsphere_kale.sandbox.kubeconfig import write_kubeconfig

NS = "vsphere-kale"
SA_USER = f"system:serviceaccount:{NS}:vsphere-kale"
PSP_ROLE = "psp:vmware-system-privileged"
ENFORCE = "pod-security.kubernetes.io/enforce"


class Installed:
    def __init__(self, cp: RunningControlPlane, kubeconfig: Path, ca: bytes, tls: Path) -> None:
        self.cp = cp
        self.kubeconfig = kubeconfig
        """The ServiceAccount's kubeconfig (TokenRequest token)."""
        self.ca = ca
        self.tls = tls


@pytest.fixture(scope="module")
def installed(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    storage_classes: tuple[str, str],
    profile_crd: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    cp = real_control_plane
    tmp = tmp_path_factory.mktemp("rbac")
    admin_kubeconfig = str(cp.kubeconfig_path)
    done = cli("install", "--kubeconfig", admin_kubeconfig, "--rwx-storage-class", NFS_CLASS)
    assert done.returncode == 0, done.stderr
    # The PSP ClusterRole of a TKG cluster (RBAC does not check that the PSP exists).
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.create_cluster_role(
        {
            "metadata": {"name": PSP_ROLE},
            "rules": [
                {
                    "apiGroups": ["policy"],
                    "resources": ["podsecuritypolicies"],
                    "verbs": ["use"],
                    "resourceNames": ["vmware-system-privileged"],
                }
            ],
        }
    )
    token = client.CoreV1Api(admin_api).create_namespaced_service_account_token(
        "vsphere-kale", NS, {"spec": {"expirationSeconds": 3600}}
    )
    kubeconfig = write_kubeconfig(
        tmp / "sa.kubeconfig", cp.url, {"vsphere-kale": token.status.token}, ca_pem=cp.ca_pem
    )
    secret = client.CoreV1Api(admin_api).read_namespaced_secret("vsphere-kale-tls", NS)
    ca_cert = base64.b64decode(secret.data["ca.crt"])
    tls_cert, tls_key = certs.build_serving_cert(
        ca_cert,
        base64.b64decode(secret.data["ca.key"]),
        dns_names=[],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        days=1,
    )
    (tmp / "tls.crt").write_bytes(tls_cert)
    (tmp / "tls.key").write_bytes(tls_key)
    try:
        yield Installed(cp, kubeconfig, ca_cert, tmp)
    finally:
        rbac.delete_cluster_role(PSP_ROLE)
        gone = cli("uninstall", "--kubeconfig", admin_kubeconfig)
        assert gone.returncode == 0, gone.stderr
        wait_namespace_gone(admin_api, NS)


def make_profile(admin_api: client.ApiClient, name: str) -> None:
    profile = client.CustomObjectsApi(admin_api).create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": name},
            "spec": {"owner": {"kind": "User", "name": f"{name}@example.com"}},
        },
    )
    # Owned by its Profile, as Kubeflow's profile controller makes it: the reconciler manages
    # a namespace only with that controller reference (a same-named Profile is not enough).
    client.CoreV1Api(admin_api).create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"},
                "ownerReferences": [owner_reference(profile)],
            }
        }
    )


def owner_reference(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "name": profile["metadata"]["name"],
        "uid": profile["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def delete_profile(admin_api: client.ApiClient, name: str) -> None:
    for delete in (
        lambda: client.CoreV1Api(admin_api).delete_namespace(name),
        lambda: client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", name
        ),
    ):
        try:
            delete()
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def enforce_label(admin_api: client.ApiClient, name: str) -> str | None:
    labels = client.CoreV1Api(admin_api).read_namespace(name).metadata.labels or {}
    return labels.get(ENFORCE)


def forbidden(cp: RunningControlPlane, since: int) -> list[str]:
    events = cp.audit_events(username=SA_USER)[since:]
    return [
        f"{e['verb']} {e['requestURI']}: {(e.get('responseStatus') or {}).get('message')}"
        for e in events
        if e.get("stage") == "ResponseComplete"
        and (e.get("responseStatus") or {}).get("code") == 403
    ]


def admin_api_call(installed: Installed, port: int, method: str, path: str, token: str) -> int:
    context = ssl.create_default_context(cadata=installed.ca.decode())
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return int(response.status)


def start_serve(installed: Installed, identity: str, *extra: str) -> Process:
    port = free_port()
    return Process(
        [
            "serve",
            "--kubeconfig",
            str(installed.kubeconfig),
            "--cert-file",
            str(installed.tls / "tls.crt"),
            "--key-file",
            str(installed.tls / "tls.key"),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--rwx-storage-class",
            NFS_CLASS,
            "--identity",
            identity,
            *extra,
        ],
        port=port,
        ca_pem=installed.ca,
        log=installed.tls / f"serve-{identity}.log",
    ).start()


def lease_holder(admin_api: client.ApiClient) -> str | None:
    leases = client.CoordinationV1Api(admin_api).list_namespaced_lease(NS).items
    return leases[0].spec.holder_identity if leases else None


def test_serve_as_the_service_account_meets_no_403(
    installed: Installed, admin_api: client.ApiClient
) -> None:
    cp = installed.cp
    since = len(cp.audit_events(username=SA_USER))
    serve = start_serve(installed, "replica-a")
    port = serve.port
    names = [f"rbac-{secrets.token_hex(3)}" for _ in range(2)]
    try:
        # Given: two new Profiles and their namespaces.
        for name in names:
            make_profile(admin_api, name)
        # Then: the reconciler (the leader) labels both.
        for name in names:
            wait_for(f"{name} labelled", lambda name=name: enforce_label(admin_api, name))
        # When: an admin removes our label (drift), it is put back.
        client.CoreV1Api(admin_api).patch_namespace(
            names[0], {"metadata": {"labels": {ENFORCE: None}}}
        )
        wait_for("drift repaired", lambda: enforce_label(admin_api, names[0]))
        # And the admin API answers through TokenReview + SubjectAccessReview.
        admin = cp.token_for("admin")
        assert (
            admin_api_call(installed, port, "GET", f"/api/v1/namespaces/{names[0]}/status", admin)
            == 200
        )
        assert (
            admin_api_call(
                installed, port, "POST", f"/api/v1/namespaces/{names[1]}/reconcile", admin
            )
            == 200
        )
        # The leader holds a real Lease.
        assert lease_holder(admin_api) == "replica-a"
        # When: a Profile is deleted.
        delete_profile(admin_api, names[1])
    finally:
        serve.stop()
        for name in names:
            delete_profile(admin_api, name)
    # Then: the service account really did the work, and was never refused.
    work = cp.audit_events(username=SA_USER)[since:]
    verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in work}
    assert ("patch", "namespaces") in verbs
    assert ("create", "events") in verbs
    assert ("create", "tokenreviews") in verbs
    assert ("create", "subjectaccessreviews") in verbs
    assert forbidden(cp, since) == []


GROUPS = {
    "rolebindings": "rbac.authorization.k8s.io",
    "clusterroles": "rbac.authorization.k8s.io",
    "namespaces": "",
    "profiles": "kubeflow.org",
}


def wait_authorized(
    admin_api: client.ApiClient, resource: str, verb: str, *, allowed: bool
) -> None:
    """Until the authorizer's cache has the role change (it follows a watch, not our write)."""
    review = {
        "spec": {
            "user": SA_USER,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NS}"],
            "resourceAttributes": {
                "group": GROUPS[resource],
                "resource": resource,
                "verb": verb,
                "name": PSP_ROLE if resource == "clusterroles" else "",
            },
        }
    }
    authz = client.AuthorizationV1Api(admin_api)
    wait_for(
        f"{verb} {resource} allowed={allowed}",
        lambda: authz.create_subject_access_review(review).status.allowed == allowed,
    )


def test_two_replicas_a_kill_9_of_the_leader_hands_over_the_real_lease(
    installed: Installed, admin_api: client.ApiClient
) -> None:
    timing = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1")
    first = start_serve(installed, "replica-1", *timing)
    second: Process | None = None
    name = f"lead-{secrets.token_hex(3)}"
    try:
        wait_for("replica-1 leads", lambda: lease_holder(admin_api) == "replica-1")
        second = start_serve(installed, "replica-2", *timing)
        # When: the leader dies without a word (no Lease release).
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)
        # Then: the other replica takes the Lease once it expires, and does the leader's work.
        wait_for("replica-2 leads", lambda: lease_holder(admin_api) == "replica-2", timeout=60)
        make_profile(admin_api, name)
        wait_for(f"{name} labelled by replica-2", lambda: enforce_label(admin_api, name))
    finally:
        first.stop()
        if second is not None:
            second.stop()
        delete_profile(admin_api, name)
        client.CoordinationV1Api(admin_api).delete_collection_namespaced_lease(NS)


def without_rule(rules: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    """``rules`` with ``verb`` on ``resource`` removed (the rule dropped if left empty)."""
    out = []
    for rule in copy.deepcopy(rules):
        if resource in rule["resources"] and verb in rule["verbs"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
            if not rule["verbs"]:
                continue
        out.append(rule)
    assert out != rules, f"no rule grants {verb} {resource}"
    return out


@pytest.mark.parametrize(
    ("mode", "resource", "verb", "expected"),
    [
        (
            "psp",
            "rolebindings",
            "create",
            'cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io"',
        ),
        # Without `bind`, RBAC's escalation check refuses a RoleBinding to a role we do not hold.
        (
            "psp",
            "clusterroles",
            "bind",
            "is attempting to grant RBAC permissions not currently held",
        ),
        ("psa", "namespaces", "patch", 'cannot patch resource "namespaces"'),
        ("psa", "profiles", "get", 'cannot get resource "profiles" in API group "kubeflow.org"'),
    ],
)
def test_each_rule_is_needed_the_api_server_says_403(
    installed: Installed,
    admin_api: client.ApiClient,
    tmp_path: Path,
    mode: str,
    resource: str,
    verb: str,
    expected: str,
) -> None:
    rbac = client.RbacAuthorizationV1Api(admin_api)
    role = rbac.read_cluster_role("vsphere-kale")
    rules = admin_api.sanitize_for_serialization(role.rules)
    name = f"need-{secrets.token_hex(3)}"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"podSecurity:\n  mode: {mode}\n  pspClusterRole: {PSP_ROLE}\n", encoding="utf-8"
    )
    make_profile(admin_api, name)

    def reconcile() -> tuple[int, dict[str, Any]]:
        done = cli(
            "reconcile",
            "-n",
            name,
            "--kubeconfig",
            str(installed.kubeconfig),
            "--config",
            str(config),
            "-o",
            "json",
        )
        (result,) = json.loads(done.stdout)["results"]
        return done.returncode, result

    try:
        # With every rule: the step succeeds (so the failure below is the missing rule's).
        code, result = reconcile()
        assert code == 0, result
        if mode == "psp":
            rbac.delete_namespaced_role_binding("vsphere-kale-psp", name)
        else:
            client.CoreV1Api(admin_api).patch_namespace(
                name, {"metadata": {"labels": {ENFORCE: None}}}
            )
        rbac.patch_cluster_role("vsphere-kale", {"rules": without_rule(rules, resource, verb)})
        wait_authorized(admin_api, resource, verb, allowed=False)
        since = len(installed.cp.audit_events(username=SA_USER))
        code, result = reconcile()
        assert code == 1, result
        assert result["outcome"] == "failed"
        # Kube-apiserver's own verdict (audit log), and our sentence naming what is missing.
        refusals = forbidden(installed.cp, since)
        assert any(expected in line for line in refusals), refusals
        assert verb in result["message"], result
    finally:
        rbac.patch_cluster_role("vsphere-kale", {"rules": rules})
        wait_authorized(admin_api, resource, verb, allowed=True)
        delete_profile(admin_api, name)
