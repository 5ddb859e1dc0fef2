"""Scale benchmark of the pod-security reconciler (issue 4).

    python tests/benchmarks/reconcile_scale.py              # N=1000, psp
    python tests/benchmarks/reconcile_scale.py --n 5000 --flavor psa

The sandbox API server (with its Kubeflow profile-controller emulation) runs in a child
process, so this process's peak RSS is the reconciler's (plus the client that sends the
burst). API requests are counted in the sandbox process, through its pluggable ``authorize``
hook, which sees every request with its verb and resource.

Measured, in order:

1. **Burst**: the leader-elected :class:`Reconciler` runs here; N Profiles are created as
   fast as 8 threads can send them; time until every namespace is correct (the reconciler's
   own created/labels-applied count reaches N, then one list checks it against the API).
   Requests per namespace exclude the benchmark's own Profile creates.
2. **Steady state**: a full resync (every managed namespace through plan()) with nothing to
   do: writes and list calls it caused.
3. **Peak RSS** of this process (``ru_maxrss``), and RSS right after imports for reference.
4. **Baselines measured in the same run**, in a fresh sandbox: the time the sandbox alone
   needs to create the N profile namespaces (no reconciler), and a naive one-shot
   ``reconcile --all`` pass over them afterwards.

The Kubeflow emulation's per-step delay (50 ms, realistic for one profile) is set to 0 here:
with it, creating 1,000 profiles would take the emulation alone 5 minutes, one at a time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the sandbox process -----------------------------------------------------------------------


def sandbox_main(conn: multiprocessing.connection.Connection, flavor: str) -> None:
    import logging

    from vsphere_kale.sandbox.testing import start_sandbox

    logging.basicConfig(level=logging.WARNING)
    running = start_sandbox(flavor=flavor, kubeflow=True)
    for controller in running.sandbox.controllers:
        if hasattr(controller, "step_delay"):
            controller.step_delay = 0.0
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    authorize = running.sandbox.authorize

    def counting(attrs: Any) -> Any:
        with lock:
            counts[f"{attrs.verb} {attrs.resource or attrs.path}"] += 1
        return authorize(attrs)

    running.sandbox.authorize = counting
    conn.send(str(running.kubeconfig_path))
    while True:
        message = conn.recv()
        if message == "counts":
            with lock:
                conn.send(dict(counts))
        elif message == "idle":
            conn.send(running.sandbox.wait_idle(600))
        else:
            running.stop()
            conn.send("stopped")
            return


class SandboxProcess:
    def __init__(self, flavor: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=sandbox_main, args=(child, flavor), daemon=True)
        self.proc.start()
        if not self._conn.poll(120):
            raise RuntimeError("the sandbox process did not start")
        self.kubeconfig = str(self._conn.recv())

    def ask(self, message: str) -> Any:
        self._conn.send(message)
        if not self._conn.poll(900):
            raise RuntimeError(f"the sandbox process did not answer {message!r}")
        return self._conn.recv()

    def counts(self) -> Counter[str]:
        return Counter(self.ask("counts"))

    def stop(self) -> None:
        self.ask("stop")
        self.proc.join(30)


# --- helpers -----------------------------------------------------------------------------------


def api_client(kubeconfig: str, *, pool: int = 16) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


def burst(kubeconfig: str, n: int) -> float:
    """Create N Profiles from 8 threads; returns the seconds it took to send them."""
    from vsphere_kale.kube import Kube
    from vsphere_kale.kube import resources as r
    from vsphere_kale.playground.kubeflow import build_profile

    api = api_client(kubeconfig)
    kube = Kube(api)

    def create(i: int) -> None:
        kube.create(r.PROFILE, build_profile(f"user-{i:05d}", f"user-{i}@example.com"))

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    api.close()
    return time.monotonic() - started


def wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def diff(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return Counter({k: v for k, v in out.items() if v})


def writes(counts: Counter[str]) -> int:
    """Writes, not counting the leader's Lease renewals (every retry period, not per namespace)."""
    return sum(
        v for k, v in counts.items() if k.split(" ")[0] in WRITE_VERBS and not k.endswith("leases")
    )


def lists(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("list "))


def correct_count(kubeconfig: str, flavor: str) -> int:
    from vsphere_kale.kube import Kube
    from vsphere_kale.kube import resources as r

    api = api_client(kubeconfig)
    kube = Kube(api)
    try:
        if flavor == "psp":
            bindings = kube.list(
                r.ROLE_BINDING, label_selector="app.kubernetes.io/managed-by=vsphere-kale"
            )
            return sum(
                1 for b in bindings["items"] if b["metadata"]["namespace"].startswith("user-")
            )
        namespaces = kube.list(r.NAMESPACE)
        return sum(
            1
            for ns in namespaces["items"]
            if ns["metadata"]["name"].startswith("user-")
            and (ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
            == "baseline"
        )
    finally:
        api.close()


# --- the measurements --------------------------------------------------------------------------


def measure_reconciler(n: int, flavor: str, workers: int) -> dict[str, Any]:
    from vsphere_kale.kube import Kube
    from vsphere_kale.kube import resources as r
    from vsphere_kale.reconcile.reconciler import Reconciler
    from vsphere_kale.settings import Settings

    sandbox = SandboxProcess(flavor)
    api = api_client(sandbox.kubeconfig)
    Kube(api).create(r.NAMESPACE, {"metadata": {"name": "vsphere-kale"}})
    reconciler = Reconciler(
        Kube(api), Settings(), identity="benchmark", workers=workers, resync_seconds=3600
    )
    reconciler.start()
    assert reconciler.wait_for_sync(60)
    wait("leadership", reconciler.is_leader, 60)
    rss_started = rss_mb()
    done_label = "created" if flavor == "psp" else "labels-applied"

    def done() -> float:
        value = reconciler.metrics.registry.get_sample_value(
            "vsphere_kale_podsecurity_reconciles_total", {"result": done_label}
        )
        return float(value or 0)

    before = sandbox.counts()
    started = time.monotonic()
    sent = burst(sandbox.kubeconfig, n)
    wait("every namespace correct", lambda: done() >= n, 900)
    elapsed = time.monotonic() - started
    assert reconciler.wait_idle(120)
    assert reconciler.events.flush(120)  # Events are sent by a background thread
    after = sandbox.counts()
    burst_counts = diff(after, before)
    burst_counts["create profiles"] -= n  # the benchmark's own creates
    verified = correct_count(sandbox.kubeconfig, flavor)
    failed = reconciler.metrics.registry.get_sample_value(
        "vsphere_kale_podsecurity_reconciles_total", {"result": "failed"}
    )

    # Steady state: a full resync with nothing to do.
    assert sandbox.ask("idle")
    before_resync = sandbox.counts()
    resync_started = time.monotonic()
    enqueued = reconciler.resync_now()
    assert reconciler.wait_idle(300)
    resync_seconds = time.monotonic() - resync_started
    resync_counts = diff(sandbox.counts(), before_resync)
    peak = rss_mb()
    reconciler.stop()
    api.close()
    sandbox.stop()
    return {
        "sent": sent,
        "elapsed": elapsed,
        "verified": verified,
        "failed": failed,
        "burst_counts": burst_counts,
        "enqueued": enqueued,
        "resync_seconds": resync_seconds,
        "resync_counts": resync_counts,
        "rss_started": rss_started,
        "rss_peak": peak,
    }


def measure_baselines(n: int, flavor: str) -> dict[str, Any]:
    from vsphere_kale.kube import Kube
    from vsphere_kale.reconcile.reconciler import reconcile_once
    from vsphere_kale.settings import Settings

    sandbox = SandboxProcess(flavor)
    started = time.monotonic()
    burst(sandbox.kubeconfig, n)
    assert sandbox.ask("idle")
    namespaces_alone = time.monotonic() - started
    api = api_client(sandbox.kubeconfig)
    before = sandbox.counts()
    started = time.monotonic()
    _, results = reconcile_once(Kube(api), Settings(), identity="benchmark-one-shot")
    one_shot = time.monotonic() - started
    one_shot_counts = diff(sandbox.counts(), before)
    api.close()
    sandbox.stop()
    return {
        "namespaces_alone": namespaces_alone,
        "one_shot": one_shot,
        "one_shot_results": Counter(r.outcome for r in results),
        "one_shot_counts": one_shot_counts,
    }


def per_ns(counts: Counter[str], n: int) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items()) if v)
    return f"{total / n:.2f} ({parts})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="Profiles in the burst (1000).")
    parser.add_argument("--flavor", choices=["psp", "psa"], default="psp")
    parser.add_argument("--workers", type=int, default=8, help="Reconciler workers (8).")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()

    import vsphere_kale.reconcile.reconciler  # noqa: F401 - import cost belongs to the reference RSS

    rss_imports = rss_mb()
    n = args.n
    print(f"reconcile_scale: N={n} flavor={args.flavor} workers={args.workers}", flush=True)
    r = measure_reconciler(n, args.flavor, args.workers)
    print(f"burst: {n} Profiles sent in {r['sent']:.2f}s (8 threads)")
    print(
        f"every namespace correct after {r['elapsed']:.2f}s "
        f"(verified by list: {r['verified']}/{n}; failed reconciles: {r['failed']:.0f})"
    )
    print(f"API requests per namespace during the burst: {per_ns(r['burst_counts'], n)}")
    print(
        f"steady-state resync: {r['enqueued']} namespaces in {r['resync_seconds']:.2f}s, "
        f"writes {writes(r['resync_counts'])}, list calls {lists(r['resync_counts'])} "
        f"(all requests meanwhile, Lease renewals included: {dict(r['resync_counts']) or 0})"
    )
    print(
        f"RSS: {rss_imports:.0f} MB after imports, {r['rss_started']:.0f} MB with synced "
        f"informers, peak {r['rss_peak']:.0f} MB"
    )
    if not args.skip_baselines:
        b = measure_baselines(n, args.flavor)
        print(
            f"baseline: the sandbox alone creates the {n} profile namespaces in "
            f"{b['namespaces_alone']:.2f}s (no reconciler)"
        )
        print(
            f"baseline: one-shot `reconcile --all` afterwards: {b['one_shot']:.2f}s, "
            f"{dict(b['one_shot_results'])}, requests per namespace "
            f"{per_ns(b['one_shot_counts'], n)}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
