"""kube-apiserver 1.36 calls our webhook: over TLS, with the caBundle `install` wrote.

Given `vsphere-kale install --webhook-url https://127.0.0.1:PORT/...` (the out-of-cluster
form: a real API server on these machines cannot reach a Service's ClusterIP) and
`vsphere-kale serve` on that port with a certificate from the installed CA, the claims below
go through the real admission chain: DefaultStorageClass, then MutatingAdmissionWebhook,
then validation and storage in etcd.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from realcp_helpers import (
    BLOCK_CLASS,
    NFS_CLASS,
    Process,
    cli,
    kubectl,
    wait_namespace_gone,
)

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.controlplane.config import free_port
from vsphere_kale.install import certs
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.storage import build_rewrite_warning

ORIGINAL = "vsphere-kale.io/original-storage-class"


def claim_yaml(name: str, namespace: str, *, mode: str, storage_class: str | None) -> str:
    spec: dict[str, object] = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


class Installed:
    def __init__(self, cp: RunningControlPlane, webhook: Process) -> None:
        self.cp = cp
        self.webhook = webhook


@pytest.fixture(scope="module")
def installed(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    storage_classes: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    cp = real_control_plane
    tmp = tmp_path_factory.mktemp("webhook")
    port = free_port()
    url = f"https://127.0.0.1:{port}/mutate/persistentvolumeclaims"
    kubeconfig = str(cp.kubeconfig_path)
    done = cli(
        "install",
        "--kubeconfig",
        kubeconfig,
        "--rwx-storage-class",
        NFS_CLASS,
        "--webhook-url",
        url,
    )
    assert done.returncode == 0, done.stderr
    hooks = client.AdmissionregistrationV1Api(admin_api).read_mutating_webhook_configuration(
        "vsphere-kale"
    )
    assert hooks.webhooks[0].client_config.url == url
    assert hooks.webhooks[0].client_config.service is None
    # What an admin debugging outside the cluster does: a serving certificate for 127.0.0.1
    # from the CA the caBundle trusts (install keeps it in the Secret).
    secret = client.CoreV1Api(admin_api).read_namespaced_secret("vsphere-kale-tls", "vsphere-kale")
    ca_cert = base64.b64decode(secret.data["ca.crt"])
    ca_key = base64.b64decode(secret.data["ca.key"])
    tls_cert, tls_key = certs.build_serving_cert(
        ca_cert, ca_key, dns_names=[], ip_addresses=[ipaddress.ip_address("127.0.0.1")], days=1
    )
    (tmp / "tls.crt").write_bytes(tls_cert)
    (tmp / "tls.key").write_bytes(tls_key)
    webhook = Process(
        [
            "webhook",
            "--cert-file",
            str(tmp / "tls.crt"),
            "--key-file",
            str(tmp / "tls.key"),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--rwx-storage-class",
            NFS_CLASS,
        ],
        port=port,
        ca_pem=ca_cert,
        log=tmp / "webhook.log",
    ).start()
    try:
        yield Installed(cp, webhook)
    finally:
        webhook.stop()
        gone = cli("uninstall", "--kubeconfig", kubeconfig)
        assert gone.returncode == 0, gone.stderr
        wait_namespace_gone(admin_api, "vsphere-kale")


def read_claim(api: client.ApiClient, namespace: str, name: str) -> client.V1PersistentVolumeClaim:
    return client.CoreV1Api(api).read_namespaced_persistent_volume_claim(name, namespace)


def test_kubectl_apply_of_an_rwx_claim_is_stored_on_nfs_with_our_warning(
    installed: Installed, admin_api: client.ApiClient, namespace: str
) -> None:
    # When: a user applies a Kale-style RWX claim on the block class.
    done = kubectl(
        installed.cp,
        "apply",
        "-f",
        "-",
        stdin=claim_yaml("marshal", namespace, mode="ReadWriteMany", storage_class=BLOCK_CLASS),
    )
    # Then: kubectl printed our warning, and etcd holds the claim on the NFS class.
    assert done.returncode == 0, done.stderr
    assert f"Warning: storageClassName rewritten from {BLOCK_CLASS} to {NFS_CLASS}" in done.stderr
    stored = read_claim(admin_api, namespace, "marshal")
    assert stored.spec.storage_class_name == NFS_CLASS
    assert stored.metadata.annotations[ORIGINAL] == BLOCK_CLASS


def test_a_shortened_warning_reaches_the_adapter_and_kubectl_as_utf8(
    installed: Installed, admin_api: client.ApiClient, namespace: str
) -> None:
    """Our webhook shortens a long class name with "…" (policy.storage); kube-apiserver
    forwards it as UTF-8 bytes in its Warning header. Kube (http.client reads headers as
    latin-1) and kubectl (client-go) must both show the text as written, not mojibake."""
    long_class = "vsphere-" + "block-storage-policy-" * 5
    expected = build_rewrite_warning(long_class, NFS_CLASS)
    assert "…" in expected  # the case under test: a non-ASCII warning the webhook writes
    warnings: list[str] = []
    body = claim_yaml("long", namespace, mode="ReadWriteMany", storage_class=long_class)
    Kube(admin_api).create(r.PERSISTENT_VOLUME_CLAIM, yaml.safe_load(body), warnings=warnings)
    assert warnings == [expected]
    done = kubectl(
        installed.cp,
        "apply",
        "-f",
        "-",
        stdin=claim_yaml("long2", namespace, mode="ReadWriteMany", storage_class=long_class),
    )
    assert done.returncode == 0, done.stderr
    assert f"Warning: {expected}" in done.stderr


def test_a_claim_without_class_reaches_the_webhook_with_the_default_class(
    installed: Installed, admin_api: client.ApiClient, namespace: str
) -> None:
    # DefaultStorageClass admission runs before the mutating webhooks: the webhook is handed
    # the cluster default (the block class), not an empty class -- and records it.
    done = kubectl(
        installed.cp,
        "apply",
        "-f",
        "-",
        stdin=claim_yaml("classless", namespace, mode="ReadWriteMany", storage_class=None),
    )
    assert done.returncode == 0, done.stderr
    stored = read_claim(admin_api, namespace, "classless")
    assert stored.spec.storage_class_name == NFS_CLASS
    assert stored.metadata.annotations[ORIGINAL] == BLOCK_CLASS
    # And an RWO claim without a class simply gets the default, untouched by us.
    done = kubectl(
        installed.cp,
        "apply",
        "-f",
        "-",
        stdin=claim_yaml("rwo", namespace, mode="ReadWriteOnce", storage_class=None),
    )
    assert done.returncode == 0, done.stderr
    rwo = read_claim(admin_api, namespace, "rwo")
    assert rwo.spec.storage_class_name == BLOCK_CLASS
    assert ORIGINAL not in (rwo.metadata.annotations or {})


def test_a_later_patch_of_the_class_is_refused_by_the_api_server(
    installed: Installed, admin_api: client.ApiClient, namespace: str
) -> None:
    # Why we mutate at admission: once stored, the class cannot be changed.
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        yaml.safe_load(claim_yaml("late", namespace, mode="ReadWriteOnce", storage_class=None)),
    )
    with pytest.raises(client.ApiException) as caught:
        core.patch_namespaced_persistent_volume_claim(
            "late", namespace, {"spec": {"storageClassName": NFS_CLASS}}
        )
    assert caught.value.status == 422
    status = json.loads(caught.value.body)
    assert status["reason"] == "Invalid"
    assert "spec is immutable after creation" in status["message"]


def test_failure_policy_ignore_admits_claims_unchanged_while_serve_is_down(
    installed: Installed, admin_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    installed.webhook.stop()
    try:
        done = kubectl(
            installed.cp,
            "apply",
            "-f",
            "-",
            stdin=claim_yaml(
                "while-down", namespace, mode="ReadWriteMany", storage_class=BLOCK_CLASS
            ),
        )
        assert done.returncode == 0, done.stderr
        stored = read_claim(admin_api, namespace, "while-down")
        assert stored.spec.storage_class_name == BLOCK_CLASS
        assert ORIGINAL not in (stored.metadata.annotations or {})
    finally:
        installed.webhook.start()
    # Back up: the next claim is rewritten again.
    done = kubectl(
        installed.cp,
        "apply",
        "-f",
        "-",
        stdin=claim_yaml("after", namespace, mode="ReadWriteMany", storage_class=BLOCK_CLASS),
    )
    assert done.returncode == 0, done.stderr
    assert read_claim(admin_api, namespace, "after").spec.storage_class_name == NFS_CLASS


def test_install_without_webhook_url_points_the_webhook_back_at_the_service(
    installed: Installed, admin_api: client.ApiClient
) -> None:
    kubeconfig = str(installed.cp.kubeconfig_path)
    done = cli("install", "--kubeconfig", kubeconfig, "--rwx-storage-class", NFS_CLASS)
    assert done.returncode == 0, done.stderr
    hooks = client.AdmissionregistrationV1Api(admin_api).read_mutating_webhook_configuration(
        "vsphere-kale"
    )
    config = hooks.webhooks[0].client_config
    assert config.url is None
    assert (config.service.namespace, config.service.name) == ("vsphere-kale", "vsphere-kale")
    assert config.ca_bundle  # the same CA stays trusted
