"""The admin API over real TLS, authenticated and authorized by the sandbox's real RBAC.

Most tests mount the admin routes on the webhook's HTTPS server (:class:`WebhookServer`, as
``serve`` does) in-process, running as the ``vsphere-kale`` ServiceAccount bound to the
ClusterRole in ``deploy/base/rbac.yaml``, so they also prove the shipped RBAC is enough. The
last test goes through a real ``vsphere-kale serve`` process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client

from vsphere_kale.controlplane.config import free_port
from vsphere_kale.health.adminapi import ReconcilerLike, ResultLike, build_admin_routes
from vsphere_kale.install.certs import build_cert_bundle, write_cert_files
from vsphere_kale.kube import Kube
from vsphere_kale.playground import seed
from vsphere_kale.reconcile.reconciler import reconcile_once
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import Settings, StorageSettings
from vsphere_kale.webhook.server import WebhookServer

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(storage=StorageSettings(rwx_storage_class="nfs-client"))
SERVICE_NS = "vsphere-kale"


# --- the service's identity: the shipped RBAC ---------------------------------------------------


def apply_manifest(api: client.ApiClient, path: Path) -> None:
    """Create the RBAC objects of one deploy/ file (the kinds these files hold)."""
    rbac = client.RbacAuthorizationV1Api(api)
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        kind = doc["kind"]
        ns = doc["metadata"].get("namespace")
        if kind == "ClusterRole":
            rbac.create_cluster_role(doc)
        elif kind == "ClusterRoleBinding":
            rbac.create_cluster_role_binding(doc)
        elif kind == "Role":
            rbac.create_namespaced_role(ns, doc)
        elif kind == "RoleBinding":
            rbac.create_namespaced_role_binding(ns, doc)
        else:
            raise AssertionError(f"unexpected kind {kind} in {path}")


def service_token(running: RunningSandbox) -> str:
    """A token of system:serviceaccount:vsphere-kale:vsphere-kale, with the shipped RBAC."""
    admin = running.api_client()
    core = client.CoreV1Api(admin)
    try:
        core.create_namespace({"metadata": {"name": SERVICE_NS}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    core.create_namespaced_service_account(SERVICE_NS, {"metadata": {"name": "vsphere-kale"}})
    apply_manifest(admin, REPO / "deploy/base/rbac.yaml")
    apply_manifest(admin, REPO / "deploy/base/reconciler-clusterrole.yaml")
    token = core.create_namespaced_service_account_token(
        "vsphere-kale", SERVICE_NS, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    return str(token)


def service_client(running: RunningSandbox) -> Kube:
    """A client authenticated as the vsphere-kale ServiceAccount."""
    return Kube(running.api_client(service_token(running)))


# --- a reconciler that implements the protocol --------------------------------------------------


@dataclass
class OneShotReconciler:
    """Implements :class:`ReconcilerLike` with the reconciler's real one-shot path
    (:func:`vsphere_kale.reconcile.reconciler.reconcile_once`, what a follower replica runs),
    recording
    which namespaces it was asked for."""

    kube: Kube
    mode: str = "psp"

    def __post_init__(self) -> None:
        self.calls: list[str] = []

    def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> ResultLike:
        self.calls.append(namespace)
        _, results = reconcile_once(self.kube, SETTINGS, namespaces=[namespace])
        return results[0]

    def reconcile_all(self, *, timeout: float = 30.0) -> Sequence[ResultLike]:
        self.calls.append("*")
        return reconcile_once(self.kube, SETTINGS)[1]


# --- the HTTPS server ---------------------------------------------------------------------------


class AdminServer:
    """WebhookServer + admin routes on 127.0.0.1, on its own event loop thread."""

    def __init__(self, routes: list[Any], cert_dir: Path) -> None:
        bundle = build_cert_bundle("vsphere-kale", SERVICE_NS, extra_sans=["127.0.0.1"])
        write_cert_files(cert_dir, bundle, force=True)
        self.ca_file = str(cert_dir / "ca.crt")
        self.server = WebhookServer(
            SETTINGS,
            cert_file=cert_dir / "tls.crt",
            key_file=cert_dir / "tls.key",
            address="127.0.0.1",
            port=0,
            extra_handlers=routes,
        )
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "admin server did not start"
        self.url = f"https://127.0.0.1:{self.server.port}"
        self.http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=self.ca_file)

    def call(
        self, method: str, path: str, *, token: str | None = None
    ) -> tuple[int, dict[str, Any], urllib3.HTTPHeaderDict]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        # retries=False: urllib3 would retry a 503/429 carrying Retry-After by itself.
        response = self.http.request(
            method, self.url + path, headers=headers, timeout=20, retries=False
        )
        return response.status, json.loads(response.data), response.headers

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(drain_timeout=2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.http.clear()


@dataclass
class Cluster:
    running: RunningSandbox
    server: AdminServer
    reconciler: OneShotReconciler

    def token(self, user: str) -> str:
        return self.running.tokens[user]


@pytest.fixture
def cluster(sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path) -> Iterator[Cluster]:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
    api = service_client(running)
    reconciler = OneShotReconciler(api)
    routes = build_admin_routes(kube=api, settings=SETTINGS, reconciler=reconciler)
    server = AdminServer(routes, tmp_path / "certs")
    yield Cluster(running, server, reconciler)
    server.stop()


def _protocol_check(r: OneShotReconciler) -> ReconcilerLike:
    return r  # mypy: the stand-in implements the protocol the admin API asks for


# --- authentication -----------------------------------------------------------------------------


def test_no_token_is_401_with_challenge(cluster: Cluster) -> None:
    code, body, headers = cluster.server.call("GET", "/api/v1/namespaces/alice/status")

    assert code == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert "bearer token" in body["message"].lower()


def test_invalid_token_is_401(cluster: Cluster) -> None:
    code, body, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/alice/status", token="not-a-token"
    )

    assert code == 401
    assert body["message"] == "The bearer token is not valid."
    assert "not-a-token" not in json.dumps(body)


def test_tokenreview_failing_is_503_never_allowed(cluster: Cluster) -> None:
    cluster.running.sandbox.faults.inject(
        verb="create", resource="tokenreviews", status=500, count=1
    )

    code, body, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/alice/status", token=cluster.token("alice")
    )

    assert code == 503
    assert body["reason"] == "ServiceUnavailable"
    assert "TokenReview" in body["message"]


def test_subjectaccessreview_failing_is_503(cluster: Cluster) -> None:
    cluster.running.sandbox.faults.inject(
        verb="create", resource="subjectaccessreviews", status=500, count=2
    )

    code, body, _ = cluster.server.call(
        "POST", "/api/v1/namespaces/alice/reconcile", token=cluster.token("alice")
    )

    assert code == 503
    assert "SubjectAccessReview" in body["message"]
    assert cluster.reconciler.calls == []


def test_tokenreview_answer_is_cached(cluster: Cluster) -> None:
    token = cluster.token("alice")
    assert cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=token)[0] == 200
    # A failing TokenReview no longer matters within the cache window.
    cluster.running.sandbox.faults.inject(
        verb="create", resource="tokenreviews", status=500, count=1
    )

    code, _, _ = cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=token)

    assert code == 200
    assert cluster.running.sandbox.faults.fired == 0


def test_tokens_never_reach_the_logs(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "not-a-token-0123456789"

    cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=secret)
    cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=cluster.token("alice"))
    cluster.running.sandbox.faults.inject(
        verb="create", resource="tokenreviews", status=500, count=1
    )
    cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=cluster.token("bob"))

    assert any(r.name.startswith("vsphere_kale.health.adminapi") for r in caplog.records)
    text = caplog.text
    for token in (secret, cluster.token("alice"), cluster.token("bob")):
        assert token not in text


# --- authorization matrix -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "method", "path", "code"),
    [
        ("alice", "GET", "/api/v1/namespaces/alice/status", 200),
        ("alice", "POST", "/api/v1/namespaces/alice/reconcile", 200),
        ("alice", "GET", "/api/v1/namespaces/bob/status", 403),
        ("alice", "POST", "/api/v1/namespaces/bob/reconcile", 403),
        ("alice", "POST", "/api/v1/reconcile", 403),
        ("viewer", "GET", "/api/v1/namespaces/alice/status", 200),
        ("viewer", "POST", "/api/v1/namespaces/alice/reconcile", 403),
        ("admin", "POST", "/api/v1/reconcile", 200),
    ],
)
def test_authorization_matrix(
    cluster: Cluster, user: str, method: str, path: str, code: int
) -> None:
    got, body, _ = cluster.server.call(method, path, token=cluster.token(user))

    assert got == code, body
    if code == 403:
        assert body["reason"] == "Forbidden"
        assert "may not" in body["message"]
        assert (
            "reconciles.vsphere-kale.io" in body["message"]
            or "persistentvolumeclaims" in body["message"]
        )
    if code == 200 and path.endswith("reconcile"):
        assert body["kind"] == "ReconcileResult"


def test_can_reconcile_reflects_the_caller(cluster: Cluster) -> None:
    _, owner, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/alice/status", token=cluster.token("alice")
    )
    _, viewer, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/alice/status", token=cluster.token("viewer")
    )

    assert owner["canReconcile"] is True
    assert viewer["canReconcile"] is False


def test_denied_reconcile_says_which_permission(cluster: Cluster) -> None:
    _, body, _ = cluster.server.call(
        "POST", "/api/v1/namespaces/bob/reconcile", token=cluster.token("alice")
    )

    assert "may not create reconciles.vsphere-kale.io in namespace bob" in body["message"]
    assert cluster.reconciler.calls == []


# --- behaviour ----------------------------------------------------------------------------------


def test_status_of_seeded_alice(cluster: Cluster) -> None:
    code, doc, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/alice/status", token=cluster.token("alice")
    )

    assert code == 200
    assert doc["kind"] == "NamespaceStatus" and doc["source"] == "admin-api"
    marshal = [p for p in doc["pvcs"] if p["kaleMarshal"]]
    assert [p["name"] for p in marshal] == [seed.MARSHAL_PVC]
    assert marshal[0]["verdict"] == "rwx-on-block-class"
    assert seed.PROVISIONING_FAILED.rstrip(".") in marshal[0]["message"]
    assert doc["podSecurity"]["verdict"] == "missing"
    assert doc["overall"] == "broken"


def test_reconcile_repairs_then_status_is_ok(cluster: Cluster) -> None:
    token = cluster.token("alice")
    _, before, _ = cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=token)

    code, result, _ = cluster.server.call("POST", "/api/v1/namespaces/alice/reconcile", token=token)
    _, after, _ = cluster.server.call("GET", "/api/v1/namespaces/alice/status", token=token)

    assert before["podSecurity"]["verdict"] == "missing"
    assert code == 200
    assert [r["namespace"] for r in result["results"]] == ["alice"]
    assert result["results"][0]["outcome"] == "created"
    assert after["podSecurity"]["verdict"] == "ok"
    assert cluster.reconciler.calls == ["alice"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/Alice/status",
        "/api/v1/namespaces/a_b/status",
        "/api/v1/namespaces/-x/reconcile",
        "/api/v1/namespaces/" + "a" * 64 + "/status",
    ],
)
def test_bad_namespace_is_400(cluster: Cluster, path: str) -> None:
    method = "POST" if path.endswith("reconcile") else "GET"

    code, body, _ = cluster.server.call(method, path, token=cluster.token("alice"))

    assert code == 400
    assert "not a valid namespace name" in body["message"]


def test_missing_namespace_is_404(cluster: Cluster) -> None:
    code, body, _ = cluster.server.call(
        "GET", "/api/v1/namespaces/nobody/status", token=cluster.token("admin")
    )

    assert code == 404
    assert body["reason"] == "NotFound"
    assert "nobody" in body["message"]


def test_reconcile_without_a_reconciler_is_503(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    # Given serve running with podSecurity.mode: off (no reconciler)
    running = sandbox_factory(flavor="psa", seed="kubeflow-demo", authorization=True)
    api = service_client(running)
    routes = build_admin_routes(kube=api, settings=SETTINGS, reconciler=None)
    server = AdminServer(routes, tmp_path / "certs")
    try:
        code, body, _ = server.call(
            "POST", "/api/v1/namespaces/alice/reconcile", token=running.tokens["alice"]
        )
        status_code, status, _ = server.call(
            "GET", "/api/v1/namespaces/alice/status", token=running.tokens["alice"]
        )
    finally:
        server.stop()

    assert code == 503
    assert "reconciler is not running" in body["message"]
    assert status_code == 200
    assert status["podSecurity"]["mode"] == "psa"  # resolved by discovery, as configured


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "token abc"])
def test_malformed_authorization_is_401(cluster: Cluster, header: str) -> None:
    response = cluster.server.http.request(
        "POST",
        cluster.server.url + "/api/v1/reconcile",
        headers={"Authorization": header} if header else {},
        timeout=20,
    )

    assert response.status == 401
    assert json.loads(response.data)["reason"] == "Unauthorized"
    assert cluster.reconciler.calls == []


# --- through `vsphere-kale serve` ---------------------------------------------------------


class Serve:
    def __init__(self, running: RunningSandbox, tmp: Path) -> None:
        self.tokens = running.tokens
        token = service_token(running)
        kubeconfig = running.write_kubeconfig(tmp / "serve-kubeconfig", token=token, user="serve")
        bundle = build_cert_bundle("vsphere-kale", SERVICE_NS, extra_sans=["127.0.0.1"])
        write_cert_files(tmp / "certs", bundle, force=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vsphere_kale.cli",
                    "serve",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--cert-file",
                    str(tmp / "certs/tls.crt"),
                    "--key-file",
                    str(tmp / "certs/tls.key"),
                    "--address",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--rwx-storage-class",
                    "nfs-client",
                    "--identity",
                    "serve-test",
                    "--lease-duration",
                    "4",
                    "--renew-deadline",
                    "3",
                    "--retry-period",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=str(tmp / "certs/ca.crt")
        )
        # Python start-up and the reconciler's first sync; generous for a loaded CI machine.
        self.wait_ready(timeout=60)

    def wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                ready = self.http.request("GET", self.url + "/readyz", timeout=2, retries=False)
                if ready.status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def call(self, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            retries=False,
        )
        return response.status, json.loads(response.data)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve(sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path) -> Iterator[Serve]:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
    server = Serve(running, tmp_path)
    yield server
    server.stop()


def test_owner_sees_status_and_reconciles_through_serve(serve: Serve) -> None:
    alice = serve.tokens["alice"]

    code, before = serve.call("GET", "/api/v1/namespaces/alice/status", alice)
    denied, _ = serve.call("POST", "/api/v1/namespaces/bob/reconcile", alice)
    repaired, result = serve.call("POST", "/api/v1/namespaces/alice/reconcile", alice)
    _, after = serve.call("GET", "/api/v1/namespaces/alice/status", alice)

    assert code == 200
    assert before["canReconcile"] is True
    marshal = next(p for p in before["pvcs"] if p["name"] == seed.MARSHAL_PVC)
    assert marshal["verdict"] == "rwx-on-block-class"
    # serve's own reconciler (leader) may already have created alice's binding by now.
    assert before["podSecurity"]["mode"] == "psp"
    assert before["podSecurity"]["verdict"] in ("missing", "ok")
    assert denied == 403
    assert repaired == 200, result
    assert result["kind"] == "ReconcileResult"
    assert result["results"][0]["namespace"] == "alice"
    assert result["results"][0]["outcome"] in ("created", "ok")
    assert after["podSecurity"]["verdict"] == "ok"
