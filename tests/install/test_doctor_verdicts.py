"""doctor's verdicts (pure): each check fails for the reason it names, with a fix."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from vsphere_kale.install import certs, doctor
from vsphere_kale.policy.health import Unreadable
from vsphere_kale.settings import PodSecuritySettings, Settings, StorageSettings

NOW = dt.datetime.now(dt.timezone.utc)
SETTINGS = Settings(storage=StorageSettings(rwx_storage_class="nfs-client"))
DNS = certs.service_dns_names("vsphere-kale", "vsphere-kale")


def sc(name: str, provisioner: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "provisioner": provisioner}


@pytest.mark.parametrize(
    ("classes", "status", "words"),
    [
        ([sc("nfs-client", "cluster.local/nfs")], "ok", "exists"),
        ([], "fail", "does not exist"),
        ([sc("nfs-client", "")], "fail", "no provisioner"),
        ([sc("nfs-client", "csi.vsphere.vmware.com")], "fail", "block volumes only"),
        (Unreadable("list storageclasses is forbidden"), "fail", "cannot check"),
    ],
)
def test_rwx_storage_class(classes: Any, status: str, words: str) -> None:
    check = doctor.decide_storage_class_check(SETTINGS, classes)
    assert check.status == status and words in check.message
    assert (check.hint == "") == (status == "ok")


def test_endpoints_need_a_ready_address() -> None:
    ready = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}
    not_ready = {"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}]}]}
    assert doctor.decide_endpoints(ready, namespace="vsphere-kale").status == "ok"
    assert doctor.decide_endpoints(not_ready, namespace="vsphere-kale").status == "fail"
    assert doctor.decide_endpoints(None, namespace="vsphere-kale").status == "fail"


def webhook(bundle: bytes) -> dict[str, Any]:
    return {
        "metadata": {"name": "vsphere-kale"},
        "webhooks": [
            {"name": "pvc-rwx.vsphere-kale.io",
             "clientConfig": {"caBundle": base64.b64encode(bundle).decode()}}
        ],
    }  # fmt: skip


def secret(ca_days: int = 1825, tls_days: int = 365) -> tuple[dict[str, Any], bytes]:
    ca_cert, ca_key = certs.build_ca("ca", days=ca_days)
    tls_cert, tls_key = certs.build_serving_cert(ca_cert, ca_key, dns_names=DNS, days=tls_days)
    data = {"ca.crt": ca_cert, "ca.key": ca_key, "tls.crt": tls_cert, "tls.key": tls_key}
    body = {"metadata": {}, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
    return body, ca_cert


def test_webhook_configuration_checks_the_ca_bundle() -> None:
    _, ca = secret()
    ok = doctor.decide_webhook_configuration(webhook(ca), settings=SETTINGS, now=NOW)
    assert ok.status == "ok"
    _, short_ca = secret(ca_days=10, tls_days=10)
    expiring = doctor.decide_webhook_configuration(webhook(short_ca), settings=SETTINGS, now=NOW)
    assert expiring.status == "fail" and "expires" in expiring.message
    missing = doctor.decide_webhook_configuration(None, settings=SETTINGS, now=NOW)
    assert missing.status == "fail" and "vsphere-kale install" in missing.hint
    garbage = doctor.decide_webhook_configuration(webhook(b"nope"), settings=SETTINGS, now=NOW)
    assert garbage.status == "fail"


def test_serving_certificate_must_be_signed_by_the_bundle_and_outlive_30_days() -> None:
    body, ca = secret()
    check = doctor.decide_certificate
    assert check(body, webhook(ca), settings=SETTINGS, cert_manager=False, now=NOW).status == "ok"
    _, other_ca = secret()
    untrusted = check(body, webhook(other_ca), settings=SETTINGS, cert_manager=False, now=NOW)
    assert untrusted.status == "fail" and "not signed" in untrusted.message
    short, short_ca = secret(tls_days=10)
    expiring = check(short, webhook(short_ca), settings=SETTINGS, cert_manager=False, now=NOW)
    assert expiring.status == "fail" and "expires" in expiring.message
    gone = check(None, webhook(ca), settings=SETTINGS, cert_manager=False, now=NOW)
    assert gone.status == "fail"


def namespace(name: str, **labels: str) -> dict[str, Any]:
    """A namespace owned by the same-named Profile (as Kubeflow's profile controller makes it)."""
    owner = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "name": name,
        "uid": f"uid-{name}",
        "controller": True,
    }
    return {"metadata": {"name": name, "labels": labels, "ownerReferences": [owner]}}  # fmt: skip


def profile(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"}}


def binding(ns: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "vsphere-kale-psp", "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "vsphere-kale"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "psp:vmware-system-privileged"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                      "name": f"system:serviceaccounts:{ns}"}],
    }  # fmt: skip


def test_pod_security_names_the_managed_namespaces_that_lack_a_binding() -> None:
    namespaces = [namespace("alice"), namespace("bob"), namespace("default")]
    profiles = [profile("alice"), profile("bob")]
    check = doctor.decide_pod_security_check(
        settings=SETTINGS,
        psp_served=True,
        namespaces=namespaces,
        profiles=profiles,
        bindings=[binding("alice")],
    )
    assert check.status == "fail"
    assert "1 of 2 managed namespaces" in check.message and "bob" in check.message
    assert "alice" not in check.message.split(":")[-1]
    fixed = doctor.decide_pod_security_check(
        settings=SETTINGS,
        psp_served=True,
        namespaces=namespaces,
        profiles=profiles,
        bindings=[binding("alice"), binding("bob")],
    )
    assert fixed.status == "ok" and "mode psp (detected)" in fixed.message


def test_pod_security_in_psa_mode_checks_labels() -> None:
    settings = Settings(pod_security=PodSecuritySettings(mode="psa"))
    check = doctor.decide_pod_security_check(
        settings=settings,
        psp_served=False,
        namespaces=[namespace("alice")],
        profiles=[profile("alice")],
        bindings=[],
    )
    assert check.status == "fail" and "labels" in check.message


def pvc(name: str, ns: str, klass: str | None, *, age_s: int = 600) -> dict[str, Any]:
    created = (NOW - dt.timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"]}
    if klass:
        spec["storageClassName"] = klass
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def test_stuck_rwx_claims_are_listed_and_system_namespaces_skipped() -> None:
    classes = [sc("nfs-client", "cluster.local/nfs"), sc("vsan", "csi.vsphere.vmware.com")]
    check = doctor.decide_pvcs(
        settings=SETTINGS,
        pvcs=[pvc("marshal", "alice", "vsan"), pvc("fine", "alice", "nfs-client", age_s=5),
              pvc("theirs", "kube-system", "vsan")],
        storage_classes=classes,
        events=[],
        webhook_verdict="ok",
        now=NOW,
    )  # fmt: skip
    assert check.status == "fail"
    assert "alice/marshal (rwx-on-block-class)" in check.message
    assert "theirs" not in check.message and "fine" not in check.message


def test_rbac_lists_what_is_missing_and_the_exit_code_follows() -> None:
    needed = doctor.build_required_access(doctor.fetch_required_roles(SETTINGS, cert_manager=False))
    results = [doctor.AccessResult(a, a.verb != "bind", "serviceaccount") for a in needed]
    check = doctor.decide_rbac(results, namespace="vsphere-kale")
    assert check.status == "fail"
    assert "bind clusterroles.rbac.authorization.k8s.io 'psp:vmware-system-privileged'" in (
        check.message
    )
    assert doctor.decide_exit_code([check]) == 1
    allowed = [doctor.AccessResult(a, True, "serviceaccount") for a in needed]
    ok = doctor.decide_rbac(allowed, namespace="vsphere-kale")
    assert ok.status == "ok" and doctor.decide_exit_code([ok]) == 0


def test_cert_manager_mode_needs_no_secret_or_webhook_writes() -> None:
    self_managed = set(
        doctor.build_required_access(doctor.fetch_required_roles(SETTINGS, cert_manager=False))
    )
    with_cm = set(
        doctor.build_required_access(doctor.fetch_required_roles(SETTINGS, cert_manager=True))
    )
    removed = {(a.verb, a.resource) for a in self_managed - with_cm}
    assert removed == {
        ("get", "secrets"),
        ("update", "secrets"),
        ("patch", "mutatingwebhookconfigurations"),
    }
    assert with_cm < self_managed
