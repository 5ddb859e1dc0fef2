"""The launcher itself: clear errors, side-by-side control planes, nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client
from realcp_helpers import api_client_for, wait_for

from vsphere_kale.controlplane import (
    Binaries,
    ControlPlaneError,
    RunningControlPlane,
    start_control_plane,
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_an_etcd_that_cannot_start_is_reported_with_its_last_log_line(
    control_plane_binaries: Binaries, tmp_path: Path
) -> None:
    (tmp_path / "etcd").write_text("not a directory")  # where etcd wants its data directory
    with pytest.raises(ControlPlaneError) as caught:
        start_control_plane(
            workdir=tmp_path, controller_manager=False, binaries=control_plane_binaries
        )
    message = str(caught.value)
    assert message.startswith("etcd exited with code 1; its last log line: ")
    assert str(tmp_path / "etcd.log") in message
    assert "kube-apiserver" not in message  # it never started


def test_a_killed_etcd_is_named_and_two_control_planes_run_side_by_side(
    real_control_plane: RunningControlPlane,
) -> None:
    # Given: a second control plane beside the session's.
    second = start_control_plane(controller_manager=False)
    pids = list(second.pids.values())
    try:
        assert second.port != real_control_plane.port
        second.request_json("POST", "/api/v1/namespaces", body={"metadata": {"name": "only-here"}})
        names = [
            n["metadata"]["name"]
            for n in real_control_plane.request_json("GET", "/api/v1/namespaces")["items"]
        ]
        assert "only-here" not in names
        # MutatingAdmissionPolicy is served (GA in 1.36, and v1beta1 for older clients).
        for version in ("v1", "v1beta1"):
            served = second.request_json("GET", f"/apis/admissionregistration.k8s.io/{version}")
            assert "mutatingadmissionpolicies" in {r["name"] for r in served["resources"]}
        # When: its etcd is killed.
        os.kill(second.pids["etcd"], signal.SIGKILL)

        def etcd_reported() -> str | None:
            try:
                second.check()
            except ControlPlaneError as exc:
                return str(exc)
            return None

        # Then: the launcher names the dead component; the session's control plane is fine.
        assert wait_for("etcd reported dead", etcd_reported).startswith(
            "etcd exited with code -9; its last log line: "
        )
        real_control_plane.check()
    finally:
        second.stop()
    # And nothing of it is left: no process, no listening port.
    assert [pid for pid in pids if alive(pid)] == []
    assert not listening(second.port)
    assert not second.workdir.exists()


def test_sandbox_apiserver_on_the_real_control_plane_serves_kubectl_until_ctrl_c(
    real_control_plane: RunningControlPlane, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "real.kubeconfig"
    with (tmp_path / "out.log").open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vsphere_kale.cli",
                "sandbox",
                "apiserver",
                "--control-plane",
                "real",
                "--port",
                "0",
                "--kubeconfig-out",
                str(kubeconfig),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        output = wait_for(
            "the banner",
            lambda: "press Ctrl-C" in (text := (tmp_path / "out.log").read_text()) and text,
            timeout=120,
        )
        url = re.search(r"kube-apiserver (https://127\.0\.0\.1:(\d+))", output)
        workdir = re.search(r"logs in (\S+)\)", output)
        assert url and workdir, output
        for context in ("admin@sandbox", "alice@sandbox"):
            whoami = subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--context",
                    context,
                    "auth",
                    "whoami",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert whoami.returncode == 0, whoami.stderr
        assert "alice@example.com" in whoami.stdout
        # The kubeflow-demo seed, written through the API, and the profile controller's work
        seeded = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "get", "profiles,pvc", "-A", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert seeded.returncode == 0, seeded.stderr
        assert "profile.kubeflow.org/alice" in seeded.stdout
        assert "persistentvolumeclaim/wf-1-kale-marshal-pvc" in seeded.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert "control plane stopped" in (tmp_path / "out.log").read_text()
    assert not listening(int(url.group(2)))
    assert not Path(workdir.group(1)).exists()


def test_storage_protection_holds_a_claim_in_use_and_releases_what_nothing_uses(
    real_control_plane: RunningControlPlane,
    namespace_factory: Callable[..., str],
) -> None:
    """The pvc-protection and pv-protection controllers run, as on a cluster: kube-apiserver
    puts the finalizers on, kube-controller-manager takes them off once nothing uses the
    object. (Without the controllers a deleted claim stays Terminating forever.)"""
    api = api_client_for(real_control_plane)
    core = client.CoreV1Api(api)
    ns = namespace_factory("prot", labels={"pod-security.kubernetes.io/enforce": "privileged"})
    claim = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
        },
    }
    made = core.create_namespaced_persistent_volume_claim(ns, claim)
    assert made.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    # Given: a pod scheduled to a node (no kubelet runs it, so it stays Pending) mounts it.
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "user"},
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        },
    )

    def claim_state(name: str = "data") -> str:
        try:
            found = core.read_namespaced_persistent_volume_claim(name, ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return "gone"
            raise
        return "terminating" if found.metadata.deletion_timestamp else "present"

    # When: the claim is deleted while the pod uses it, and then a claim no pod uses.
    core.delete_namespaced_persistent_volume_claim("data", ns)
    core.create_namespaced_persistent_volume_claim(ns, {**claim, "metadata": {"name": "free"}})
    core.delete_namespaced_persistent_volume_claim("free", ns)
    # Then: the unused one goes at once; the one in use (queued before it) is kept.
    wait_for("the unused claim released", lambda: claim_state("free") == "gone")
    assert claim_state() == "terminating"
    # When: the pod goes (force: there is no kubelet to confirm), the claim goes too.
    core.delete_namespaced_pod("user", ns, grace_period_seconds=0)
    wait_for("the claim released by pvc-protection", lambda: claim_state() == "gone")
    # And a volume no claim is bound to is released by pv-protection.
    name = f"pv-{ns}"
    volume = core.create_persistent_volume(
        {
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "csi": {"driver": "csi.vsphere.vmware.com", "volumeHandle": name},
            },
        }
    )
    assert volume.metadata.finalizers == ["kubernetes.io/pv-protection"]
    core.delete_persistent_volume(name)

    def volume_gone() -> bool:
        try:
            core.read_persistent_volume(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the volume released by pv-protection", volume_gone)
    api.close()
