"""Convergence after a fault storm ends (issue 10, finding 7).

    python tests/benchmarks/fault_recovery.py                      # 20 profiles, 75 s storm
    python tests/benchmarks/fault_recovery.py --n 50 --storm 120 --modes reset

The sandbox API server runs in this process with its Kubeflow profile controller; the
leader-elected :class:`Reconciler` (psa mode, backoff 0.2 s doubling to the 60 s cap, as
``serve`` runs it) runs against it through the real client. Then:

1. **Storm**: every ``patch namespaces`` (the reconciler's one write in psa mode) answers 500
   through the sandbox's fault injector (``sandbox.faults``); N Profiles are created, so every
   profile namespace fails again and again and its backoff climbs towards the cap. The storm
   lasts ``--storm`` seconds (long enough for the backoffs to reach 60 s).
2. **End**: the faults are cleared; the clock starts.
3. **Converged**: every one of the N namespaces carries the ``enforce`` label (polled every
   20 ms with a list). Printed: seconds from the end of the storm to the first and to the
   last namespace labelled.

``--modes`` picks the work queue's recovery behaviour, each run with a fresh sandbox:

- ``probe`` (this version): while several keys back off, one is retried every 2 s, and a
  success after failures resets every key's backoff (so recovery is noticed within ~2 s);
- ``reset``: the reset without the probe (the first fix: nothing happens until the first
  key's own backoff comes due);
- ``cap``: neither (main before issue 10's fix: each key waits out its own backoff, up to
  the 60 s cap).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import time
from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"


def run(n: int, storm: float, mode: str) -> dict[str, float]:
    from kubernetes import client

    from vsphere_kale.kube import Kube
    from vsphere_kale.reconcile.reconciler import Reconciler
    from vsphere_kale.reconcile.workqueue import WorkQueue
    from vsphere_kale.sandbox.testing import start_sandbox
    from vsphere_kale.settings import settings_from_mapping

    class CapOnlyQueue(WorkQueue):
        """The queue before the fix: a success resets only its own key's backoff."""

        def forget(self, key: str, *, recovered: bool = False) -> None:
            super().forget(key, recovered=False)

    running = start_sandbox(flavor="psa", kubeflow=True)
    api = running.api_client()
    settings = settings_from_mapping(
        {"podSecurity": {"mode": "psa"}, "storage": {"rwxStorageClass": "nfs-client"}}
    )
    reconciler = Reconciler(
        Kube(api), settings, identity="bench", leader_election=False, backoff_max=60.0
    )
    if mode == "cap":
        reconciler._queue = CapOnlyQueue(base_delay=0.2, max_delay=60.0, probe_interval=None)
    elif mode == "reset":
        reconciler._queue = WorkQueue(base_delay=0.2, max_delay=60.0, probe_interval=None)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    names = [f"storm-{i}-{secrets.token_hex(2)}" for i in range(n)]
    try:
        reconciler.start()
        # The storm: far more faults than the reconciler can use up while it lasts.
        running.sandbox.faults.inject(verb="patch", resource="namespaces", count=10**9)
        for name in names:
            custom.create_cluster_custom_object(
                "kubeflow.org",
                "v1",
                "profiles",
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "Profile",
                    "metadata": {"name": name},
                    "spec": {"owner": {"kind": "User", "name": f"{name}@example.com"}},
                },
            )
        time.sleep(storm)  # a benchmark: the storm is a duration, there is nothing to poll
        fired = running.sandbox.faults.fired
        running.sandbox.faults.clear()
        ended = time.monotonic()
        first: float | None = None
        while True:
            items = core.list_namespace().items
            labelled = {
                ns.metadata.name
                for ns in items
                if ns.metadata.name in names and (ns.metadata.labels or {}).get(ENFORCE)
            }
            if labelled and first is None:
                first = time.monotonic() - ended
            if len(labelled) == n:
                last = time.monotonic() - ended
                break
            if time.monotonic() - ended > 300:
                raise SystemExit(f"{mode}: not converged 300 s after the storm ({labelled})")
            time.sleep(0.02)
        return {"first": first or last, "last": last, "faults": float(fired)}
    finally:
        reconciler.stop()
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="profiles created during the storm")
    parser.add_argument("--storm", type=float, default=75.0, help="seconds of faults")
    parser.add_argument(
        "--modes", nargs="+", default=["probe", "reset", "cap"], choices=["probe", "reset", "cap"]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kubernetes").setLevel(logging.ERROR)  # informer reconnect INFO lines
    results: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        results[mode] = run(args.n, args.storm, mode)
        r = results[mode]
        print(
            f"{mode:5}: {args.n} namespaces, {args.storm:g} s storm ({r['faults']:.0f} faults "
            f"fired): first labelled {r['first']:.2f} s, all labelled {r['last']:.2f} s "
            "after the faults ended",
            flush=True,
        )


if __name__ == "__main__":
    main()
