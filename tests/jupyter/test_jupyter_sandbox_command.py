"""``vsphere-kale sandbox --no-lab``: the headless run mode, driven like a user in a terminal.

Given the command started, when kubectl creates an RWX claim on the block class in alice,
then the webhook (called by the sandbox over real TLS with the generated CA) puts it on
nfs-client; and Ctrl-C stops everything with exit code 0.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from vsphere_kale.controlplane.config import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def kubectl(kubeconfig: str, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_headless_sandbox_serves_the_webhook_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    exe = shutil.which("vsphere-kale")
    assert exe is not None
    process = subprocess.Popen(
        [exe, "sandbox", "--no-lab", "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any("Press Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)
            with contextlib.suppress(queue.Empty):
                lines.get(timeout=1)
        text = "".join(output)
        assert "not started (--no-lab)" in text
        assert "--VsphereKaleApp.admin_url=https://127.0.0.1:" in text
        match = re.search(r"kubeconfig\s+(\S+)\s+\(contexts: admin@sandbox, alice@sandbox", text)
        assert match, text
        kubeconfig = match.group(1)

        # The stuck claim is there; a new RWX claim (a Kale `rwm` volume asking for the block
        # class) goes through the webhook and lands on nfs-client.
        pvcs = kubectl(kubeconfig, "get", "pvc", "-n", "alice", "-o", "name")
        assert "wf-1-kale-marshal-pvc" in pvcs
        kubectl(kubeconfig, "apply", "-f", str(REPO / "deploy/examples/kale-rwm-volume.yaml"))
        cls = kubectl(
            kubeconfig,
            "get",
            "pvc",
            "create-volume-1",
            "-n",
            "alice",
            "-o",
            "jsonpath={.spec.storageClassName}",
        )
        assert cls == "nfs-client"
        # The reconciler (serve, as its ServiceAccount) granted alice's pods the PSP ...
        bindings = kubectl(kubeconfig, "get", "rolebinding", "-n", "alice", "-o", "name")
        assert "vsphere-kale-psp" in bindings
        # ... and does so for a Profile created now (the banner's last suggestion).
        profile = tmp_path / "carol.yaml"
        profile.write_text(
            "apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: carol}\n"
            "spec: {owner: {kind: User, name: carol@example.com}}\n"
        )
        kubectl(kubeconfig, "apply", "-f", str(profile))
        deadline = time.monotonic() + 30
        while "vsphere-kale-psp" not in kubectl(
            kubeconfig, "get", "rolebinding", "-n", "carol", "-o", "name", "--ignore-not-found"
        ):
            assert time.monotonic() < deadline, "no PSP binding in carol after 30 s"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0, "".join(output)
    assert "sandbox stopped" in "".join(output)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_with_lab_the_banner_comes_once_jupyterlab_answers_without_news_or_a_token_in_argv(
    tmp_path: Path,
) -> None:
    import json
    import urllib.request

    lab_port = free_port()
    exe = shutil.which("vsphere-kale")
    assert exe is not None
    process = subprocess.Popen(
        [exe, "sandbox", "--flavor", "psa", "--no-browser", "--lab-port", str(lab_port),
         "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 180  # the sandbox, then JupyterLab's own start
        while not any("Press Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)
            time.sleep(0.2)
        text = "".join(output)
        match = re.search(r"JupyterLab  (http://127\.0\.0\.1:\d+/)lab/tree/\S+\?token=(\w+)", text)
        assert match, text
        base, token = match.groups()
        auth = {"Authorization": f"token {token}"}
        # Then it answers at once: the banner waited for it
        with urllib.request.urlopen(
            urllib.request.Request(f"{base}vsphere-kale/api/status", headers=auth), timeout=30
        ) as answer:
            assert answer.status == 200
        # The news notification is off ("Never"), from the playground's own settings dir
        url = f"{base}lab/api/settings/@jupyterlab/apputils-extension:notification"
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=30) as a:
            settings = json.loads(a.read())
        assert settings["schema"]["properties"]["fetchNews"]["default"] == "false"
        # The token is on no command line (every local user can read those)
        labs = [
            pid for pid in _children(process.pid)
            if b"jupyterlab" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]  # fmt: skip
        assert labs, "JupyterLab is not a child of vsphere-kale sandbox"
        for pid in labs:
            assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 0, "".join(output)
