"""Status latency: p50/p95 of a namespace status with 300 PVCs and 500 Events.

    python tests/benchmarks/status_latency.py [--calls 200] [--pvcs 300] [--events 500]

Measured in one run, against one sandbox API server (psp flavor, real RBAC):

* baseline: one raw ``list persistentvolumeclaims`` in the namespace with the kubernetes
  client (JSON decoded, no model deserialisation) -- the floor any status call pays;
* ``collect_status`` called directly (what the admin API does after authorization);
* ``GET /api/v1/namespaces/{ns}/status`` through the admin API over HTTPS (TokenReview cached,
  two SubjectAccessReviews, then the reads), as the ``vsphere-kale`` ServiceAccount with the
  shipped RBAC, the caller being the namespace's owner;
* ``GET {base_url}vsphere-kale/api/status`` through the Jupyter server extension when
  ``vsphere_kale.jupyter`` can be started (it calls the admin API in turn).

Also printed: the API requests one status call makes (counted on the service's client).
Goal (docs/benchmarks.md): p95 <= 150 ms through the admin API. Not collected by pytest; no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config

from vsphere_kale.controlplane.config import free_port
from vsphere_kale.health.adminapi import build_admin_routes
from vsphere_kale.health.status import collect_status
from vsphere_kale.install.certs import build_cert_bundle, write_cert_files
from vsphere_kale.kube import Kube
from vsphere_kale.sandbox.kubeconfig import write_kubeconfig
from vsphere_kale.sandbox.testing import RunningSandbox, start_sandbox
from vsphere_kale.sandbox.types import ResourceRef
from vsphere_kale.settings import Settings, StorageSettings
from vsphere_kale.webhook.server import WebhookServer

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(storage=StorageSettings(rwx_storage_class="nfs-client"))
NAMESPACE = "alice"


class CountingPool:
    """The service client's urllib3 pool, counting requests (nothing is patched)."""

    def __init__(self, inner: urllib3.PoolManager) -> None:
        self.inner = inner
        self.count = 0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.inner.request(method, url, *args, **kwargs)

    def clear(self) -> None:
        self.inner.clear()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user + system) of this process and of ``pids`` (Linux /proc; else ours)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def measure(
    name: str,
    fn: Callable[[], object],
    *,
    calls: int,
    pids: Sequence[int] = (),
    warmup: int = 5,
) -> dict[str, Any]:
    """Wall-clock p50/p95 and CPU per call (this process + ``pids``: the API server, Jupyter).

    CPU per call hardly depends on how busy the machine is; latency does.
    """
    for _ in range(warmup):
        fn()
    samples = []
    cpu_before = cpu_seconds(pids)
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    cpu = (cpu_seconds(pids) - cpu_before) * 1000 / calls
    row = {
        "name": name,
        "p50": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "max": max(samples),
        "cpu": cpu,
    }
    print(
        f"{name:<44} p50 {row['p50']:6.1f} ms  p95 {row['p95']:6.1f} ms  "
        f"max {row['max']:6.1f} ms  cpu {cpu:5.1f} ms/call"
    )
    return row


def populate(running: RunningSandbox, *, pvcs: int, events: int) -> None:
    """Bulk claims and events straight into the store (seed-style writes, no admission)."""
    store = running.sandbox.store
    classes = ["vsan-default-storage-policy", "nfs-client"]
    for i in range(pvcs):
        rwx = i % 3 == 0
        store.create_object(
            ResourceRef("", "persistentvolumeclaims"),
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"data-{i:03d}", "namespace": NAMESPACE},
                "spec": {
                    "accessModes": ["ReadWriteMany" if rwx else "ReadWriteOnce"],
                    "storageClassName": classes[i % 2],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
                "status": {"phase": "Pending" if i % 5 == 0 else "Bound"},
            },
        )
    for i in range(events):
        target = f"data-{i % max(pvcs, 1):03d}"
        store.create_object(
            ResourceRef("", "events"),
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{target}.{i}", "namespace": NAMESPACE},
                "involvedObject": {
                    "kind": "PersistentVolumeClaim",
                    "name": target,
                    "namespace": NAMESPACE,
                },
                "reason": "ProvisioningFailed" if i % 2 else "ExternalProvisioning",
                "type": "Warning" if i % 2 else "Normal",
                "message": f"event {i}: failed to provision volume",
                "lastTimestamp": f"2026-11-25T19:{i // 60 % 60:02d}:{i % 60:02d}Z",
            },
        )


def service_account_token(running: RunningSandbox) -> str:
    """A token of the vsphere-kale ServiceAccount, with deploy/base/rbac.yaml applied."""
    admin = running.api_client()
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    core.create_namespace({"metadata": {"name": "vsphere-kale"}})
    core.create_namespaced_service_account("vsphere-kale", {"metadata": {"name": "vsphere-kale"}})
    for name in ("rbac.yaml", "reconciler-clusterrole.yaml"):
        for doc in yaml.safe_load_all((REPO / "deploy/base" / name).read_text()):
            if not doc:
                continue
            ns = doc["metadata"].get("namespace")
            create = {
                "ClusterRole": lambda d: rbac.create_cluster_role(d),
                "ClusterRoleBinding": lambda d: rbac.create_cluster_role_binding(d),
                "Role": lambda d, ns=ns: rbac.create_namespaced_role(ns, d),
                "RoleBinding": lambda d, ns=ns: rbac.create_namespaced_role_binding(ns, d),
            }[doc["kind"]]
            create(doc)
    token = core.create_namespaced_service_account_token(
        "vsphere-kale", "vsphere-kale", {"spec": {"expirationSeconds": 3600}}
    ).status.token
    return str(token)


class AdminServer:
    def __init__(self, routes: list[Any], cert_dir: Path) -> None:
        bundle = build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"])
        write_cert_files(cert_dir, bundle, force=True)
        self.ca_file = str(cert_dir / "ca.crt")
        self.server = WebhookServer(
            SETTINGS,
            cert_file=cert_dir / "tls.crt",
            key_file=cert_dir / "tls.key",
            address="127.0.0.1",
            port=0,
            extra_handlers=routes,
        )
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("admin server did not start")
        self.url = f"https://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(drain_timeout=2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run_sandbox(conn: Connection, pvcs: int, events: int) -> None:
    """Child process: the sandbox API server, populated, until the parent says stop.

    A separate process, as a real API server is: in-process, its JSON encoding would compete
    with the client for the GIL and the numbers would describe Python, not the design.
    """
    with start_sandbox(flavor="psp", seed="kubeflow-demo", authorization=True) as running:
        populate(running, pvcs=pvcs, events=events)
        service_token = service_account_token(running)
        conn.send((running.url, dict(running.tokens), service_token))
        conn.recv()


def api_client_for(url: str, token: str, directory: Path) -> client.ApiClient:
    path = write_kubeconfig(directory / f"kubeconfig-{abs(hash(token))}", url, {"user": token})
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.ApiClient(configuration)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--pvcs", type=int, default=300)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_sandbox, args=(child, args.pvcs, args.events), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the sandbox process did not start within 60 s")
        url, tokens, service_token = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            measure_all(url, tokens, service_token, Path(tmp), args, sandbox_pid=proc.pid or 0)
    finally:
        parent.send("stop")
        proc.join(15)
        if proc.is_alive():
            proc.terminate()


def measure_all(
    url: str,
    tokens: dict[str, str],
    service_token: str,
    tmp: Path,
    args: argparse.Namespace,
    *,
    sandbox_pid: int,
) -> None:
    admin = api_client_for(url, tokens["admin"], tmp)
    core = client.CoreV1Api(admin)
    api = api_client_for(url, service_token, tmp)
    pool = CountingPool(api.rest_client.pool_manager)
    api.rest_client.pool_manager = pool
    kube = Kube(api)

    def raw_list() -> Any:
        response = core.list_namespaced_persistent_volume_claim(NAMESPACE, _preload_content=False)
        return json.loads(response.data)

    listed = len(raw_list()["items"])
    print(
        f"namespace {NAMESPACE}: {listed} PVCs, {args.events} extra PVC Events; "
        f"{args.calls} calls each; sandbox API server in its own process\n"
    )

    def direct() -> Any:
        return collect_status(
            kube, NAMESPACE, settings=SETTINGS, mode="psp", can_reconcile=False, source="admin-api"
        )

    rows = [
        measure("baseline: raw list PVC (JSON)", raw_list, calls=args.calls, pids=[sandbox_pid]),
        measure("collect_status() direct", direct, calls=args.calls, pids=[sandbox_pid]),
    ]
    before = pool.count
    direct()
    direct_requests = pool.count - before

    reconciler = FixedModeReconciler()
    routes = build_admin_routes(kube=kube, settings=SETTINGS, reconciler=reconciler)
    server = AdminServer(routes, tmp / "certs")
    try:
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=server.ca_file)
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        status_url = f"{server.url}/api/v1/namespaces/{NAMESPACE}/status"

        def via_admin_api() -> None:
            response = http.request("GET", status_url, headers=headers, timeout=30)
            if response.status != 200:
                raise RuntimeError(f"admin API answered {response.status}: {response.data!r}")
            json.loads(response.data)

        rows.append(
            measure(
                "admin API GET status (HTTPS)", via_admin_api, calls=args.calls, pids=[sandbox_pid]
            )
        )
        before = pool.count
        via_admin_api()
        api_requests = pool.count - before
        rows.extend(jupyter_rows(tokens, server, tmp, calls=args.calls, sandbox_pid=sandbox_pid))
    finally:
        server.stop()

    print(
        f"\nAPI requests per status call: {direct_requests} (collect_status), "
        f"{api_requests} through the admin API (TokenReview cached, 2 SubjectAccessReviews)"
    )
    base = rows[0]["p50"]
    print("relative to the baseline's p50 (the machine's load shows in every row alike):")
    for row in rows[1:]:
        print(f"  {row['name']:<44} p50 x{row['p50'] / base:4.1f}   p95 x{row['p95'] / base:4.1f}")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("goal: admin API p95 <= 150 ms ->", "met" if rows[2]["p95"] <= 150 else "NOT met")


class FixedModeReconciler:
    """What ``serve`` passes: the reconciler's resolved mode (no discovery per status call).
    Reconcile is not measured here."""

    mode = "psp"

    def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> Any:
        raise NotImplementedError("not part of the benchmark")

    def reconcile_all(self, *, timeout: float = 30.0) -> Any:
        raise NotImplementedError("not part of the benchmark")


def jupyter_rows(
    tokens: dict[str, str], server: AdminServer, tmp: Path, *, calls: int, sandbox_pid: int
) -> list[dict[str, Any]]:
    """Through the Jupyter server extension (a real ``jupyter server`` process) -> admin API.

    The extension is configured as in a Kubeflow pod: the admin API's URL and CA, the
    namespace, and a token file (here alice's token, standing in for the pod's).
    """
    token_file = tmp / "notebook-token"
    token_file.write_text(tokens["alice"])
    port = free_port()
    jupyter_token = secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--allow-root",  # containers and CI run as root; harmless otherwise
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={jupyter_token}",
        f"--ServerApp.root_dir={tmp}",
        "--ServerApp.jpserver_extensions={'vsphere_kale.jupyter': True}",
        f"--VsphereKaleApp.admin_url={server.url}",
        "--VsphereKaleApp.namespace=alice",
        f"--VsphereKaleApp.token_file={token_file}",
        f"--VsphereKaleApp.ca_file={server.ca_file}",
    ]
    log_file = tmp / "jupyter.log"
    # A file, not a pipe: a full pipe would block the server mid-benchmark.
    with log_file.open("wb") as log_out:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_out)
    http = urllib3.PoolManager()
    url = f"http://127.0.0.1:{port}/vsphere-kale/api/status"
    headers = {"Authorization": f"token {jupyter_token}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.request("GET", url, headers=headers, timeout=5).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                err = log_file.read_text(errors="replace")[-2000:]
                print(f"jupyter extension: server did not answer; skipped\n{err}")
                return []
            time.sleep(0.2)

        def via_jupyter() -> None:
            response = http.request("GET", url, headers=headers, timeout=30)
            body = json.loads(response.data)
            if response.status != 200 or body.get("source") != "admin-api":
                raise RuntimeError(f"extension answered {response.status}: {response.data!r}")

        return [
            measure(
                "Jupyter extension GET status -> admin API",
                via_jupyter,
                calls=calls,
                pids=[sandbox_pid, proc.pid],
            )
        ]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
