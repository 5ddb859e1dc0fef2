"""Fixtures for the browser test: ``vsphere-kale sandbox`` as a user runs it, and Chromium.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by
Playwright's Python package: never ``playwright install``, which downloads a browser build.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningSandboxCli:
    lab_url: str
    workdir: Path
    output: list[str]


@pytest.fixture
def sandbox_cli(tmp_path: Path) -> Iterator[RunningSandboxCli]:
    """``vsphere-kale sandbox --no-browser`` in a subprocess, until its JupyterLab URL shows."""
    exe = shutil.which("vsphere-kale")
    assert exe is not None, "vsphere-kale is not installed (pip install -e '.[test]')"
    env = {
        **os.environ,
        # A private runtime/config dir: no other Jupyter server or user config interferes.
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "PYTHONUNBUFFERED": "1",
    }
    workdir = tmp_path / "sandbox"
    process = subprocess.Popen(
        [exe, "sandbox", "--workdir", str(workdir), "--no-browser", "--lab-port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    lab_url = None
    try:
        while lab_url is None:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                raise AssertionError("vsphere-kale sandbox did not start:\n" + "".join(output))
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            match = re.match(r"^\s+JupyterLab\s+(http://\S+)$", line)
            if match:
                lab_url = match.group(1)
        yield RunningSandboxCli(lab_url, workdir, output)
    finally:
        # What Ctrl-C does in a terminal (SIGINT to the command, which stops JupyterLab).
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless. Function-scoped on purpose: Playwright's sync API runs its
    own event loop, which must be gone before pytest-jupyter's autouse loop fixture (loaded
    by the integration modules) closes the thread's loop at teardown."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
