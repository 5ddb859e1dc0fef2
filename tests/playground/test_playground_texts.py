"""What ``vsphere-kale sandbox`` prints and starts with, checked without starting it (pure):
the banner per flavor and with ``--no-lab``, the local pod's command line, JupyterLab's
command line and settings, and the port checks."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vsphere_kale.errors import ConfigError
from vsphere_kale.install import render
from vsphere_kale.playground.banner import build_banner
from vsphere_kale.playground.lab import (
    LAB_OVERRIDES,
    NOTIFICATION_PLUGIN,
    check_port_free,
    lab_command,
    lab_environment,
    write_lab_settings,
)
from vsphere_kale.playground.localpod import (
    build_container_args,
    build_pod_files,
    find_container,
    readiness_port,
)
from vsphere_kale.playground.system import (
    ADMIN_CONTAINER_PORT,
    WEBHOOK_CONTAINER_PORT,
    WEBHOOK_SERVICE_PORT,
)


@dataclass
class FakeSystem:
    """The attributes the banner reads, as a started LocalSystem has them."""

    flavor: str
    user: str = "alice"
    namespace: str = "alice"
    kubeconfig_path: Path = Path("/work/sb/kubeconfig")
    ca_file: Path = Path("/work/sb/certs/ca.crt")
    serve_log: Path = Path("/work/sb/serve.log")
    webhook_log: Path = Path("/work/sb/webhook.log")
    install_log: Path = Path("/work/sb/install.log")
    admin_url: str = "https://127.0.0.1:40000"
    webhook_url: str = "https://127.0.0.1:40002/mutate/persistentvolumeclaims"
    api_url: str = "https://127.0.0.1:40001"
    users: list[str] = field(default_factory=lambda: ["admin", "alice", "bob"])
    real_control_plane: bool = False

    def jupyter_traits(self) -> dict[str, Any]:
        return {"admin_url": self.admin_url, "ca_file": str(self.ca_file)}


def try_next(text: str) -> str:
    return text.split("Try next:", 1)[1]


def test_psa_try_next_shows_the_namespace_labels_not_a_rolebinding() -> None:
    text = try_next(build_banner(FakeSystem("psa"), lab_url="http://127.0.0.1:8888/lab"))
    assert "get ns carol --show-labels" in text
    assert "rolebinding" not in text.lower() and "PSP" not in text


def test_psp_try_next_shows_the_rolebinding() -> None:
    text = try_next(build_banner(FakeSystem("psp"), lab_url="http://127.0.0.1:8888/lab"))
    assert "get rolebinding vsphere-kale-psp -n carol" in text
    assert "--show-labels" not in text


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_every_file_in_try_next_is_an_absolute_path_that_exists(flavor: str) -> None:
    text = try_next(build_banner(FakeSystem(flavor), lab_url=None))
    files = re.findall(r"apply -f (\S+)", text)
    assert files, text
    for name in files:
        if name == "-":
            continue  # the heredoc
        assert Path(name).is_absolute() and Path(name).is_file(), name
    assert "deploy/examples" not in text.replace(str(Path(files[0]).parent), "")


def test_no_lab_banner_does_not_talk_about_the_panel() -> None:
    text = build_banner(FakeSystem("psp"), lab_url=None)
    assert "not started (--no-lab)" in text
    assert "--VsphereKaleApp.admin_url=https://127.0.0.1:40000" in text
    assert "panel" not in text.lower()
    with_lab = build_banner(FakeSystem("psp"), lab_url="http://127.0.0.1:8888/lab")
    assert "panel" in with_lab


def deployment() -> dict[str, Any]:
    (found,) = render.read_documents(render.find_deploy_dir() / "base" / "deployment.yaml")
    return found


LOCAL_PORTS = {WEBHOOK_CONTAINER_PORT: 41000, ADMIN_CONTAINER_PORT: 41001}


def test_the_local_pod_runs_each_containers_args_with_local_files(tmp_path: Path) -> None:
    files = build_pod_files(deployment(), tmp_path)
    assert files.config_maps == {("vsphere-kale-config", "config.yaml"): tmp_path / "config"
                                 / "config.yaml"}  # fmt: skip
    assert set(files.secrets) == {("vsphere-kale-tls", "tls.crt"), ("vsphere-kale-tls", "tls.key")}
    commands = {}
    for name in ("vsphere-kale", "webhook"):
        args = build_container_args(
            find_container(deployment(), name),
            paths=files.paths,
            ports=LOCAL_PORTS,
            kubeconfig=tmp_path / "k",
            identity="pod-0",
        )
        assert args[args.index("--config") + 1] == str(tmp_path / "config" / "config.yaml")
        assert args[args.index("--cert-file") + 1] == str(tmp_path / "tls" / "tls.crt")
        assert args[args.index("--key-file") + 1] == str(tmp_path / "tls" / "tls.key")
        assert args.count("--port") == 1 and args.count("--address") == 1
        assert args[args.index("--address") + 1] == "127.0.0.1"
        assert "/etc/vsphere-kale" not in " ".join(args)
        assert args[args.index("--log-format") + 1] == "json"  # as the Deployment says
        commands[name] = args
    serve, webhook = commands["vsphere-kale"], commands["webhook"]
    assert serve[:2] == ["serve", "--no-webhook"] and webhook[0] == "webhook"
    assert serve[serve.index("--port") + 1] == "41001"
    assert webhook[webhook.index("--port") + 1] == "41000"
    # Only serve talks to the API server: the webhook gets no credentials (and would refuse them).
    assert serve[serve.index("--kubeconfig") + 1] == str(tmp_path / "k")
    assert "--kubeconfig" not in webhook and "--identity" not in webhook


def test_the_playgrounds_ports_are_the_manifests_ports() -> None:
    """LocalSystem stands in for the Service and kube-proxy with these numbers."""
    (service,) = render.read_documents(render.find_deploy_dir() / "base" / "service.yaml")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["https"]["port"] == WEBHOOK_SERVICE_PORT
    webhook, serve = find_container(deployment(), "webhook"), find_container(deployment())
    assert readiness_port(webhook) == WEBHOOK_CONTAINER_PORT
    assert readiness_port(serve) == ADMIN_CONTAINER_PORT
    for container, port_name in ((webhook, "https"), (serve, "admin")):
        args = container["args"]
        assert int(args[args.index("--port") + 1]) == readiness_port(container)
        assert by_name[port_name]["targetPort"] in [p["name"] for p in container["ports"]]


def test_jupyter_token_is_in_the_environment_not_on_the_command_line(tmp_path: Path) -> None:
    token = "s3cr3t-token-value"
    command = lab_command(
        {"admin_url": "https://127.0.0.1:1"},
        root_dir=tmp_path,
        settings_dir=tmp_path / "settings",
        port=8888,
        open_browser=False,
    )
    assert not any(token in part for part in command)
    assert not any(".token=" in part for part in command), command
    assert lab_environment(token, {"PATH": "/bin"}) == {"PATH": "/bin", "JUPYTER_TOKEN": token}
    assert f"--LabApp.app_settings_dir={tmp_path / 'settings'}" in command


def test_news_are_off_with_the_setting_name_the_installed_jupyterlab_has(tmp_path: Path) -> None:
    settings = write_lab_settings(tmp_path / "settings")
    written = json.loads((settings / "overrides.json").read_text())
    assert written[NOTIFICATION_PLUGIN]["fetchNews"] == "false"
    # The installed JupyterLab's own schema: the plugin, the key and the value exist
    import jupyterlab

    schema_file = (
        Path(jupyterlab.__file__).parent / "schemas" / "@jupyterlab" / "apputils-extension"
        / "notification.json"
    )  # fmt: skip
    schema = json.loads(schema_file.read_text())["properties"]
    for key in LAB_OVERRIDES[NOTIFICATION_PLUGIN]:
        assert key in schema, key
    assert {"const": "false", "title": "Never"} in schema["fetchNews"]["oneOf"]


def test_a_busy_port_names_the_flag_that_changes_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as raised:
            check_port_free(port, flag="--lab-port")
    assert raised.value.key == "--lab-port"
    assert f"port {port} on 127.0.0.1 is in use: pick another with --lab-port PORT" in str(
        raised.value
    )
    check_port_free(0, flag="--api-port")  # 0: any free port, nothing to check


def test_a_lab_that_refuses_our_token_is_named_as_such_not_as_silent() -> None:
    import http.server
    import subprocess
    import threading

    from vsphere_kale.errors import VsphereKaleError
    from vsphere_kale.playground.lab import wait_for_lab

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    lab = subprocess.Popen(["sleep", "30"])  # stands in for a JupyterLab that keeps running
    try:
        with pytest.raises(VsphereKaleError) as raised:
            wait_for_lab(lab, f"http://127.0.0.1:{port}/x", token="t", timeout=0.5, port=port)
    finally:
        lab.kill()
        lab.wait()
        server.shutdown()
    assert f"JupyterLab on port {port} refused the playground's token" in str(raised.value)
    assert "c.IdentityProvider.token" in str(raised.value)
