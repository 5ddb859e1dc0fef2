"""Our least-privilege RBAC judged by kube-apiserver's own authorizer.

``serve`` runs as the installed ServiceAccount (a TokenRequest token, nothing but
deploy/base's ClusterRole and Role): a scenario of Profiles created, drifted and deleted,
admin API calls (TokenReview + SubjectAccessReview: status, reconcile, recreate of a stuck
claim), leader Lease and Events, ``psaLevel: auto`` raising a level on the StatefulSet
controller's refusal through the Events watch, and a whole certificate rotation (CA rollover, old CA
dropped, serving certificate renewed: the rotator driven by an injected clock) produces no
403 in the API server's audit log. Removing a rule makes exactly the step that needs it fail
with the API server's 403 (for the RoleBinding the psp mode creates: RBAC's escalation check
too). doctor runs as the admin (its RBAC review, by SubjectAccessReview, finds nothing
missing) and as the service account (what it may not read is "cannot check", never a false
verdict).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from realcp_helpers import (
    BLOCK_CLASS,
    NFS_CLASS,
    Process,
    cli,
    default_service_account,
    wait_for,
    wait_namespace_gone,
)
from reconcile_helpers import create_profile_namespace

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.controlplane.config import free_port
from vsphere_kale.errors import KubeForbidden
from vsphere_kale.install import certs, namespace_guard
from vsphere_kale.install.rotator import CertificateRotator
from vsphere_kale.kube import Kube
from vsphere_kale.playground.seed_kale import notebook_statefulset
from vsphere_kale.sandbox.kubeconfig import write_kubeconfig

NS = "vsphere-kale"
SA_USER = f"system:serviceaccount:{NS}:vsphere-kale"
PSP_ROLE = "psp:vmware-system-privileged"
ENFORCE = "pod-security.kubernetes.io/enforce"
GUARD = namespace_guard.NAME


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
    # podSecurity.namespaceGuard auto: kube-apiserver 1.36 serves ValidatingAdmissionPolicy, so
    # the whole scenario below runs with our namespace writes judged by the guard too.
    assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{GUARD} created" in done.stdout
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
    """A profile namespace as Kubeflow's profile controller makes it."""
    create_profile_namespace(admin_api, name, {"app.kubernetes.io/part-of": "kubeflow-profile"})


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


def stuck_claim(admin_api: client.ApiClient, namespace: str, name: str) -> None:
    """A ReadWriteMany claim on the block class: what the webhook would have rewritten
    (here the webhook points at a Service no API server can reach, failurePolicy Ignore)."""
    client.CoreV1Api(admin_api).create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": BLOCK_CLASS,
            },
        },
    )


def claim_class(admin_api: client.ApiClient, namespace: str, name: str) -> str | None:
    claim = client.CoreV1Api(admin_api).read_namespaced_persistent_volume_claim(name, namespace)
    return str(claim.spec.storage_class_name)


class Clock:
    """The rotator's clock, moved by the test (no sleeping until a certificate ages)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


def tls_secret(admin_api: client.ApiClient) -> dict[str, bytes]:
    secret = client.CoreV1Api(admin_api).read_namespaced_secret("vsphere-kale-tls", NS)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def not_after(pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def rotator_as_service_account(installed: Installed, clock: Clock) -> CertificateRotator:
    rotator = CertificateRotator(
        Kube.from_kubeconfig(str(installed.kubeconfig)),
        namespace=NS,
        clock=clock,
        publish_settle=0,
    )
    fit_lifetimes(rotator, clock)
    return rotator


def fit_lifetimes(rotator: CertificateRotator, clock: Clock) -> None:
    """Certificates are issued from the real time, while the plan reads the test's clock,
    years ahead: give what the rotator issues a lifetime that outlasts that clock (else a
    fresh certificate would already look due, and the rotator would renew it again)."""
    ahead = max(0, (clock.now - dt.datetime.now(dt.timezone.utc)).days)
    rotator.serving_days = ahead + 2 * 365
    rotator.ca_days = ahead + 10 * 365


def rotate_everything(installed: Installed, admin_api: client.ApiClient) -> list[str]:
    """Every step of the rotation, as the service account: a CA rollover (stage, publish,
    promote), the old CA dropped once the grace has passed, then a serving renewal."""
    clock = Clock()
    clock.now = not_after(tls_secret(admin_api)["ca.crt"]) - dt.timedelta(days=10)
    rotator = rotator_as_service_account(installed, clock)
    steps: list[str] = []
    rotator.run_once()
    steps += rotator.status.steps
    clock.now += rotator.grace + dt.timedelta(minutes=1)
    rotator.run_once()
    steps += rotator.status.steps
    clock.now = not_after(tls_secret(admin_api)["tls.crt"]) - dt.timedelta(days=5)
    fit_lifetimes(rotator, clock)
    rotator.run_once()
    steps += rotator.status.steps
    return steps


def doctor(kubeconfig: Path) -> dict[str, dict[str, str]]:
    done = cli("doctor", "--kubeconfig", str(kubeconfig), "-o", "json")
    assert "Traceback" not in done.stderr, done.stderr
    return {c["check"]: c for c in json.loads(done.stdout)["checks"]}


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
        # And recreates a stuck claim on the RWX class (the panel's Recreate button).
        stuck_claim(admin_api, names[0], "marshal")
        assert (
            admin_api_call(
                installed,
                port,
                "POST",
                f"/api/v1/namespaces/{names[0]}/persistentvolumeclaims/marshal/recreate",
                admin,
            )
            == 200
        )
        assert claim_class(admin_api, names[0], "marshal") == NFS_CLASS
        # The leader holds a real Lease.
        assert lease_holder(admin_api) == "replica-a"
        # When: a Profile is deleted.
        delete_profile(admin_api, names[1])
    finally:
        serve.stop()
        for name in names:
            delete_profile(admin_api, name)
    # And: the certificate rotates, every step, with the service account's rights.
    before = tls_secret(admin_api)
    steps = rotate_everything(installed, admin_api)
    assert steps == ["stage-ca", "publish-ca", "promote-ca", "drop-old-ca", "renew-serving"]
    after = tls_secret(admin_api)
    assert after["ca.crt"] != before["ca.crt"] and after["tls.crt"] != before["tls.crt"]
    hooks = client.AdmissionregistrationV1Api(admin_api).read_mutating_webhook_configuration(NS)
    assert base64.b64decode(hooks.webhooks[0].client_config.ca_bundle) == after["ca.crt"]
    # And doctor, as the admin, finds every permission the service uses granted (judged by
    # this API server's SubjectAccessReview) and the rotated certificate valid.
    checks = doctor(cp.kubeconfig_path)
    assert checks["rbac"]["status"] == "ok", checks["rbac"]
    assert checks["webhook-configuration"]["status"] == "ok", checks["webhook-configuration"]
    assert checks["serving-certificate"]["status"] == "ok", checks["serving-certificate"]
    assert checks["namespace-guard"]["status"] == "ok", checks["namespace-guard"]
    # Then: the service account really did the work, and was never refused.
    work = cp.audit_events(username=SA_USER)[since:]
    verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in work}
    assert ("patch", "namespaces") in verbs
    assert ("create", "events") in verbs
    assert ("create", "tokenreviews") in verbs
    assert ("create", "subjectaccessreviews") in verbs
    assert {("delete", "persistentvolumeclaims"), ("create", "persistentvolumeclaims")} <= verbs
    assert {("update", "secrets"), ("patch", "mutatingwebhookconfigurations")} <= verbs
    assert forbidden(cp, since) == []


def test_a_pod_security_refusal_raises_the_level_through_the_events_watch(
    installed: Installed, admin_api: client.ApiClient, tmp_path: Path
) -> None:
    """``psaLevel: auto``: the real StatefulSet controller's FailedCreate Event reaches serve
    through its Events watch (``list``/``watch events``, nothing more) and the level rises.
    ``resyncSeconds`` is an hour, so only the watch can explain the rise."""
    cp = installed.cp
    config = tmp_path / "auto.yaml"
    config.write_text(
        "podSecurity:\n  mode: psa\n  psaLevel: auto\n  resyncSeconds: 3600\n", encoding="utf-8"
    )
    since = len(cp.audit_events(username=SA_USER))
    serve = start_serve(installed, "replica-w", "--config", str(config))
    name = f"refused-{secrets.token_hex(3)}"
    try:
        # Given: a profile namespace without Istio: its notebooks need baseline.
        make_profile(admin_api, name)
        wait_for(f"{name} at baseline", lambda: enforce_label(admin_api, name) == "baseline")
        default_service_account(admin_api, name)
        core = client.CoreV1Api(admin_api)
        core.create_namespaced_service_account(name, {"metadata": {"name": "default-editor"}})
        # When: a notebook StatefulSet whose pod baseline refuses (NET_ADMIN in istio-init)
        sts = notebook_statefulset()
        sts["metadata"]["namespace"] = name
        client.AppsV1Api(admin_api).create_namespaced_stateful_set(name, sts)
        # Then: the leader raises the level on the controller's Event, within seconds.
        wait_for(
            f"{name} at privileged",
            lambda: enforce_label(admin_api, name) == "privileged",
            timeout=60,
        )
        assert f"namespace {name}: Pod Security refused a pod of StatefulSet" in serve.output()
    finally:
        serve.stop()
        delete_profile(admin_api, name)
    work = cp.audit_events(username=SA_USER)[since:]
    verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in work}
    assert {("list", "events"), ("watch", "events")} <= verbs
    assert forbidden(cp, since) == []


def test_doctor_as_the_service_account_says_cannot_check_for_what_it_may_not_read(
    installed: Installed,
) -> None:
    """doctor with the service's own credential: the reads the service never needs (the
    ConfigMap is mounted, and with it refused doctor tries the Deployment's args; endpoints
    are the API server's business; the namespace guard is the admin's) are refused by this
    API server, and doctor says so instead of a verdict; everything the service needs
    passes."""
    since = len(installed.cp.audit_events(username=SA_USER))
    checks = doctor(installed.kubeconfig)
    assert checks["webhook-endpoints"]["message"].startswith("cannot check"), checks
    assert checks["rbac"]["status"] == "ok", checks["rbac"]
    assert checks["webhook-configuration"]["status"] == "ok", checks
    refused = sorted(line.split(":")[0] for line in forbidden(installed.cp, since))
    assert refused == [
        f"get /api/v1/namespaces/{NS}/configmaps/vsphere-kale-config",
        f"get /api/v1/namespaces/{NS}/endpoints/vsphere-kale",
        f"get /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{GUARD}",
        f"get /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{GUARD}",
        f"get /apis/apps/v1/namespaces/{NS}/deployments/vsphere-kale",
    ]
    assert checks["namespace-guard"]["message"].startswith("cannot check"), checks

    # settings it could not read are "cannot check", never "not set"
    assert "not set" not in checks["rwx-storage-class"]["message"], checks["rwx-storage-class"]


GROUPS = {
    "rolebindings": "rbac.authorization.k8s.io",
    "clusterroles": "rbac.authorization.k8s.io",
    "namespaces": "",
    "profiles": "kubeflow.org",
    "persistentvolumeclaims": "",
    "pods": "",
    "secrets": "",
    "mutatingwebhookconfigurations": "admissionregistration.k8s.io",
}
NAMES = {
    "clusterroles": PSP_ROLE,
    "secrets": "vsphere-kale-tls",
    "mutatingwebhookconfigurations": "vsphere-kale",
}
"""The object each resourceNames-narrowed rule is about."""


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
                "name": NAMES.get(resource, ""),
                # Our namespace: covers the Role's rules and the cluster-wide ones alike.
                "namespace": NS if resource not in ("namespaces", "clusterroles") else "",
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


def read_role(admin_api: client.ApiClient, kind: str) -> list[dict[str, Any]]:
    rbac = client.RbacAuthorizationV1Api(admin_api)
    role = (
        rbac.read_cluster_role("vsphere-kale")
        if kind == "ClusterRole"
        else rbac.read_namespaced_role("vsphere-kale", NS)
    )
    rules: list[dict[str, Any]] = admin_api.sanitize_for_serialization(role.rules)
    return rules


def write_role(admin_api: client.ApiClient, kind: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(admin_api)
    if kind == "ClusterRole":
        rbac.patch_cluster_role("vsphere-kale", {"rules": rules})
    else:
        rbac.patch_namespaced_role("vsphere-kale", NS, {"rules": rules})


@pytest.mark.parametrize(
    ("kind", "resource", "verb", "days_left", "expected"),
    [
        # Renewing the serving certificate writes the Secret (an update, by resourceVersion).
        ("Role", "secrets", "update", "serving", 'cannot update resource "secrets"'),
        ("Role", "secrets", "get", "serving", 'cannot get resource "secrets"'),
        # A CA rollover publishes the next CA in our webhook configuration's caBundle.
        (
            "ClusterRole",
            "mutatingwebhookconfigurations",
            "patch",
            "ca",
            'cannot patch resource "mutatingwebhookconfigurations"',
        ),
        (
            "ClusterRole",
            "mutatingwebhookconfigurations",
            "get",
            "serving",
            'cannot get resource "mutatingwebhookconfigurations"',
        ),
    ],
)
def test_certificate_rotation_needs_each_of_its_rules(
    installed: Installed,
    admin_api: client.ApiClient,
    kind: str,
    resource: str,
    verb: str,
    days_left: str,
    expected: str,
) -> None:
    rules = read_role(admin_api, kind)
    clock = Clock()
    # Given: the certificate (or the CA) that is due for rotation.
    due = tls_secret(admin_api)["tls.crt" if days_left == "serving" else "ca.crt"]
    clock.now = not_after(due) - dt.timedelta(days=5)
    rotator = rotator_as_service_account(installed, clock)
    write_role(admin_api, kind, without_rule(rules, resource, verb))
    try:
        wait_authorized(admin_api, resource, verb, allowed=False)
        since = len(installed.cp.audit_events(username=SA_USER))
        # When: the leader's rotator runs. Then: kube-apiserver refuses exactly that step.
        with pytest.raises(KubeForbidden) as refused:
            rotator.run_once()
        assert verb in str(refused.value)
        refusals = forbidden(installed.cp, since)
        assert any(expected in line for line in refusals), refusals
    finally:
        write_role(admin_api, kind, rules)
        wait_authorized(admin_api, resource, verb, allowed=True)
    # And with the rule back the same rotation completes (so the 403 was that rule's).
    assert rotator.run_once().action == "ok", rotator.status


@pytest.mark.parametrize(
    ("verb", "resource", "expected"),
    [
        ("get", "persistentvolumeclaims", 'cannot get resource "persistentvolumeclaims"'),
        ("list", "pods", 'cannot list resource "pods"'),
        ("delete", "persistentvolumeclaims", 'cannot delete resource "persistentvolumeclaims"'),
        ("create", "persistentvolumeclaims", 'cannot create resource "persistentvolumeclaims"'),
    ],
)
def test_recreating_a_stuck_claim_needs_each_of_its_rules(
    installed: Installed,
    admin_api: client.ApiClient,
    verb: str,
    resource: str,
    expected: str,
) -> None:
    """The recreate step the admin API runs (here through ``recreate-pvc`` with the service
    account's kubeconfig: the same ``apply_recreate``, the same requests)."""
    name = f"recr-{secrets.token_hex(3)}"
    make_profile(admin_api, name)
    rules = read_role(admin_api, "ClusterRole")

    def recreate(claim: str) -> tuple[int, str]:
        done = cli(
            "recreate-pvc",
            claim,
            "-n",
            name,
            "--yes",
            "--rwx-storage-class",
            NFS_CLASS,
            "--kubeconfig",
            str(installed.kubeconfig),
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout + done.stderr

    try:
        # With every rule: a stuck claim is recreated (so the failure below is the rule's).
        stuck_claim(admin_api, name, "first")
        code, output = recreate("first")
        assert code == 0, output
        assert claim_class(admin_api, name, "first") == NFS_CLASS
        stuck_claim(admin_api, name, "second")
        write_role(admin_api, "ClusterRole", without_rule(rules, resource, verb))
        wait_authorized(admin_api, resource, verb, allowed=False)
        since = len(installed.cp.audit_events(username=SA_USER))
        code, output = recreate("second")
        assert code == 1, output
        assert verb in output, output
        refusals = forbidden(installed.cp, since)
        assert any(expected in line for line in refusals), refusals
    finally:
        write_role(admin_api, "ClusterRole", rules)
        wait_authorized(admin_api, resource, verb, allowed=True)
        delete_profile(admin_api, name)
