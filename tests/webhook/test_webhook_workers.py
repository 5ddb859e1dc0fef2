"""``vsphere-kale webhook --workers N``: N processes, each with its own SO_REUSEPORT listener
on the one port, all answering reviews; SIGTERM to the parent stops them all, exit 0."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from admission_helpers import encode, review_body
from test_webhook_server import Process, make_certs, request

from vsphere_kale.controlplane.config import free_port


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def ca(cert_dir: Path) -> Path:
    return cert_dir / "ca.crt"


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on 127.0.0.1:``port`` (/proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_workers_share_the_port_and_stop_together(cert_dir: Path, ca: Path) -> None:
    port = free_port()
    proc = Process(
        "--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(cert_dir / "tls.key"),
        "--address", "127.0.0.1", "--port", str(port), "--rwx-storage-class", "nfs-client",
        "--workers", "2",
    )  # fmt: skip
    try:
        # Given two workers serving
        proc.wait_for_line(r"started 2 webhook workers")
        proc.wait_for_line(r"serving HTTPS")
        proc.wait_for_line(r"serving HTTPS")
        children = [
            int(pid)
            for pid in Path(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children")
            .read_text()
            .split()
        ]
        assert len(children) == 2
        # Then each has a listening socket of its own on the port (SO_REUSEPORT) ...
        listening = _listening_inodes(port)
        owned = [_socket_inodes(child) & listening for child in children]
        assert all(len(o) == 1 for o in owned) and owned[0] != owned[1], owned
        # ... and reviews on fresh connections are answered, whichever worker takes them
        for uid in range(8):
            response = request(port, ca, "POST", "/pvc/mutate", encode(review_body(uid=f"u{uid}")))
            assert response.status == 200
            assert response.json()["response"]["patchType"] == "JSONPatch"
        # When the parent gets SIGTERM, every worker drains and the parent exits 0
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
        for child in children:
            assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)
    finally:
        proc.kill()


def _state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "Z"
    return next(line for line in status.splitlines() if line.startswith("State:"))
