"""What admission adds to creating a claim, end to end, on the real kube-apiserver 1.36; and
the webhook's throughput against a bare tornado TLS server, in the same run.

Run: ``python tests/benchmarks/admission_cost.py`` (about two minutes; needs the binaries of
``tools/control-plane/build`` and, for the throughput part, ``wrk`` (Debian package); not
collected by pytest).

**1. Admission cost.** One control plane (etcd + kube-apiserver on 127.0.0.1, no controller
manager) with every setup installed at once, each selecting its own labelled namespace:

* **none**: no admission of ours (the API server's own plugins only);
* **policy**: what ``install --admission policy`` renders (MutatingAdmissionPolicy and the
  ValidatingAdmissionPolicy for the warning; settings inlined), bindings narrowed to the
  namespace;
* **webhook x1**: one ``vsphere-kale webhook`` process on 127.0.0.1, called by the API server
  over TLS through a MutatingWebhookConfiguration with ``clientConfig.url``;
* **webhook x2**: two such processes (two replicas) on one port (``--reuse-port``): the
  kernel spreads the API server's connections over them, as a Service spreads them over pods.

The same ReadWriteMany claim on a block class is created with ``dryRun=All`` (admission and
validation in full, nothing written) through the product's adapter (:class:`Kube`), in
interleaved rounds (the machine is shared: every setup sees the same noise): first one at a
time (``--count`` per setup), then ``--concurrency`` clients at once (the case where a second
replica can matter). Every create is checked: rewritten with the warning, or untouched.

**2. Throughput.** ``tests/benchmarks/webhook_load.py``'s servers and load (``wrk``, 8
keep-alive connections, alternating rounds): the bare tornado baseline, the webhook as one
process, and ``webhook --workers 2``.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "realcp"))
sys.path.insert(0, str(HERE))

import webhook_load as wl  # noqa: E402
from admission_policy_helpers import (  # noqa: E402
    BLOCK,
    create_claim,
    is_rewritten,
    rwx_claim,
    unique,
)
from realcp_helpers import api_client_for, free_port  # noqa: E402

from vsphere_kale.controlplane import start_control_plane  # noqa: E402
from vsphere_kale.install import certs  # noqa: E402
from vsphere_kale.install.admission_policy import build_policy_objects  # noqa: E402
from vsphere_kale.kube import Kube  # noqa: E402
from vsphere_kale.kube import resources as r  # noqa: E402
from vsphere_kale.settings import load_settings, settings_from_mapping  # noqa: E402
from vsphere_kale.webhook import admission  # noqa: E402

TARGET = "nfs-client"
WARM_UP = 30
SETUP_LABEL = "admission-cost.vsphere-kale.io/setup"
SETUPS = ("none", "policy", "webhook x1", "webhook x2")


def label_of(setup: str) -> str:
    return setup.replace(" ", "-")


# --- part 1: admission cost on the real control plane ------------------------------------------


def check(setup: str, stored: dict[str, Any], warnings: list[str]) -> None:
    rewritten = is_rewritten(stored, warnings, TARGET) or (
        # the webhook's warning comes without the validating policy's prefix
        stored["spec"]["storageClassName"] == TARGET and bool(warnings)
    )
    if rewritten != (setup != "none"):
        raise SystemExit(f"{setup}: class {stored['spec']['storageClassName']}, {warnings}")


def sequential(kube: Kube, setup: str, namespace: str, count: int) -> list[float]:
    claim = rwx_claim(BLOCK)
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        stored, warnings = create_claim(kube, namespace, claim)
        times.append((time.perf_counter() - started) * 1000)
        check(setup, stored, warnings)
    return times


def concurrent(
    kube: Kube, setup: str, namespace: str, count: int, clients: int
) -> tuple[list[float], float]:
    """``clients`` threads creating ``count`` claims between them; (latencies, creates/s)."""
    claim = rwx_claim(BLOCK)
    times: list[float] = []
    lock = threading.Lock()
    per_client = max(1, count // clients)

    def run() -> None:
        mine = []
        for _ in range(per_client):
            started = time.perf_counter()
            stored, warnings = create_claim(kube, namespace, claim)
            mine.append((time.perf_counter() - started) * 1000)
            check(setup, stored, warnings)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, len(times) / (time.perf_counter() - began)


def wait_until(kube: Kube, setup: str, namespace: str, *, timeout: float = 60) -> None:
    """Admission configuration reaches the API server through informers: poll."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check(setup, *create_claim(kube, namespace, rwx_claim(BLOCK)))
            return
        except SystemExit:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@contextmanager
def webhook_processes(
    workdir: Path, port: int, *, replicas: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    cmd = [
        sys.executable, "-m", "vsphere_kale.cli", "webhook",
        "--cert-file", str(workdir / "tls.crt"), "--key-file", str(workdir / "tls.key"),
        "--address", "127.0.0.1", "--port", str(port), "--rwx-storage-class", TARGET,
        "--reuse-port",
    ]  # fmt: skip
    procs = []
    try:
        for i in range(replicas):
            log = (workdir / f"webhook-{port}-{i}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            )
        for i, proc in enumerate(procs):
            log_path = workdir / f"webhook-{port}-{i}.log"
            deadline = time.monotonic() + 30
            while "serving HTTPS" not in log_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"webhook did not start: {log_path.read_text()}")
                time.sleep(0.05)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def webhook_configuration(name: str, url: str, ca_cert: bytes, setup: str) -> dict[str, Any]:
    """What install renders (deploy/base), pointed at ``url``, for one setup's namespace."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "pvc-rwx.vsphere-kale.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
                "matchPolicy": "Equivalent",
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["persistentvolumeclaims"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {SETUP_LABEL: label_of(setup)}},
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_cert).decode()},
            }
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def admission_cost(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ca_cert, ca_key = certs.build_ca("admission-cost benchmark CA", days=1)
    tls_cert, tls_key = certs.build_serving_cert(
        ca_cert, ca_key, dns_names=[], ip_addresses=[ipaddress.ip_address("127.0.0.1")], days=1
    )
    (workdir / "tls.crt").write_bytes(tls_cert)
    (workdir / "tls.key").write_bytes(tls_key)
    seq: dict[str, list[float]] = {s: [] for s in SETUPS}
    par: dict[str, list[float]] = {s: [] for s in SETUPS}
    rates: dict[str, list[float]] = {s: [] for s in SETUPS}
    cpu: dict[str, list[float]] = {}
    cp = start_control_plane(controller_manager=False)
    try:
        kube = Kube(api_client_for(cp))
        spaces = {s: unique(f"bench-{label_of(s)}") for s in SETUPS}
        for setup, ns in spaces.items():
            kube.create(
                r.NAMESPACE,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {SETUP_LABEL: label_of(setup)}},
                },
            )
        settings = settings_from_mapping(
            {"namespace": unique("kale-bench"), "storage": {"rwxStorageClass": TARGET}}
        )
        selector = {"namespaceSelector": {"matchLabels": {SETUP_LABEL: "policy"}}}
        for obj in build_policy_objects(settings, api_version="v1"):
            if obj["kind"].endswith("Binding"):
                obj["spec"]["matchResources"] = selector
            kube.create(r.resource_for(obj["apiVersion"], obj["kind"]), obj)
        ports = {"webhook x1": free_port(), "webhook x2": free_port()}
        with ExitStack() as stack:
            procs = {
                setup: stack.enter_context(
                    webhook_processes(workdir, port, replicas=1 if setup == "webhook x1" else 2)
                )
                for setup, port in ports.items()
            }
            for setup, port in ports.items():
                url = f"https://127.0.0.1:{port}/mutate/persistentvolumeclaims"
                body = webhook_configuration(f"bench-{label_of(setup)}", url, ca_cert, setup)
                kube.create(r.MUTATING_WEBHOOK_CONFIGURATION, body)
            for setup, ns in spaces.items():
                wait_until(kube, setup, ns)
                sequential(kube, setup, ns, WARM_UP)
            before = {s: [wl.cpu_seconds(p.pid) for p in ps] for s, ps in procs.items()}
            chunk = max(1, args.count // args.rounds)
            for round_index in range(args.rounds):
                order = SETUPS if round_index % 2 == 0 else SETUPS[::-1]
                for setup in order:
                    seq[setup] += sequential(kube, setup, spaces[setup], chunk)
            for round_index in range(args.rounds):
                order = SETUPS if round_index % 2 == 0 else SETUPS[::-1]
                for setup in order:
                    times, rate = concurrent(
                        kube,
                        setup,
                        spaces[setup],
                        args.concurrent_count // args.rounds,
                        args.concurrency,
                    )
                    par[setup] += times
                    rates[setup].append(rate)
            for setup, ps in procs.items():
                cpu[setup] = [
                    wl.cpu_seconds(p.pid) - b for p, b in zip(ps, before[setup], strict=True)
                ]
    finally:
        cp.stop()
    return {"seq": seq, "par": par, "rates": rates, "cpu": cpu, "chunk": chunk}


def print_admission_cost(args: argparse.Namespace, got: dict[str, Any]) -> None:
    seq, par, rates, cpu = got["seq"], got["par"], got["rates"], got["cpu"]
    print(
        f"\n1. creating a claim on kube-apiserver 1.36 (dryRun=All), {args.rounds} interleaved "
        f"rounds\n\n  one at a time, {got['chunk'] * args.rounds} creates per setup:"
    )
    base = statistics.median(seq["none"])
    print(f"  {'setup':<12}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'mean ms':>9}{'p50 - none':>12}")
    for setup in SETUPS:
        t = seq[setup]
        p50 = statistics.median(t)
        print(
            f"  {setup:<12}{p50:>8.2f}{percentile(t, 0.9):>8.2f}{percentile(t, 0.99):>8.2f}"
            f"{statistics.fmean(t):>9.2f}{p50 - base:>+12.2f}"
        )
    print(f"\n  {args.concurrency} clients at once, {len(par['none'])} creates per setup:")
    base = statistics.median(par["none"])
    print(f"  {'setup':<12}{'p50 ms':>8}{'p99 ms':>8}{'creates/s':>11}{'p50 - none':>12}")
    for setup in SETUPS:
        t = par[setup]
        p50 = statistics.median(t)
        rate = statistics.median(rates[setup])
        print(
            f"  {setup:<12}{p50:>8.2f}{percentile(t, 0.99):>8.2f}{rate:>11.0f}{p50 - base:>+12.2f}"
        )
    split = ", ".join(f"{c:.2f} s" for c in cpu["webhook x2"])
    print(f"\n  webhook x2: CPU time of each replica over the run: {split}")


# --- part 2: throughput against the bare tornado baseline --------------------------------------


def total_cpu(pid: int) -> float:
    """The process and its children (``--workers``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return wl.cpu_seconds(pid) + sum(wl.cpu_seconds(int(c)) for c in children)


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, wl.LoadResult]:
    body = wl.review_body()
    settings = load_settings(None, environ={}, rwx_storage_class=TARGET)
    response = admission.review(json.loads(body), settings).response
    bundle = certs.build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"])
    (workdir / "tp").mkdir()
    certs.write_cert_files(workdir / "tp", bundle, force=False)
    cert, key, ca = (workdir / "tp" / n for n in ("tls.crt", "tls.key", "ca.crt"))
    body_file, script = workdir / "body.json", workdir / "post.lua"
    body_file.write_bytes(body)
    (workdir / "response.json").write_bytes(json.dumps(response, separators=(",", ":")).encode())
    script.write_text(wl.WRK_SCRIPT)
    webhook = [
        sys.executable, "-m", "vsphere_kale.cli", "webhook", "--cert-file", str(cert),
        "--key-file", str(key), "--address", "127.0.0.1", "--rwx-storage-class", TARGET,
    ]  # fmt: skip
    commands = {
        "baseline": (
            [sys.executable, wl.__file__, "--baseline-server", str(cert), str(key),
             str(workdir / "response.json")],
            r"port (\d+)",
        ),
        "webhook": ([*webhook, "--port", "0"], r"serving HTTPS on 127\.0\.0\.1:(\d+)"),
        "webhook --workers 2": (
            [*webhook, "--port", str(free_port()), "--workers", "2"],
            r"serving HTTPS on 127\.0\.0\.1:(\d+)",
        ),
    }  # fmt: skip
    use_wrk = shutil.which("wrk") is not None
    runs: dict[str, list[wl.LoadResult]] = {name: [] for name in commands}
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                wl.started(name, cmd, workdir / f"{label_of(name)}.log", pattern)
            )
            for name, (cmd, pattern) in commands.items()
        }

        def load(name: str, seconds: float) -> wl.LoadResult:
            port, pid = servers[name]
            before = total_cpu(pid)
            if use_wrk:
                result = wl.wrk_load(port, body_file, script, seconds)
            else:
                result = wl.python_load(port, ca, body, seconds)
            result.cpu_seconds = total_cpu(pid) - before
            return result

        order = list(commands)
        for name in order:
            load(name, wl.WARMUP_SECONDS)
        for round_index in range(args.throughput_rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                runs[name].append(load(name, wl.ROUND_SECONDS))
    return {name: wl.combine(results) for name, results in runs.items()}


def print_throughput(args: argparse.Namespace, got: dict[str, wl.LoadResult]) -> None:
    tool = f"wrk -t1 -c{wl.CONNECTIONS}" if shutil.which("wrk") else "python threads"
    print(
        f"\n2. throughput, keep-alive, {args.throughput_rounds} alternating rounds of "
        f"{wl.ROUND_SECONDS} s ({tool}):"
    )
    base = got["baseline"].requests_per_second
    for name, result in got.items():
        ratio = result.requests_per_second / base
        print(f"  {name:<20} {wl.fmt(result)}  ratio {ratio:.2f}")
    print(f"  goal: webhook >= {wl.GOAL_RATIO} x baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=300, help="one-at-a-time creates per setup")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once")
    parser.add_argument("--concurrent-count", type=int, default=400, help="creates per setup")
    parser.add_argument("--throughput-rounds", type=int, default=4)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="admission-cost-") as tmp:
        workdir = Path(tmp)
        cost = admission_cost(args, workdir)
        tp = None if args.skip_throughput else throughput(args, workdir)
    print(
        f"admission cost benchmark ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})"
    )
    print_admission_cost(args, cost)
    if tp is not None:
        print_throughput(args, tp)
    print(f"\ntotal time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
