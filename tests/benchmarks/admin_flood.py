"""Admission latency with and without an admin-API token flood, for both layouts side by side
(issue 10, #4).

    python tests/benchmarks/admin_flood.py [--reviews 300] [--rate 100] [--flooders 16] [--rounds 2]
        [--control-plane real|sandbox] [--cpu-limit 500]

Processes as in a cluster: an API server that answers the admin API's TokenReviews (by
default the real kube-apiserver of tools/control-plane, which answers them about as fast as
a cluster's; ``--control-plane sandbox`` is slower, so its flood is thinner), the service, and
this one. The service runs in each layout in turn, alternating, in the same run:

- ``one process``: ``serve`` as it runs without ``--no-webhook`` (webhook and admin API on
  one event loop, in one container: the layout before the Deployment had two);
- ``two containers``: ``webhook`` and ``serve --no-webhook`` in two processes, as the
  Deployment runs them.

With two or more CPUs (unless ``--no-pin``) the service's processes run on CPU 0 and
everything else (API server, flooders, this client) on the others: in a cluster they are on
other machines. Each container gets the Deployment's CPU limit (``--cpu-limit`` millicores)
as the kubelet sets it, a cgroup with a CFS quota, when this machine lets us create one (root
and a writable cgroupfs; each layout's first line says whether it did, and how often the
quota stopped each container, start-up included). Memory limits are not emulated.

Each measures ``--reviews`` sequential AdmissionReviews on one keep-alive connection, first
alone, then while ``--flooders`` threads in another process send admin-API status calls with
a fresh garbage token each (the worst case: no cache can help). Prints p50/p99 of each run
and what the flood was answered (401 after a TokenReview, 429 beyond the admin API's
budgets). Bounded, 127.0.0.1 only; not collected by pytest; no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import urllib3

from vsphere_kale.controlplane import start_control_plane
from vsphere_kale.health.adminapi import build_admin_routes
from vsphere_kale.install.certs import build_cert_bundle, write_cert_files
from vsphere_kale.sandbox.testing import start_sandbox
from vsphere_kale.settings import Settings, StorageSettings
from vsphere_kale.webhook.server import WebhookServer

SETTINGS = Settings(storage=StorageSettings(rwx_storage_class="nfs-client"))
REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
            "resource": {"group": "", "version": "v1", "resource": "persistentvolumeclaims"},
            "namespace": "alice",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kubeflow:pipeline-runner"},
            "object": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "wf-kale-marshal-pvc", "namespace": "alice"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        },
    }
).encode()


def run_api_server(conn: Connection, plane: str) -> None:
    """The API server the admin API asks for TokenReviews; sends its admin kubeconfig."""
    if plane == "real":
        with start_control_plane(controller_manager=False) as real:
            conn.send(str(real.kubeconfig_path))
            conn.recv()
        return
    with start_sandbox(flavor="psa", seed="kubeflow-demo") as running:
        conn.send(str(running.kubeconfig_path))
        conn.recv()


def run_server(conn: Connection, kubeconfig: str, cert_dir: str, role: str) -> None:
    """``role``: ``both`` (one process), ``webhook`` or ``admin`` (the two containers)."""
    from vsphere_kale.kube import Kube

    routes = []
    if role != "webhook":
        kube = Kube.from_kubeconfig(kubeconfig)
        routes = list(build_admin_routes(kube=kube, settings=SETTINGS, reconciler=None))
    server = WebhookServer(
        SETTINGS,
        cert_file=Path(cert_dir) / "tls.crt",
        key_file=Path(cert_dir) / "tls.key",
        address="127.0.0.1",
        port=0,
        extra_handlers=routes,
        mutate=role != "admin",
    )

    async def main() -> None:
        await server.start()
        conn.send(server.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop(drain_timeout=1)

    asyncio.run(main())


def flood(conn: Connection, url: str, ca: str, threads: int, seconds: float) -> None:
    codes: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one() -> None:
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca, maxsize=1)
        while time.monotonic() < deadline:
            token = "garbage-" + secrets.token_hex(16)
            try:
                r = http.request(
                    "GET",
                    url + "/api/v1/namespaces/alice/status",
                    headers={"Authorization": f"Bearer {token}"},
                    retries=False,
                    timeout=10,
                )
                code = r.status
            except urllib3.exceptions.HTTPError:
                code = 0
            with lock:
                codes[code] += 1

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    conn.send(dict(codes))


def measure(url: str, ca: str, n: int, rate: float) -> list[float]:
    """``n`` reviews, one at a time, started ``rate`` per second (0: back to back). A paced
    load like a cluster's claim creations stays inside the webhook's CPU limit, so what the
    numbers show is what the admin API's work takes from it."""
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca, maxsize=1)
    out = []
    begin = time.perf_counter()
    for i in range(n):
        if rate > 0:
            time.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        start = time.perf_counter()
        r = http.request(
            "POST",
            url + "/mutate/persistentvolumeclaims",
            body=REVIEW,
            headers={"Content-Type": "application/json"},
            retries=False,
        )
        out.append((time.perf_counter() - start) * 1000)
        assert r.status == 200, r.status
    return out


def summary(label: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"{label:<36} p50 {statistics.median(ms):7.2f} ms   p99 {q[98]:7.2f} ms   n={len(ms)}"


CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
SERVICE_CPUS = {0}
"""With --pin: the service's containers run on CPU 0 ("its node"); the API server, the
flooding clients and this measuring client on the others ("the rest of the cluster"), so that
what slows admission is the service's own layout, not a busy API server on the same core."""
OTHER_CPUS = set(range(1, os.cpu_count() or 1))


def pin(pid: int, cpus: set[int], enabled: bool) -> None:
    if enabled and cpus:
        os.sched_setaffinity(pid, cpus)


class CpuLimit:
    """A container's CPU limit as the kubelet sets it: a cgroup with a CFS quota (cgroup v1's
    cpu controller, or v2's cpu.max), when this machine lets us make one (root, writable
    cgroupfs); otherwise nothing, and :attr:`applied` says so."""

    def __init__(self, name: str, millicores: int) -> None:
        self.name = name
        self.path: Path | None = None
        quota = millicores * 100  # per 100 ms period, as the kubelet writes it
        for root, setting, value in (
            (CGROUP_V1_CPU, "cpu.cfs_quota_us", str(quota)),
            (Path("/sys/fs/cgroup"), "cpu.max", f"{quota} 100000"),
        ):
            path = root / f"vsphere-kale-bench-{name}-{os.getpid()}"
            try:
                path.mkdir()
                (path / setting).write_text(value)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            self.path = path
            return

    @property
    def applied(self) -> bool:
        return self.path is not None

    def add(self, pid: int) -> None:
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> str:
        """How often the quota stopped this container (cgroup v1 or v2 ``cpu.stat``)."""
        if self.path is None:
            return ""
        stat = dict(
            line.split()
            for line in (self.path / "cpu.stat").read_text().splitlines()
            if len(line.split()) == 2
        )
        periods = stat.get("nr_throttled", "?")
        if "throttled_time" in stat:  # v1: nanoseconds
            ms = int(stat["throttled_time"]) / 1e6
        else:  # v2: microseconds
            ms = int(stat.get("throttled_usec", 0)) / 1e3
        return f"{self.name} throttled in {periods} periods ({ms:.0f} ms)"

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):  # a process still exiting: left for the OS
                self.path.rmdir()


def start_servers(
    ctx: Any, layout: str, kubeconfig: str, cert_dir: str, millicores: int, pinned: bool
) -> tuple[list[Any], list[Any], list[CpuLimit], int, int]:
    """The service in ``layout``, each container in its own CPU limit; returns (pipes to stop
    it, its processes, the limits, webhook port, admin port)."""
    roles = ["both"] if layout == "one process" else ["webhook", "admin"]
    pipes, processes, limits, ports = [], [], [], {}
    for role in roles:
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=run_server, args=(child, kubeconfig, cert_dir, role), daemon=True
        )
        process.start()
        pin(process.pid, SERVICE_CPUS, pinned)
        limit = CpuLimit(role, millicores)
        limit.add(process.pid)
        pipes.append(parent)
        processes.append(process)
        limits.append(limit)
        ports[role] = parent.recv()
    return (
        pipes,
        processes,
        limits,
        ports.get("webhook", ports.get("both", 0)),
        ports.get("admin", ports.get("both", 0)),
    )


def run_layout(
    ctx: Any, layout: str, args: argparse.Namespace, kubeconfig: str, cert_dir: str
) -> list[str]:
    pipes, processes, limits, webhook_port, admin_port = start_servers(
        ctx, layout, kubeconfig, cert_dir, args.cpu_limit, args.pin
    )
    ca = str(Path(cert_dir) / "ca.crt")
    webhook_url, admin_url = (f"https://127.0.0.1:{p}" for p in (webhook_port, admin_port))
    measure(webhook_url, ca, 30, 0)  # warm up
    started = time.perf_counter()
    alone = measure(webhook_url, ca, args.reviews, args.rate)
    # The flood outlasts the measurement: the time the alone run took, plus its latencies
    # again three times (reviews are slower under it), plus the ramp-up.
    seconds = max(2.0, (time.perf_counter() - started) + 3 * sum(alone) / 1000 + 0.5)
    flood_parent, flood_child = ctx.Pipe()
    flooder = ctx.Process(
        target=flood, args=(flood_child, admin_url, ca, args.flooders, seconds), daemon=True
    )
    flooder.start()
    pin(flooder.pid, OTHER_CPUS, args.pin)
    time.sleep(0.5)  # let the flood ramp up before measuring (a benchmark, not a test)
    flooded = measure(webhook_url, ca, args.reviews, args.rate)
    codes = flood_parent.recv()
    flooder.join(10)
    for pipe in pipes:
        pipe.send("stop")
    for process in processes:
        process.join(10)
    throttling = "; ".join(limit.throttled() for limit in limits if limit.applied)
    for limit in limits:
        limit.remove()
    total = sum(codes.values())
    cpu = f"{args.cpu_limit}m CPU limit each" if limits[0].applied else "no CPU limit"
    return [
        f"{layout}: {len(processes)} process(es), {cpu}"
        + (f"; {throttling}" if throttling else ""),
        summary(f"{layout}: admission alone", alone),
        summary(f"{layout}: + flood x{args.flooders}", flooded),
        f"{layout}: flood {total} admin calls in {seconds:.1f} s ({total / seconds:.0f}/s): "
        f"{codes}",
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--flooders", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not keep the service on CPU 0 and everything else on the other CPUs",
    )
    parser.add_argument("--rate", type=float, default=100, help="reviews per second (0: no pause)")
    parser.add_argument(
        "--control-plane",
        choices=["real", "sandbox"],
        default="real",
        help="who answers the TokenReviews: kube-apiserver (tools/control-plane/build) answers "
        "them about as fast as a cluster's; the sandbox is slower, so the flood is thinner",
    )
    parser.add_argument(
        "--cpu-limit",
        type=int,
        default=500,
        help="millicores per container (the Deployment's limits.cpu), applied when cgroups allow",
    )
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    sandbox_parent, sandbox_child = ctx.Pipe()
    sandbox = ctx.Process(target=run_api_server, args=(sandbox_child, args.control_plane))
    # Before the API server starts: its children (etcd, kube-apiserver) inherit the affinity.
    pin(os.getpid(), OTHER_CPUS, args.pin)
    sandbox.start()
    kubeconfig = sandbox_parent.recv()
    lines = []
    with tempfile.TemporaryDirectory() as cert_dir:
        write_cert_files(
            Path(cert_dir),
            build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"]),
            force=True,
        )
        # Alternating, so that a change in the machine's load hits both layouts alike.
        for _ in range(args.rounds):
            for layout in ("one process", "two containers"):
                lines += run_layout(ctx, layout, args, kubeconfig, cert_dir)
    for line in lines:
        print(line)
    sandbox_parent.send("stop")
    sandbox.join(10)


if __name__ == "__main__":
    main(sys.argv[1:])
