"""Leader failover time of the reconciler: a released Lease against one left to expire.

    python tests/benchmarks/failover.py [--rounds 5] [--lease 2]

Two replicas against the sandbox; the leader stops, either releasing its Lease (a rolling
update, SIGTERM) or not (a crash, kill -9); measured is the time until the follower leads.
The baseline, measured in the same run, is the crash: it waits out the lease duration, so the
released case should take about one retry period. The tests only check that a release is
honoured (tests/reconcile/test_reconciler.py); the numbers are here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.reconcile.reconciler import Reconciler
from vsphere_kale.sandbox.testing import RunningSandbox, start_sandbox
from vsphere_kale.settings import Settings


def _replica(running: RunningSandbox, identity: str, lease: float) -> Reconciler:
    reconciler = Reconciler(
        Kube(running.api_client()),
        Settings(),
        identity=identity,
        lease_duration=lease,
        renew_deadline=lease * 0.75,
        retry_period=0.3,
        resync_seconds=600,
    )
    reconciler.start()
    return reconciler


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("no leader within the timeout")
        time.sleep(0.01)


def failover_seconds(*, release: bool, lease: float) -> float:
    with start_sandbox(flavor="psa") as running:
        Kube(running.api_client()).create(r.NAMESPACE, {"metadata": {"name": Settings().namespace}})
        a = _replica(running, "replica-a", lease)
        _wait(a.is_leader, 30)
        b = _replica(running, "replica-b", lease)
        try:
            stopped = time.monotonic()
            a.stop(release_lease=release)
            _wait(b.is_leader, lease * 4 + 10)
            return time.monotonic() - stopped
        finally:
            b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease", type=float, default=2.0, help="lease duration, seconds")
    args = parser.parse_args()
    for release, what in ((True, "released Lease"), (False, "crash (baseline)")):
        times = [failover_seconds(release=release, lease=args.lease) for _ in range(args.rounds)]
        print(
            f"{what:18} lease {args.lease:.1f} s: median {statistics.median(times):.2f} s, "
            f"max {max(times):.2f} s over {args.rounds} rounds"
        )


if __name__ == "__main__":
    main()
