"""Certificate rotation by the leader, against the sandbox, while admission calls keep coming.

What runs: the sandbox API server (RBAC on; it calls the webhook over TLS verified against
the caBundle, as kube-apiserver does), the webhook server in-process reading its certificate
from a directory that a stand-in kubelet fills from the Secret (atomically, with a delay,
the way a Secret volume is updated), the :class:`CertificateRotator` as the installed
ServiceAccount, and a loop creating ReadWriteMany claims throughout. ``failurePolicy:
Ignore`` would hide a failed call, so "every claim was rewritten" is the proof that no
admission call failed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client
from tls_helpers import served_certificate_expiry

from vsphere_kale.cli import main
from vsphere_kale.controlplane.config import free_port
from vsphere_kale.install import certs, rotation
from vsphere_kale.install.rotator import CertificateRotator
from vsphere_kale.kube import Kube
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import Settings, StorageSettings
from vsphere_kale.webhook.server import WebhookServer

NS = "vsphere-kale"
DNS = certs.service_dns_names("vsphere-kale", NS)


class Kubelet:
    """Projects the Secret into a directory like the kubelet's AtomicWriter: files are links
    into ``..data``, which is swapped in one rename, ``delay`` seconds after a change."""

    def __init__(self, api: client.ApiClient, directory: Path, *, delay: float) -> None:
        self.core = client.CoreV1Api(api)
        self.dir = directory
        self.delay = delay
        self.dir.mkdir(parents=True, exist_ok=True)
        self.synced_version = ""
        self._stop = threading.Event()
        self.sync()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sync(self) -> None:
        secret = self.core.read_namespaced_secret("vsphere-kale-tls", NS)
        version = secret.metadata.resource_version
        if version == self.synced_version:
            return
        target = self.dir / f"..{version}"
        target.mkdir()
        for key, value in secret.data.items():
            (target / key).write_bytes(base64.b64decode(value))
        tmp_link = self.dir / "..data_tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(target.name, tmp_link)
        os.replace(tmp_link, self.dir / "..data")
        for key in secret.data:
            link = self.dir / key
            if not link.is_symlink():
                os.symlink(f"..data/{key}", link)
        self.synced_version = version

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            secret = self.core.read_namespaced_secret("vsphere-kale-tls", NS)
            if secret.metadata.resource_version != self.synced_version:
                time.sleep(self.delay)
                self.sync()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class ClaimLoop:
    """Creates RWX claims without a class until stopped; records every outcome."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.names: list[str] = []
        self.times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"claim-{i}"
            i += 1
            body = {
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            try:
                self.core.create_namespaced_persistent_volume_claim(self.namespace, body)
                self.names.append(name)
                self.times.append(time.monotonic())
            except client.ApiException as exc:
                self.errors.append(f"{name}: {exc.status} {exc.reason}")
            time.sleep(0.03)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.names) < count:
            assert time.monotonic() < deadline, (len(self.names), self.errors)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


@pytest.fixture
def installed(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> Iterator[tuple[RunningSandbox, WebhookServer, Kubelet, client.ApiClient]]:
    port = free_port()
    running = sandbox_factory(
        authorization=True,
        seed="kubeflow-demo",
        service_map={f"{NS}/vsphere-kale:443": f"127.0.0.1:{port}"},
    )
    done = CliRunner().invoke(
        main,
        [
            "install",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "--rwx-storage-class",
            "nfs-client",
        ],
    )
    assert done.exit_code == 0, done.output
    admin = running.api_client()
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        "vsphere-kale", NS, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    )
    as_sa = running.api_client(str(token.status.token))
    kubelet = Kubelet(admin, tmp_path / "tls", delay=0.5)
    server = WebhookServer(
        Settings(storage=StorageSettings(rwx_storage_class="nfs-client")),
        cert_file=tmp_path / "tls" / "tls.crt",
        key_file=tmp_path / "tls" / "tls.key",
        address="127.0.0.1",
        port=port,
        reload_interval=0.2,
    )
    loop = LoopThread()
    loop.run(server.start())
    try:
        yield running, server, kubelet, as_sa
    finally:
        kubelet.stop()
        loop.run(server.stop(drain_timeout=2.0))
        loop.close()


def _set_near_expiry_ca(admin: client.ApiClient, *, days: int) -> bytes:
    """Replace the installed CA with one that expires in ``days`` (bundle and Secret)."""
    ca_cert, ca_key = certs.build_ca("old-ca", days=days)
    tls_cert, tls_key = certs.build_serving_cert(ca_cert, ca_key, dns_names=DNS, days=days)
    core = client.CoreV1Api(admin)
    secret = core.read_namespaced_secret("vsphere-kale-tls", NS)
    secret.data = {
        k: base64.b64encode(v).decode()
        for k, v in {
            "ca.crt": ca_cert,
            "ca.key": ca_key,
            "tls.crt": tls_cert,
            "tls.key": tls_key,
        }.items()
    }
    core.replace_namespaced_secret("vsphere-kale-tls", NS, secret)
    client.AdmissionregistrationV1Api(admin).patch_mutating_webhook_configuration(
        "vsphere-kale",
        [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
          "value": base64.b64encode(ca_cert).decode()}],
        _content_type="application/json-patch+json",
    )  # fmt: skip
    return ca_cert


def _bundle(admin: client.ApiClient) -> bytes:
    hooks = client.AdmissionregistrationV1Api(admin).read_mutating_webhook_configuration(
        "vsphere-kale"
    )
    return base64.b64decode(hooks.webhooks[0].client_config.ca_bundle)


def test_an_expiring_ca_is_rolled_over_without_a_failed_admission_call(
    installed: tuple[RunningSandbox, WebhookServer, Kubelet, client.ApiClient],
) -> None:
    running, server, kubelet, as_sa = installed
    admin = running.api_client()
    # Given: a CA with 10 days left, served by the webhook
    old_ca = _set_near_expiry_ca(admin, days=10)
    kubelet.sync()
    deadline = time.monotonic() + 5
    while served_certificate_expiry(server.port) > dt.datetime.now(dt.timezone.utc) + dt.timedelta(
        days=11
    ):
        assert time.monotonic() < deadline, "the webhook did not load the old certificate"
        time.sleep(0.05)
    claims = ClaimLoop(admin, "alice")
    # The rotator's clock: real time plus what the test skips (the grace period).
    skipped = [dt.timedelta(0)]
    rotator = CertificateRotator(
        Kube(as_sa),
        namespace=NS,
        grace=dt.timedelta(seconds=3),
        publish_settle=0.3,
        clock=lambda: dt.datetime.now(dt.timezone.utc) + skipped[0],
    )
    try:
        claims.wait_for(2)
        # When: the leader rotates (as the installed ServiceAccount, real RBAC)
        marks = [time.monotonic()]
        first = rotator.run_once()
        marks.append(time.monotonic())
        assert rotator.status.steps == ["stage-ca", "publish-ca", "promote-ca"]
        assert first.action == "ok" and "rollover in progress" in first.reason
        assert len(rotation.parse_bundle(_bundle(admin))) == 2  # old + new, for now
        # ...replicas reload within the grace period (the webhook serves the new CA's
        # certificate while claims keep being admitted); once the grace has passed on the
        # rotator's clock, a later run drops the old CA.
        in_grace = len(claims.names)
        deadline = time.monotonic() + 10
        while served_certificate_expiry(server.port) < dt.datetime.now(
            dt.timezone.utc
        ) + dt.timedelta(days=300):
            assert time.monotonic() < deadline, "the webhook did not load the new certificate"
            time.sleep(0.05)
        claims.wait_for(in_grace + 3)
        early = rotator.run_once()
        assert rotator.status.steps == [] and early.action == "ok", rotator.status.steps
        skipped[0] = rotator.grace + dt.timedelta(seconds=1)
        marks.append(time.monotonic())
        second = rotator.run_once()
        marks.append(time.monotonic())
        assert rotator.status.steps == ["drop-old-ca"], rotator.status.steps
        assert second.action == "ok"
        claims.wait_for(len(claims.names) + 3)
    finally:
        claims.stop()

    # Then: the webhook serves a certificate of the new CA, which alone is trusted...
    assert served_certificate_expiry(server.port) > dt.datetime.now(dt.timezone.utc) + dt.timedelta(
        days=300
    )
    (trusted,) = rotation.parse_bundle(_bundle(admin))
    assert trusted.public_bytes(rotation.serialization.Encoding.PEM) != old_ca
    secret = client.CoreV1Api(admin).read_namespaced_secret("vsphere-kale-tls", NS)
    assert rotation.ROLLOVER_ANNOTATION not in (secret.metadata.annotations or {})
    assert set(secret.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    # ...and no admission call failed during the rollover: every claim was rewritten.
    assert claims.errors == []
    # Claims were created before, during each step and the grace period, and after the drop.
    windows = [0.0, *marks, float("inf")]
    per_window = [sum(a <= t < b for t in claims.times) for a, b in itertools.pairwise(windows)]
    before, _, grace, _, after = per_window
    assert min(before, grace, after) > 0, per_window
    stored = client.CoreV1Api(admin).list_namespaced_persistent_volume_claim("alice").items
    classes = {
        p.metadata.name: p.spec.storage_class_name
        for p in stored
        if p.metadata.name.startswith("claim-")
    }
    assert set(classes) == set(claims.names)
    assert set(classes.values()) == {"nfs-client"}, {
        k: v for k, v in classes.items() if v != "nfs-client"
    }


def test_an_expiring_serving_certificate_is_renewed_from_the_same_ca(
    installed: tuple[RunningSandbox, WebhookServer, Kubelet, client.ApiClient],
) -> None:
    running, _, _, as_sa = installed
    admin = running.api_client()
    core = client.CoreV1Api(admin)
    secret = core.read_namespaced_secret("vsphere-kale-tls", NS)
    ca_cert = base64.b64decode(secret.data["ca.crt"])
    tls_cert, tls_key = certs.build_serving_cert(
        ca_cert, base64.b64decode(secret.data["ca.key"]), dns_names=DNS, days=5
    )
    secret.data["tls.crt"] = base64.b64encode(tls_cert).decode()
    secret.data["tls.key"] = base64.b64encode(tls_key).decode()
    core.replace_namespaced_secret("vsphere-kale-tls", NS, secret)
    bundle_before = _bundle(admin)

    plan = CertificateRotator(Kube(as_sa), namespace=NS).run_once()

    assert plan.action == "ok"
    assert _bundle(admin) == bundle_before  # the CA did not change: nothing to publish
    renewed = core.read_namespaced_secret("vsphere-kale-tls", NS)
    assert base64.b64decode(renewed.data["ca.crt"]) == ca_cert
    renewed_until = certs.not_after(base64.b64decode(renewed.data["tls.crt"]))
    assert renewed_until > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)


def test_the_loop_rotates_when_leadership_starts_and_not_before(
    installed: tuple[RunningSandbox, WebhookServer, Kubelet, client.ApiClient],
) -> None:
    running, _, _, as_sa = installed
    admin = running.api_client()
    _set_near_expiry_ca(admin, days=10)
    leading = threading.Event()
    asked: list[bool] = []

    def is_leader() -> bool:
        asked.append(leading.is_set())
        return asked[-1]

    rotator = CertificateRotator(
        Kube(as_sa), namespace=NS, is_leader=is_leader, leader_poll=0.1, publish_settle=0
    )
    rotator.start()
    try:
        # A follower asks whether it leads, again and again, and never writes.
        deadline = time.monotonic() + 10
        while len(asked) < 3:
            assert time.monotonic() < deadline, "the loop never asked for leadership"
            time.sleep(0.02)
        assert rotator.status.last_run is None
        leading.set()
        deadline = time.monotonic() + 10
        while rotator.status.last_run is None:
            assert time.monotonic() < deadline, rotator.status
            time.sleep(0.05)
    finally:
        rotator.stop()
    assert rotator.status.steps == ["stage-ca", "publish-ca", "promote-ca"]
    assert rotator.status.error is None


def test_rotation_without_the_secret_rule_is_forbidden(
    installed: tuple[RunningSandbox, WebhookServer, Kubelet, client.ApiClient],
) -> None:
    """The Role's secrets rule is necessary: without it the rotator's write is a 403."""
    from vsphere_kale.errors import KubeForbidden

    running, _, _, as_sa = installed
    admin = running.api_client()
    _set_near_expiry_ca(admin, days=10)
    rbac = client.RbacAuthorizationV1Api(admin)
    role = rbac.read_namespaced_role("vsphere-kale", NS)
    role.rules = [r for r in role.rules if r.resources != ["secrets"]]
    rbac.replace_namespaced_role("vsphere-kale", NS, role)

    with pytest.raises(KubeForbidden, match="secret"):
        CertificateRotator(Kube(as_sa), namespace=NS, publish_settle=0).run_once()


def test_serve_rotates_an_expiring_ca_when_it_takes_the_lead(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    """The same rollover, done by `vsphere-kale serve` itself (as the installed SA) when its
    replica becomes the leader, while it keeps answering admission calls."""
    import subprocess
    import sys

    port = free_port()
    running = sandbox_factory(
        authorization=True,
        seed="kubeflow-demo",
        service_map={f"{NS}/vsphere-kale:443": f"127.0.0.1:{port}"},
    )
    done = CliRunner().invoke(
        main,
        [
            "install",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "--rwx-storage-class",
            "nfs-client",
        ],
    )
    assert done.exit_code == 0, done.output
    admin = running.api_client()
    old_ca = _set_near_expiry_ca(admin, days=10)
    kubelet = Kubelet(admin, tmp_path / "tls", delay=0.5)
    core = client.CoreV1Api(admin)
    (tmp_path / "config.yaml").write_text(
        core.read_namespaced_config_map("vsphere-kale-config", NS).data["config.yaml"]
    )
    token = core.create_namespaced_service_account_token(
        "vsphere-kale", NS, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    ).status.token
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "vsphere_kale.cli", "-v", "serve",
             "--kubeconfig", str(running.kubeconfig_for(token, user="vsphere-kale")),
             "--config", str(tmp_path / "config.yaml"),
             "--cert-file", str(tmp_path / "tls" / "tls.crt"),
             "--key-file", str(tmp_path / "tls" / "tls.key"),
             "--address", "127.0.0.1", "--port", str(port), "--identity", "replica-0",
             "--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.3"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        claims: ClaimLoop | None = None
        try:
            # When: serve starts, takes the Lease, and its leader checks the certificates
            deadline = time.monotonic() + 60
            while len(rotation.parse_bundle(_bundle(admin))) < 2:
                assert serve.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                if claims is None and "serving HTTPS" in log_path.read_text():
                    claims = ClaimLoop(admin, "alice")
                time.sleep(0.1)
            if claims is None:
                claims = ClaimLoop(admin, "alice")
            # Then: the Secret moves to a certificate of the new CA (the old CA stays trusted
            # for the grace period) and serve's replica reloads it...
            while (
                base64.b64decode(core.read_namespaced_secret("vsphere-kale-tls", NS).data["ca.crt"])
                == old_ca
            ):
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
            while "loaded a new serving certificate" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
            claims.wait_for(len(claims.names) + 3)
        finally:
            if claims is not None:
                claims.stop()
            serve.terminate()
            serve.wait(20)
            kubelet.stop()
    # ...and no admission call failed meanwhile.
    assert claims is not None and claims.errors == [] and len(claims.names) > 5
    stored = core.list_namespaced_persistent_volume_claim("alice").items
    classes = {p.spec.storage_class_name for p in stored if p.metadata.name.startswith("claim-")}
    assert classes == {"nfs-client"}
    text = log_path.read_text()
    assert "certificate rotation: promote-ca" in text, text[-3000:]
    assert "orbidden" not in text
