"""HealthPanel logic against a live Jupyter server (no browser).

The panel's HTTP client is blocking (a kernel has no spare event loop), so each click runs in a
worker thread while the in-process Jupyter server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vsphere_kale.jupyter.widget import HealthPanel
from vsphere_kale.jupyter.widget_client import JupyterHealthClient, ServerRef
from vsphere_kale.playground.system import LocalSystem

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    with LocalSystem(tmp_path_factory.mktemp("system")) as running:
        yield running


@pytest.fixture
def identity() -> str:
    return "alice"


@pytest.fixture
def jupyter_token() -> str:
    return ""  # Kubeflow-style: no token, cookies + XSRF pair


@pytest.fixture
def jp_server_config(
    system: LocalSystem, tmp_path: Path, jupyter_token: str, identity: str
) -> dict[str, Any]:
    assert system.running is not None
    token_file = tmp_path / "token"
    token_file.write_text(system.running.tokens[identity])
    return {
        "ServerApp": {
            "jpserver_extensions": {"vsphere_kale.jupyter": True},
            "token": jupyter_token,
        },
        "VsphereKaleApp": {**system.jupyter_traits(), "token_file": str(token_file)},
    }


@pytest.fixture
def server(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> ServerRef:
    """The live server's URL; ``http_server`` makes pytest-jupyter actually serve the port."""
    token = jp_serverapp.identity_provider.token
    return ServerRef(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)


async def test_refresh_renders_the_stuck_marshal_claim(server: ServerRef) -> None:
    panel = HealthPanel(JupyterHealthClient(server), refresh=False)
    await asyncio.to_thread(panel.refresh_button.click)
    assert panel.error.value == ""
    assert 'data-overall="broken"' in panel.badge.value
    assert "from the vsphere-kale service" in panel.badge.value, panel.note.value
    assert 'data-pvc="wf-1-kale-marshal-pvc"' in panel.pvc_table.value
    assert "rwx-on-block-class" in panel.pvc_table.value
    assert "Kale marshal volume" in panel.pvc_table.value
    assert "nfs-client" in panel.pvc_table.value  # the hint names the RWX class
    assert 'class="vsk-podsecurity"' in panel.pod_security.value
    assert "psp:vmware-system-privileged" in panel.pod_security.value
    assert 'class="vsk-webhook" data-verdict="ok"' in panel.webhook.value
    assert not panel.reconcile_button.disabled  # alice owns the profile
    assert "Last updated" in panel.updated.value


async def test_reconcile_click_shows_the_result(server: ServerRef) -> None:
    # No GET before: the client must fetch the _xsrf cookie itself, else this is a 403.
    client = JupyterHealthClient(server)
    panel = HealthPanel(client, refresh=False)
    await asyncio.to_thread(panel.reconcile)
    assert panel.error.value == ""
    assert 'class="vsk-result"' in panel.result.value
    assert "Reconcile <b>alice</b>" in panel.result.value
    assert "vsphere-kale-psp" in panel.result.value  # the message names the binding
    # The status was refreshed after the repair.
    assert 'data-verdict="ok"' in panel.pod_security.value


class TestAsViewer:
    @pytest.fixture
    def identity(self) -> str:
        return "viewer"

    async def test_reconcile_is_disabled_and_a_forced_one_explains_why(
        self, server: ServerRef
    ) -> None:
        panel = HealthPanel(JupyterHealthClient(server), refresh=False)
        await asyncio.to_thread(panel.refresh)
        assert panel.reconcile_button.disabled
        assert "not reconcile" in panel.note.value
        await asyncio.to_thread(panel.reconcile)
        assert "Reconcile failed:" in panel.error.value
        assert "reconciles" in panel.error.value  # which permission is missing


class TestAdminApiDown:
    @pytest.fixture
    def jp_server_config(self, system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
        assert system.running is not None
        token_file = tmp_path / "token"
        token_file.write_text(system.running.tokens["alice"])
        traits = {
            **system.jupyter_traits(),
            "token_file": str(token_file),
            "admin_url": f"http://127.0.0.1:{closed_port()}",
        }
        return {
            "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}, "token": ""},
            "VsphereKaleApp": traits,
        }

    async def test_local_view_is_read_only_and_reconcile_says_why(self, server: ServerRef) -> None:
        panel = HealthPanel(JupyterHealthClient(server), refresh=False)
        await asyncio.to_thread(panel.refresh)
        assert "computed in this notebook (read-only)" in panel.badge.value
        assert "Read-only view" in panel.note.value and "unreachable" in panel.note.value
        assert 'data-pvc="wf-1-kale-marshal-pvc"' in panel.pvc_table.value
        assert panel.reconcile_button.disabled
        await asyncio.to_thread(panel.reconcile)
        assert "Reconcile failed: cannot reconcile alice" in panel.error.value


class TestWithToken:
    @pytest.fixture
    def jupyter_token(self) -> str:
        return "secret-jupyter-token"

    async def test_token_is_sent(self, server: ServerRef) -> None:
        assert server.token == "secret-jupyter-token"
        panel = HealthPanel(JupyterHealthClient(server), refresh=False)
        await asyncio.to_thread(panel.refresh)
        assert 'data-pvc="wf-1-kale-marshal-pvc"' in panel.pvc_table.value

    async def test_wrong_token_is_a_sentence(self, server: ServerRef) -> None:
        wrong = ServerRef(server.base_url, "wrong")
        panel = HealthPanel(JupyterHealthClient(wrong), refresh=False)
        await asyncio.to_thread(panel.refresh)
        assert panel.error.value.startswith('<div class="vsk-error"')
        assert "Could not read the status" in panel.error.value
        assert panel.pvc_table.value == ""


async def test_unreachable_server_is_a_sentence() -> None:
    dead = ServerRef(f"http://127.0.0.1:{closed_port()}/", "")
    panel = HealthPanel(JupyterHealthClient(dead, timeout=2), refresh=False)
    await asyncio.to_thread(panel.refresh)
    assert "cannot reach the Jupyter server" in panel.error.value
