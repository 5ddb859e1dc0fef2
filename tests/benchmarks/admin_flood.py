"""Admission latency with and without an admin-API token flood, side by side (issue 10, #4).

    python tests/benchmarks/admin_flood.py [--reviews 300] [--flooders 16]

Three processes, as in a cluster: the sandbox API server (TokenReview is its own), the
HTTPS server (webhook + admin API, the service's defaults from the ``server`` settings
group), and this one. It measures ``--reviews`` sequential AdmissionReviews on one keep-alive
connection, first alone, then while ``--flooders`` threads in a fourth process send admin-API
status calls with a fresh garbage token each (the worst case: no cache can help). Prints
p50/p99 of both runs and what the flood was answered (401 after a TokenReview, 429 beyond
the admin API's budgets). Bounded, 127.0.0.1 only; not collected by pytest; no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import urllib3

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


def run_sandbox(conn: Connection) -> None:
    with start_sandbox(flavor="psa", seed="kubeflow-demo") as running:
        conn.send((running.url, running.admin_token))
        conn.recv()


def run_server(conn: Connection, sandbox_url: str, token: str, cert_dir: str) -> None:
    from kubernetes import client

    from vsphere_kale.kube import Kube

    configuration = client.Configuration()
    configuration.host = sandbox_url
    configuration.api_key = {"authorization": f"Bearer {token}"}
    api = client.ApiClient(configuration)
    routes = build_admin_routes(kube=Kube(api), settings=SETTINGS, reconciler=None)
    write_cert_files(
        Path(cert_dir),
        build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"]),
        force=True,
    )
    server = WebhookServer(
        SETTINGS,
        cert_file=Path(cert_dir) / "tls.crt",
        key_file=Path(cert_dir) / "tls.key",
        address="127.0.0.1",
        port=0,
        extra_handlers=routes,
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


def measure(url: str, ca: str, n: int) -> list[float]:
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca, maxsize=1)
    out = []
    for _ in range(n):
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
    return f"{label:<28} p50 {statistics.median(ms):7.2f} ms   p99 {q[98]:7.2f} ms   n={len(ms)}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--flooders", type=int, default=16)
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    sandbox_parent, sandbox_child = ctx.Pipe()
    sandbox = ctx.Process(target=run_sandbox, args=(sandbox_child,), daemon=True)
    sandbox.start()
    sandbox_url, token = sandbox_parent.recv()
    with tempfile.TemporaryDirectory() as cert_dir:
        server_parent, server_child = ctx.Pipe()
        server = ctx.Process(
            target=run_server, args=(server_child, sandbox_url, token, cert_dir), daemon=True
        )
        server.start()
        port = server_parent.recv()
        url, ca = f"https://127.0.0.1:{port}", str(Path(cert_dir) / "ca.crt")
        measure(url, ca, 30)  # warm up
        alone = measure(url, ca, args.reviews)
        # The flood lasts as long as the alone run took, times 3 (reviews are slower under it).
        seconds = max(2.0, 3 * sum(alone) / 1000)
        flood_parent, flood_child = ctx.Pipe()
        flooder = ctx.Process(
            target=flood, args=(flood_child, url, ca, args.flooders, seconds), daemon=True
        )
        flooder.start()
        time.sleep(0.5)  # let the flood ramp up before measuring (a benchmark, not a test)
        flooded = measure(url, ca, args.reviews)
        codes = flood_parent.recv()
        flooder.join(10)
        print(summary("admission alone", alone))
        print(summary(f"admission + flood x{args.flooders}", flooded))
        total = sum(codes.values())
        print(f"flood: {total} admin calls in {seconds:.1f} s ({total / seconds:.0f}/s): {codes}")
        server_parent.send("stop")
        server.join(10)
    sandbox_parent.send("stop")
    sandbox.join(10)


if __name__ == "__main__":
    main(sys.argv[1:])
