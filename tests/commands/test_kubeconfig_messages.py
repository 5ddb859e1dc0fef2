"""What every command that loads a kubeconfig says when it cannot use it (issue 12).

A malformed file, a missing file, an API server nobody answers on and a credential the
server refuses: each is one sentence on stderr naming what to fix, a non-zero exit, no
traceback, no urllib3 retry warnings, and never the token itself. Each command runs as a
user runs it (a subprocess of this checkout); the live server is a real sandbox API server,
the dead one a closed port of 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vsphere_kale.sandbox.testing import RunningSandbox

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "tests" / "fixtures" / "kale" / "mount_pvc.ipynb"
TOKEN = "not-a-valid-token-7f3a9c"

# Every command that loads a kubeconfig, with the arguments it needs to reach the API.
COMMANDS = {
    "doctor": ["doctor"],
    "install": ["install", "--rwx-storage-class", "nfs-client"],
    "uninstall": ["uninstall"],
    "reconcile": ["reconcile", "--all"],
    "recreate-pvc": ["recreate-pvc", "data", "-n", "alice", "--yes", "--rwx-storage-class", "x"],
    "check-notebook": ["check-notebook", str(NOTEBOOK), "-n", "alice"],
}


def run(args: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vsphere_kale.cli", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one ``error:`` line and nothing else on stderr."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "Retrying" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def kubeconfig(path: Path, server: str, user: dict[str, object]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "lab", "cluster": {"server": server}}],
                "users": [{"name": "carol", "user": user}],
                "contexts": [{"name": "carol@lab", "context": {"cluster": "lab", "user": "carol"}}],
                "current-context": "carol@lab",
            }
        ),
        encoding="utf-8",
    )
    return path


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_malformed_kubeconfig_is_one_sentence_naming_the_file_and_the_yaml_error(
    command: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text("apiVersion: v1\nclusters: [\n  - name: x\n    server: : y\n", "utf-8")
    line = one_sentence(run(COMMANDS[command], broken))
    assert f"kubeconfig file {broken} is not valid YAML" in line
    assert "line 3" in line  # where PyYAML found the problem, as a user counts lines


# The same loader serves every command; the ones below cover each code path once (and each
# command at least once) without paying for 24 subprocesses.
@pytest.mark.parametrize("command", ["doctor", "check-notebook"])
def test_a_missing_kubeconfig_file_is_named_as_missing(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.kubeconfig"
    line = one_sentence(run(COMMANDS[command], missing))
    assert f"kubeconfig file {missing} does not exist" in line
    assert "--kubeconfig" in line


@pytest.mark.parametrize("command", ["doctor", "install", "reconcile", "recreate-pvc"])
def test_an_unreachable_api_server_gives_its_url_and_what_to_check(
    command: str, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    config = kubeconfig(tmp_path / "dead.kubeconfig", url, {"token": TOKEN})
    line = one_sentence(run(COMMANDS[command], config))
    assert f"cannot reach the API server at {url}" in line
    assert "Connection refused" in line
    assert f'context "carol@lab" in {config}' in line
    assert "check that the cluster is running" in line


@pytest.mark.parametrize("command", ["uninstall", "reconcile", "check-notebook"])
def test_unauthorized_names_the_user_and_the_kind_of_credential_never_the_token(
    command: str, tmp_path: Path, sandbox: RunningSandbox
) -> None:
    config = kubeconfig(tmp_path / "stale.kubeconfig", sandbox.url, {"token": TOKEN})
    done = run(COMMANDS[command], config)
    line = one_sentence(done)
    assert "401 Unauthorized" in line
    assert f'user "carol" of context "carol@lab" in {config} (a bearer token)' in line
    assert TOKEN not in done.stderr + done.stdout


def test_unauthorized_with_a_token_file_names_the_file(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    config = kubeconfig(tmp_path / "file.kubeconfig", sandbox.url, {"tokenFile": str(token_file)})
    done = run(COMMANDS["doctor"], config)
    line = one_sentence(done)
    assert f"(token file {token_file})" in line
    assert TOKEN not in done.stderr + done.stdout
