"""``vsphere-kale sandbox apiserver`` as a newcomer runs it: a real process, kubectl, Ctrl-C."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from kubernetes import client, config

from vsphere_kale.cli import main

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    kubeconfig = tmp_path / "k.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsphere_kale.cli",
            "sandbox",
            "apiserver",
            "--port",
            "0",
            "--kubeconfig-out",
            str(kubeconfig),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60  # importing the kubernetes client takes seconds
    while not kubeconfig.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sandbox did not write its kubeconfig"
        time.sleep(0.1)
    return proc, kubeconfig


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    return proc.returncode, out


def test_apiserver_serves_the_kubeflow_demo_until_ctrl_c(tmp_path: Path) -> None:
    proc, kubeconfig = start(tmp_path, "--seed", "kubeflow-demo", "--flavor", "psp")
    try:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        assert client.VersionApi(api).get_code().git_version == "v1.24.17"
        assert api.configuration.host.startswith("https://127.0.0.1:")
        pvcs = subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(kubeconfig),
                "get",
                "profiles,namespaces,pvc",
                "-A",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert "profile.kubeflow.org/alice" in pvcs and "namespace/kubeflow" in pvcs
        assert "persistentvolumeclaim/wf-1-kale-marshal-pvc" in pvcs
        contexts = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "config", "get-contexts", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert contexts[0] == "admin@sandbox" and "alice@sandbox" in contexts
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "serving on https://127.0.0.1:" in out and "sandbox stopped" in out


def test_busy_port_is_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            main,
            [
                "sandbox",
                "apiserver",
                "--port",
                str(port),
                "--seed",
                "empty",
                "--no-kubeflow",
                "--kubeconfig-out",
                str(tmp_path / "k.yaml"),
            ],
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_busy_lab_or_api_port_stops_the_run_mode_before_anything_starts(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag, extra in (("--lab-port", []), ("--api-port", ["--no-lab"])):
            result = CliRunner().invoke(
                main, ["sandbox", "--workdir", str(tmp_path / "w"), flag, str(port), *extra]
            )
            # One sentence naming the flag, a non-zero exit, and no banner
            assert result.exit_code == 2, result.output
            assert f"port {port} on 127.0.0.1 is in use: pick another with {flag} PORT" in (
                result.output
            )
            assert "is running" not in result.output and "Try next" not in result.output
            assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "w" / "kubeconfig").exists()  # nothing was started
