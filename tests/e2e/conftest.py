"""Fixtures for the browser tests: ``vsphere-kale sandbox`` as a user runs it, and Chromium.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by
Playwright's Python package: never ``playwright install``, which downloads a browser build.

One playground per flavor per test module (``playground``, parametrized over both flavors,
or ``sandbox_cli``, the psp flavor alone): starting the sandbox, serve and JupyterLab is the
slow part, and the tour is one user's path through one playground. Nothing here waits on a
clock: the fixtures read the command's output until its banner shows, the tests poll the page
with Playwright's ``expect`` (timeouts off: the suite's pytest ``timeout`` is the one guard
against a hang).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from vsphere_kale.controlplane.config import free_port

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
STOP_TIMEOUT = 30.0
"""Seconds Ctrl-C may take before the command is killed (teardown only, never asserted)."""
FLAVORS = ("psa", "psp")

NO_DEADLINE_MS = 24 * 3600 * 1000
"""Playwright waits this long, i.e. until the condition holds: pytest-timeout (pyproject's
``timeout``) is the one guard against a hang. ``expect`` has no "forever" (0 means its
5 s default), so a day stands for it."""
expect.set_options(timeout=NO_DEADLINE_MS)


@dataclass
class RunningSandboxCli:
    flavor: str
    lab_url: str
    workdir: Path
    output: list[str]

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"


def _quiet_lab_settings(config_dir: Path) -> None:
    """JupyterLab's "get notified about Jupyter news?" toast covers the notebook's output.

    The playground is to turn it off itself; until it does, the test's own (private) Jupyter
    config dir says no, as a user would by answering the toast once.
    """
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@contextmanager
def run_sandbox_cli(tmp: Path, *, flavor: str) -> Iterator[RunningSandboxCli]:
    """``vsphere-kale sandbox --flavor F --no-browser`` in a subprocess, until its JupyterLab
    URL shows; Ctrl-C (SIGINT) at the end, as in a terminal."""
    exe = shutil.which("vsphere-kale")
    assert exe is not None, "vsphere-kale is not installed (pip install -e '.[test]')"
    _quiet_lab_settings(tmp / "config")
    env = {
        **os.environ,
        # A private runtime/config dir: no other Jupyter server or user config interferes.
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "PYTHONUNBUFFERED": "1",
    }
    workdir = tmp / "sandbox"
    command = [exe, "sandbox", "--flavor", flavor, "--workdir", str(workdir), "--no-browser"]
    process = subprocess.Popen(
        [*command, "--lab-port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        # Reads to the end, so the command never blocks on a full pipe; None marks its exit.
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        lab_url = None
        while lab_url is None:
            line = lines.get()
            if line is None:
                raise AssertionError("vsphere-kale sandbox did not start:\n" + "".join(output))
            match = re.match(r"^\s+JupyterLab\s+(http://\S+)$", line)
            if match:
                lab_url = match.group(1)
        yield RunningSandboxCli(flavor, lab_url, workdir, output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="module", params=FLAVORS)
def playground(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSandboxCli]:
    """The playground in each flavor, shared by the tests of one module."""
    flavor = str(request.param)
    with run_sandbox_cli(tmp_path_factory.mktemp(f"playground-{flavor}"), flavor=flavor) as run:
        yield run


@pytest.fixture(scope="module")
def sandbox_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandboxCli]:
    """The psp playground alone, shared by the tests of one module."""
    with run_sandbox_cli(tmp_path_factory.mktemp("playground-psp"), flavor="psp") as run:
        yield run


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
def page(browser: Browser) -> Iterator[Page]:
    """A 1280 x 1000 page whose waits have no deadline of their own (see NO_DEADLINE_MS)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(NO_DEADLINE_MS)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
