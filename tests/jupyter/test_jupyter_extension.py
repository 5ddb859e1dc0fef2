"""The Jupyter server extension through a real in-process Jupyter server (pytest-jupyter).

The server runs like Kubeflow runs it: no token (``ServerApp.token = ""``), so POSTs must carry
Jupyter's XSRF pair, exactly what the widget has to get right in a notebook pod.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tornado.httpclient import HTTPResponse

from vsphere_kale.errors import (
    ConfigError,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    VsphereKaleError,
)
from vsphere_kale.jupyter.admin_client import AdminApiError, AdminApiUnavailable
from vsphere_kale.jupyter.app import VsphereKaleApp
from vsphere_kale.jupyter.handlers import http_error
from vsphere_kale.playground.system import LocalSystem
from vsphere_kale.sandbox.testing import RunningSandbox

pytest_plugins = ["pytest_jupyter.jupyter_server"]

Fetch = Callable[..., Any]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def admin_url() -> str:
    return f"http://127.0.0.1:{closed_port()}"


@pytest.fixture
def kubeconfig() -> str:
    return "/nonexistent/kubeconfig"


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    """Absent unless a test writes it: no identity, so the admin API is not even asked."""
    return str(tmp_path / "token")


@pytest.fixture
def jp_server_config(admin_url: str, kubeconfig: str, token_file: str) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}, "token": ""},
        "VsphereKaleApp": {
            "admin_url": admin_url,
            "namespace": "alice",
            "token_file": token_file,
            "kubeconfig": kubeconfig,
            "timeout": 2.0,
        },
    }


@pytest.fixture
def jp_auth_header() -> dict[str, str]:
    # Kubeflow-style server: no token, the browser is authenticated by the login cookie.
    return {}


def body(response: HTTPResponse) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


def xsrf_cookie(response: HTTPResponse) -> str:
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == "_xsrf":
            return rest.split(";", 1)[0]
    raise AssertionError("no _xsrf cookie set by GET status")


def test_installed_config_enables_the_extension() -> None:
    jupyter = shutil.which("jupyter")
    assert jupyter is not None
    out = subprocess.run(
        [jupyter, "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert re.search(r"^\s*vsphere_kale\.jupyter enabled$", text, re.M), text
    # Validation imports the module and finds its extension point ("OK", not "X").
    assert re.search(r"^\s*vsphere_kale\.jupyter\s+OK$", text, re.M), text


def test_traits_reject_bad_values() -> None:
    with pytest.raises(Exception, match="not an http"):
        VsphereKaleApp(admin_url="vsphere-kale.svc")
    with pytest.raises(Exception, match="must be positive"):
        VsphereKaleApp(timeout=0)


def test_traits_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSPHERE_KALE_ADMIN_URL", "https://127.0.0.1:8443")
    monkeypatch.setenv("VSPHERE_KALE_NAMESPACE", "bob")
    monkeypatch.setenv("VSPHERE_KALE_TIMEOUT", "1.5")
    app = VsphereKaleApp()
    assert (app.admin_url, app.namespace, app.timeout) == ("https://127.0.0.1:8443", "bob", 1.5)
    monkeypatch.delenv("VSPHERE_KALE_ADMIN_URL")
    monkeypatch.delenv("VSPHERE_KALE_NAMESPACE")
    app = VsphereKaleApp()
    assert app.admin_url == "https://vsphere-kale.vsphere-kale.svc:8444"
    assert app.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert app.namespace_file == "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


async def test_post_without_xsrf_pair_is_refused_with_a_sentence(jp_fetch: Fetch) -> None:
    response = await jp_fetch(
        "vsphere-kale", "api", "reconcile", method="POST", body="{}", raise_error=False
    )
    assert response.code == 403
    error = body(response)
    assert error["kind"] == "Status" and error["reason"] == "Forbidden"
    assert "X-XSRFToken" in error["message"]


async def test_post_with_xsrf_pair_and_no_admin_api_says_reconcile_needs_it(
    jp_fetch: Fetch, admin_url: str
) -> None:
    # Given the _xsrf cookie from a GET (status fails: no sandbox here, and that is fine)
    first = await jp_fetch("vsphere-kale", "api", "status", raise_error=False)
    cookie = xsrf_cookie(first)
    # When the POST echoes it
    response = await jp_fetch(
        "vsphere-kale",
        "api",
        "reconcile",
        method="POST",
        body="{}",
        headers={"Cookie": f"_xsrf={cookie}", "X-XSRFToken": cookie},
        raise_error=False,
    )
    # Then XSRF passes and the answer explains why nothing can be repaired
    assert response.code == 503
    message = body(response)["message"]
    assert message.startswith("cannot reconcile alice:")
    assert "admin API" in message


async def test_both_paths_failing_is_one_503_sentence(jp_fetch: Fetch) -> None:
    response = await jp_fetch("vsphere-kale", "api", "status", raise_error=False)
    assert response.code == 503
    error = body(response)
    assert error["reason"] == "ServiceUnavailable"
    assert "no service-account token" in error["message"]
    assert "the local read-only status failed too" in error["message"]
    assert "Traceback" not in error["message"]


@pytest.fixture
def no_namespace_config(jp_server_config: dict[str, Any], tmp_path: Path) -> Iterator[None]:
    jp_server_config["VsphereKaleApp"]["namespace"] = ""
    jp_server_config["VsphereKaleApp"]["namespace_file"] = str(tmp_path / "absent")
    yield


async def test_unknown_namespace_names_the_trait(
    no_namespace_config: None, jp_fetch: Fetch
) -> None:
    response = await jp_fetch("vsphere-kale", "api", "status", raise_error=False)
    assert response.code == 503
    assert "c.VsphereKaleApp.namespace" in body(response)["message"]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """Sandbox (psp, kubeflow-demo, RBAC on) + install + serve, shared by this module's
    admin-API tests: they only read, or reconcile (idempotent)."""
    with LocalSystem(tmp_path_factory.mktemp("system")) as running:
        yield running


class TestLocalFallback:
    """The admin API is down: status under the notebook's own credentials, read-only."""

    @pytest.fixture(params=["admin", "alice"])
    def identity(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def kubeconfig(self, sandbox_factory: Callable[..., RunningSandbox], identity: str) -> str:
        running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
        if identity == "admin":
            return str(running.kubeconfig_path)
        return str(running.kubeconfig_for(running.tokens[identity], user=identity))

    @pytest.fixture
    def token_file(self, tmp_path: Path) -> str:
        path = tmp_path / "token"
        path.write_text("some-service-account-token\n")
        return str(path)

    async def test_unreachable_admin_api_gives_a_local_read_only_status(
        self, jp_fetch: Fetch, admin_url: str, identity: str
    ) -> None:
        response = await jp_fetch("vsphere-kale", "api", "status")
        status = body(response)
        assert status["kind"] == "NamespaceStatus" and status["namespace"] == "alice"
        assert status["source"] == "local"
        assert status["canReconcile"] is False
        assert admin_url in status["fallbackReason"] and "unreachable" in status["fallbackReason"]
        # The seed's alice: the marshal claim, and the Kale 2 notebook's RWO raw-data claim.
        assert [p["name"] for p in status["pvcs"]] == ["raw-data", "wf-1-kale-marshal-pvc"]
        pvc = status["pvcs"][1]
        assert pvc["name"] == "wf-1-kale-marshal-pvc" and pvc["kaleMarshal"] is True
        assert status["overall"] == "broken"
        if identity == "admin":
            # Sees storage classes and bindings: the full diagnosis.
            assert pvc["verdict"] == "rwx-on-block-class"
            assert status["podSecurity"]["verdict"] == "missing"  # no reconciler ran
        else:
            # A profile owner cannot read StorageClasses or Profiles: what it can see,
            # with sentences saying what it cannot.
            assert pvc["verdict"] == "pending"
            assert "File volume not supported" in pvc["message"]
            assert status["webhook"]["verdict"] == "unknown"
            assert "may not get" in status["webhook"]["message"]


def extension_config(
    system: LocalSystem, token_file: Path, *, identity: str, namespace: str = "alice"
) -> dict[str, Any]:
    """A Kubeflow-style Jupyter server whose notebook identity is ``identity``'s token."""
    assert system.running is not None
    token_file.write_text(system.running.tokens[identity])
    traits = {
        **system.jupyter_traits(),
        "token_file": str(token_file),
        "namespace": namespace,
    }
    return {
        "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}, "token": ""},
        "VsphereKaleApp": traits,
    }


async def post_reconcile(jp_fetch: Fetch) -> HTTPResponse:
    """GET for the _xsrf cookie, then POST with the cookie + header pair, as the widget does."""
    cookie = xsrf_cookie(await jp_fetch("vsphere-kale", "api", "status", raise_error=False))
    response: HTTPResponse = await jp_fetch(
        "vsphere-kale",
        "api",
        "reconcile",
        method="POST",
        body="{}",
        headers={"Cookie": f"_xsrf={cookie}", "X-XSRFToken": cookie},
        raise_error=False,
    )
    return response


class TestAsProfileOwner:
    @pytest.fixture
    def jp_server_config(self, system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
        return extension_config(system, tmp_path / "token", identity="alice")

    async def test_status_comes_from_the_admin_api(self, jp_fetch: Fetch) -> None:
        status = body(await jp_fetch("vsphere-kale", "api", "status"))
        assert status["source"] == "admin-api", status.get("fallbackReason")
        assert status["namespace"] == "alice"
        assert status["canReconcile"] is True  # alice owns her profile
        assert "fallbackReason" not in status
        # The seed's alice: the marshal claim, and the Kale 2 notebook's RWO raw-data claim.
        assert [p["name"] for p in status["pvcs"]] == ["raw-data", "wf-1-kale-marshal-pvc"]
        pvc = status["pvcs"][1]
        assert (pvc["name"], pvc["verdict"]) == ("wf-1-kale-marshal-pvc", "rwx-on-block-class")
        assert "nfs-client" in pvc["hint"]
        assert status["podSecurity"]["mode"] == "psp"
        assert status["webhook"]["verdict"] == "ok"

    async def test_reconcile_with_the_xsrf_pair_returns_the_result(self, jp_fetch: Fetch) -> None:
        response = await post_reconcile(jp_fetch)
        assert response.code == 200, response.body
        result = body(response)
        assert result["kind"] == "ReconcileResult"
        (item,) = result["results"]
        assert item["namespace"] == "alice"
        assert item["outcome"] in ("ok", "created", "repaired")
        assert item["message"]

    async def test_token_file_is_re_read_on_every_call(
        self, jp_fetch: Fetch, system: LocalSystem, tmp_path: Path
    ) -> None:
        assert body(await jp_fetch("vsphere-kale", "api", "status"))["canReconcile"] is True
        # Given the projected token rotates to another identity (here: a viewer of alice)
        assert system.running is not None
        (tmp_path / "token").write_text(system.running.tokens["viewer"])
        # Then the next call is made as that identity
        status = body(await jp_fetch("vsphere-kale", "api", "status"))
        assert status["source"] == "admin-api"
        assert status["canReconcile"] is False

    async def test_admin_api_5xx_falls_back_to_local(
        self, jp_fetch: Fetch, system: LocalSystem, tmp_path: Path
    ) -> None:
        # Given TokenReview fails, so the admin API answers 503 (it never allows by default),
        # for a token the admin API has not cached yet (a fresh one of alice's notebook SA).
        assert system.running is not None
        fresh = client.CoreV1Api(
            system.running.api_client()
        ).create_namespaced_service_account_token(
            "default-editor", "alice", {"spec": {"expirationSeconds": 3600}}
        )
        (tmp_path / "token").write_text(fresh.status.token)
        system.running.sandbox.faults.inject(verb="create", resource="tokenreviews", count=5)
        try:
            status = body(await jp_fetch("vsphere-kale", "api", "status"))
        finally:
            system.running.sandbox.faults.clear()
        assert status["source"] == "local"
        assert "TokenReview" in status["fallbackReason"]
        assert status["canReconcile"] is False
        assert status["pvcs"][1]["name"] == "wf-1-kale-marshal-pvc"


class TestAsViewer:
    """kubeflow-view in alice: may read the status, not reconcile."""

    @pytest.fixture
    def jp_server_config(self, system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
        return extension_config(system, tmp_path / "token", identity="viewer")

    async def test_status_without_reconcile(self, jp_fetch: Fetch) -> None:
        status = body(await jp_fetch("vsphere-kale", "api", "status"))
        assert status["source"] == "admin-api"
        assert status["canReconcile"] is False

    async def test_reconcile_403_is_passed_through(self, jp_fetch: Fetch) -> None:
        response = await post_reconcile(jp_fetch)
        # The admin API's answer, not a local fallback: the user must learn what is missing.
        assert response.code == 403
        error = body(response)
        assert error["kind"] == "Status" and error["reason"] == "Forbidden"
        assert "reconciles" in error["message"]


class TestOtherNamespace:
    @pytest.fixture
    def jp_server_config(self, system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
        return extension_config(system, tmp_path / "token", identity="alice", namespace="bob")

    async def test_status_of_someone_elses_namespace_is_403(self, jp_fetch: Fetch) -> None:
        response = await jp_fetch("vsphere-kale", "api", "status", raise_error=False)
        assert response.code == 403
        assert "bob" in body(response)["message"]


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (AdminApiError("no", code=401, reason="Unauthorized"), 401, "Unauthorized"),
        (AdminApiError("no", code=403, reason="Forbidden"), 403, "Forbidden"),
        (AdminApiUnavailable("down"), 503, "ServiceUnavailable"),
        (ConfigError("c.VsphereKaleApp.namespace", "not set"), 503, "ServiceUnavailable"),
        (KubeUnavailable("down", status=500), 503, "ServiceUnavailable"),
        (KubeForbidden("may not list pvcs", status=403), 403, "Forbidden"),
        (KubeNotFound("namespace alice not found", status=404), 404, "NotFound"),
        (KubeError("cannot load kubeconfig"), 503, "ServiceUnavailable"),
        (KubeError("odd answer", status=422), 502, "BadGateway"),
    ],
)
def test_domain_errors_map_to_http_codes(error: VsphereKaleError, code: int, reason: str) -> None:
    http = http_error(error)
    assert (http.status_code, http.reason) == (code, reason)
    assert http.log_message % http.args == str(error)
