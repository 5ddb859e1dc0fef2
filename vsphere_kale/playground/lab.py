"""JupyterLab for the playground: its command line, its settings, its start-up checks.

- The token goes through the environment (``JUPYTER_TOKEN``), never argv: jupyter_server logs
  its argv at DEBUG, and every local user can read a process's command line.
- JupyterLab's own settings live in the playground's work dir (``LabApp.app_settings_dir``):
  an ``overrides.json`` switches the news notification off
  (``@jupyterlab/apputils-extension:notification``: ``fetchNews: "false"``, JupyterLab >= 4),
  whose toast would otherwise ask a question on top of the health panel.
- A port is checked free before anything starts (:func:`check_port_free`), so a busy port is
  one sentence naming the flag, not a ready banner followed by a failure.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsphere_kale.errors import ConfigError, VsphereKaleError

log = logging.getLogger(__name__)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "cluster-health.ipynb"
LAB_STOP_TIMEOUT = 15.0
NOTIFICATION_PLUGIN = "@jupyterlab/apputils-extension:notification"
LAB_OVERRIDES: dict[str, Any] = {
    # "none" (the default) shows a toast asking whether to fetch news; "false" is "Never".
    NOTIFICATION_PLUGIN: {"fetchNews": "false", "checkForUpdates": False},
}


def check_port_free(port: int, *, flag: str, address: str = "127.0.0.1") -> None:
    """Raise a ConfigError naming ``flag`` when ``address:port`` is taken (0: any port)."""
    if port == 0:
        return
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc})"
            raise ConfigError(
                flag, f"port {port} on {address} {why}: pick another with {flag} PORT"
            ) from exc


def write_lab_settings(settings_dir: Path) -> Path:
    """The playground's own JupyterLab settings directory, with :data:`LAB_OVERRIDES`."""
    settings_dir.mkdir(parents=True, exist_ok=True)
    target = settings_dir / "overrides.json"
    target.write_text(json.dumps(LAB_OVERRIDES, indent=2) + "\n", encoding="utf-8")
    return settings_dir


def lab_command(
    traits: Mapping[str, Any],
    *,
    root_dir: Path,
    settings_dir: Path,
    port: int,
    open_browser: bool,
) -> list[str]:
    """The ``jupyter lab`` command line (no secrets: the token is in :func:`lab_environment`)."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.open_browser={open_browser}",
        f"--LabApp.default_url=/lab/tree/{NOTEBOOK.name}",
        f"--LabApp.app_settings_dir={settings_dir}",
        # Containers and CI run as root; the server listens on 127.0.0.1 with a token only.
        f"--ServerApp.allow_root={os.geteuid() == 0}",
        *(f"--VsphereKaleApp.{name}={value}" for name, value in traits.items()),
    ]


def lab_environment(token: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the token, read by jupyter_server's IdentityProvider."""
    return {**environ, "JUPYTER_TOKEN": token}


def wait_for_lab(
    process: subprocess.Popen[bytes], url: str, *, token: str, timeout: float, port: int
) -> None:
    """Until JupyterLab answers ``url`` with our token (bounded), or its process died."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    refused = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VsphereKaleError(
                f"JupyterLab exited with code {process.returncode} before it served on port "
                f"{port}; see its log above (a busy port? pick another with --lab-port PORT)"
            )
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                # Not ours yet, or a token from the user's own Jupyter config wins: keep polling.
                refused = True
                time.sleep(0.2)
                continue
            return  # it answers; the status itself may be an error the panel will show
        except OSError:
            time.sleep(0.2)
    if refused:
        raise VsphereKaleError(
            f"JupyterLab on port {port} refused the playground's token for {timeout:g} s: does "
            "your Jupyter config set c.IdentityProvider.token (or ServerApp.token)?"
        )
    raise VsphereKaleError(f"JupyterLab did not answer on {url} within {timeout:g} s")


def stop_lab(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM: jupyter_server shuts its kernels down and exits; SIGINT would ask "y/n?".
    process.terminate()
    try:
        process.wait(LAB_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("JupyterLab did not stop within %ss; killing it", LAB_STOP_TIMEOUT)
        process.kill()
        process.wait(LAB_STOP_TIMEOUT)
