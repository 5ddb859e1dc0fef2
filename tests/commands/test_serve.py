"""``vsphere-kale serve`` as real processes against the sandbox API server.

The sandbox runs in the test process; each ``serve`` is a subprocess with its own kubeconfig
client, TLS server and leader election, as two replicas of the Deployment would be.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from reconcile_helpers import ensure_namespace, events, ns_labels, read_binding, wait_for

from vsphere_kale.controlplane.config import free_port
from vsphere_kale.install import admission_policy, certs
from vsphere_kale.sandbox.testing import RunningSandbox

PROFILE_YAML = """\
apiVersion: kubeflow.org/v1
kind: Profile
metadata:
  name: {name}
spec:
  owner:
    kind: User
    name: {name}@example.com
"""


class Serve:
    """One ``vsphere-kale serve`` subprocess."""

    def __init__(
        self,
        running: RunningSandbox,
        tls_dir: Path,
        identity: str,
        log: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.identity = identity
        self.log_path = log
        self._log = log.open("wb")
        env = {**os.environ, "POD_NAME": identity}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vsphere_kale.cli",
                "serve",
                "--kubeconfig",
                str(running.kubeconfig_path),
                "--cert-file",
                str(tls_dir / "tls.crt"),
                "--key-file",
                str(tls_dir / "tls.key"),
                "--address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--rwx-storage-class",
                "nfs-client",
                "--lease-duration",
                "2",
                "--renew-deadline",
                "1.5",
                "--retry-period",
                "0.3",
                *extra,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))

    def get(self, path: str) -> tuple[int, str]:
        url = f"https://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, context=self._ctx, timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return self.get("/readyz")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    bundle = certs.build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"])
    certs.write_cert_files(tmp_path / "tls", bundle, force=True)
    return tmp_path / "tls"


@pytest.fixture
def serves(tmp_path: Path, tls_dir: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(running: RunningSandbox, identity: str, *extra: str) -> Serve:
        serve = Serve(running, tls_dir, identity, tmp_path / f"{identity}.log", extra)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.close()


def lease_holder(api: client.ApiClient) -> str | None:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(
        "vsphere-kale-leader", "vsphere-kale"
    )
    return lease.spec.holder_identity or None


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_kubectl_profile_is_correct_within_two_seconds(
    flavor: str,
    sandbox_factory: Callable[..., RunningSandbox],
    serves: Callable[..., Serve],
    tmp_path: Path,
) -> None:
    running = sandbox_factory(flavor=flavor, kubeflow=True, tls=True)
    api = running.api_client()
    ensure_namespace(api, "vsphere-kale")
    serve = serves(running, "serve-a")
    wait_for("/readyz", serve.ready, timeout=120)
    wait_for("leader", lambda: lease_holder(api) == "serve-a", timeout=5)

    manifest = tmp_path / "profile.yaml"
    manifest.write_text(PROFILE_YAML.format(name="alice"))
    subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), "create", "-f", str(manifest)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # The watch brings the new namespace in: the periodic resync (podSecurity.resyncSeconds,
    # 600 s) is far beyond this wait. How fast: tests/benchmarks/reconcile_scale.py.
    if flavor == "psp":
        wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"), timeout=30)
    else:
        wait_for(
            "labels",
            lambda: ns_labels(api, "alice").get("pod-security.kubernetes.io/enforce") == "baseline",
            timeout=30,
        )

    status, metrics = serve.get("/metrics")
    assert status == 200
    assert "vsphere_kale_podsecurity_is_leader 1.0" in metrics
    assert f'vsphere_kale_podsecurity_mode{{mode="{flavor}"}} 1.0' in metrics
    assert "vsphere_kale_webhook_requests_total" in metrics  # one registry, one /metrics

    # The leader also runs the self-managed certificate rotation (this sandbox has no Secret
    # vsphere-kale-tls, so it says what is missing and retries later).
    wait_for("rotation", lambda: 'secrets "vsphere-kale-tls" not found' in serve.output())

    # SIGTERM: drains, releases the Lease, exits 0.
    assert serve.terminate() == 0, serve.output()
    assert lease_holder(api) is None
    assert "Traceback" not in serve.output()


def test_two_replicas_only_the_leader_writes_and_fails_over(
    sandbox_factory: Callable[..., RunningSandbox],
    serves: Callable[..., Serve],
) -> None:
    running = sandbox_factory(flavor="psp", kubeflow=True)
    api = running.api_client()
    ensure_namespace(api, "vsphere-kale")
    a = serves(running, "serve-a", "--no-cert-rotation")
    b = serves(running, "serve-b", "--no-cert-rotation")
    wait_for("both ready", lambda: a.ready() and b.ready(), timeout=120)
    leader_name = wait_for("a leader", lambda: lease_holder(api), timeout=5)
    leader, follower = (a, b) if leader_name == "serve-a" else (b, a)

    client.CustomObjectsApi(api).create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "alice"},
            "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
        },
    )
    wait_for("binding", lambda: read_binding(api, "alice", "vsphere-kale-psp"))
    wait_for("event", lambda: events(api, "alice", "PodSecurityBindingCreated"))
    assert {e.reporting_instance for e in events(api, "alice")} == {leader.identity}
    follower_metrics = follower.get("/metrics")[1]
    assert "vsphere_kale_podsecurity_is_leader 0.0" in follower_metrics
    assert not [
        line
        for line in follower_metrics.splitlines()
        if line.startswith("vsphere_kale_podsecurity_writes_total{")
    ]

    # The leader stops: the follower takes over within the lease duration (2 s).
    assert leader.terminate() == 0, leader.output()
    wait_for("failover", lambda: lease_holder(api) == follower.identity, timeout=2)
    client.CustomObjectsApi(api).create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "bob"},
            "spec": {"owner": {"kind": "User", "name": "bob@example.com"}},
        },
    )
    wait_for("bob", lambda: read_binding(api, "bob", "vsphere-kale-psp"), timeout=5)
    wait_for("bob event", lambda: events(api, "bob", "PodSecurityBindingCreated"))
    assert {e.reporting_instance for e in events(api, "bob")} == {follower.identity}
    assert follower.terminate() == 0, follower.output()
    assert "certificate rotation" not in follower.output() + leader.output()


def test_not_ready_until_the_informers_synced(sandbox: RunningSandbox) -> None:
    from vsphere_kale.commands.serve import _synced_check
    from vsphere_kale.kube import Kube
    from vsphere_kale.reconcile.reconciler import Reconciler
    from vsphere_kale.settings import Settings

    reconciler = Reconciler(Kube(sandbox.api_client()), Settings(), identity="r")
    check = _synced_check(reconciler)
    assert check() == (
        "the pod-security reconciler's informers have not synced yet ((not started))"
    )
    ensure_namespace(sandbox.api_client(), "vsphere-kale")
    reconciler.start()
    try:
        assert reconciler.wait_for_sync(10)
        assert check() is None
    finally:
        reconciler.stop()


def test_serve_without_the_webhook_keeps_reconciler_and_probes(
    sandbox_factory: Callable[..., RunningSandbox], serves: Callable[..., Serve]
) -> None:
    """``serve --no-webhook --no-cert-rotation``, as ``install --admission policy`` renders it."""
    running = sandbox_factory(flavor="psa", kubeflow=True, tls=True)
    api = running.api_client()
    ensure_namespace(api, "vsphere-kale")
    serve = serves(running, "serve-policy", *admission_policy.SERVER_FLAGS)
    wait_for("/readyz", serve.ready, timeout=120)
    wait_for("leader", lambda: lease_holder(api) == "serve-policy", timeout=5)
    url = f"https://127.0.0.1:{serve.port}/mutate/persistentvolumeclaims"
    request = urllib.request.Request(url, data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=serve._ctx, timeout=5)
    assert caught.value.code == 404
    assert "no webhook route" in serve.output()
    assert serve.terminate() == 0, serve.output()
    # the leader ran no rotation (it would look for the webhook's caBundle and the Secret)
    assert "certificate rotation failed" not in serve.output()
    assert 'secrets "vsphere-kale-tls" not found' not in serve.output()
