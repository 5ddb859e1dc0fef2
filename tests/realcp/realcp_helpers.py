"""Helpers for the real-control-plane tests (tests/realcp is not a package: pytest puts this
folder on sys.path)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, config

from vsphere_kale.controlplane import RunningControlPlane

BLOCK_CLASS = "vsan-default-storage-policy"
NFS_CLASS = "nfs-client"


def api_client_for(cp: RunningControlPlane, user: str = "admin") -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(cp.kubeconfig_path),
        context=cp.context_for(user),
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


def kubectl(
    cp: RunningControlPlane, *args: str, user: str = "admin", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *cp.kubectl_args(user), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``vsphere-kale ARGS`` as a user runs it (a subprocess of this checkout)."""
    return subprocess.run(
        [sys.executable, "-m", "vsphere_kale.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def wait_for(what: str, probe: Callable[[], Any], *, timeout: float = 60.0) -> Any:
    """Poll ``probe`` until it returns something truthy (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


class Process:
    """A ``vsphere-kale`` subprocess serving HTTPS on 127.0.0.1:``port``, log in a file."""

    def __init__(self, argv: Sequence[str], *, port: int, ca_pem: bytes, log: Path) -> None:
        self.argv = [sys.executable, "-m", "vsphere_kale.cli", *argv]
        self.port = port
        self.log_path = log
        self._ctx = ssl.create_default_context(cadata=ca_pem.decode())
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for(f"{self.argv[3]} ready on :{self.port} (log {self.log_path})", self.ready)
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"exited {self.proc.returncode}: {self.output()[-2000:]}")
        try:
            url = f"https://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2, context=self._ctx) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def default_service_account(admin_api: client.ApiClient, namespace: str) -> None:
    """Wait for the controller manager's ``default`` ServiceAccount (pods need it)."""
    core = client.CoreV1Api(admin_api)

    def probe() -> bool:
        try:
            core.read_namespaced_service_account("default", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(f"serviceaccount {namespace}/default", probe)


def wait_namespace_gone(admin_api: client.ApiClient, namespace: str) -> None:
    """Until the namespace controller has emptied and removed ``namespace`` (a re-install
    into a Terminating namespace would be refused)."""
    core = client.CoreV1Api(admin_api)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"namespace {namespace} deleted", gone, timeout=120)
