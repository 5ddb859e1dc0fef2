"""What ``psaLevel: auto`` costs the one-shot reconciler, against a fixed level (sandbox).

    python tests/benchmarks/psa_auto_cost.py            # N=300 namespaces
    python tests/benchmarks/psa_auto_cost.py --n 1000

N plain namespaces are listed in ``extraNamespaces`` (no notebooks, no Istio: the most
expensive auto case, both dry runs asked), then ``reconcile --all`` runs once with
``psaLevel: baseline`` and once, on a fresh sandbox, with ``auto``. Prints wall time and the
API requests by verb (counted from the sandbox server's request log). The sandbox runs in
this process, so times include its work; compare the two lines, not absolute numbers.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import Counter

from vsphere_kale.kube import Kube
from vsphere_kale.reconcile.reconciler import reconcile_once
from vsphere_kale.sandbox.testing import start_sandbox
from vsphere_kale.sandbox.types import ResourceRef
from vsphere_kale.settings import PodSecuritySettings, Settings

_REQUEST = re.compile(r"\d{3} (GET|POST|PATCH|PUT|DELETE) (\S+)")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.verbs: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        found = _REQUEST.search(record.getMessage())
        if found:
            verb = found.group(1)
            if verb == "PATCH" and "dryRun=All" in found.group(2):
                verb = "PATCH dry-run"
            self.verbs[verb] += 1


def run(n: int, level: str) -> tuple[float, Counter[str]]:
    running = start_sandbox(seed="empty")
    try:
        names = tuple(f"ns-{i:05d}" for i in range(n))
        for name in names:
            running.sandbox.store.create_object(
                ResourceRef("", "namespaces"),
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        settings = Settings(
            pod_security=PodSecuritySettings(mode="psa", psa_level=level, extra_namespaces=names)
        )
        counter = _Count()
        server_log = logging.getLogger("vsphere_kale.sandbox.server")
        server_log.setLevel(logging.DEBUG)
        server_log.addHandler(counter)
        started = time.perf_counter()
        _, results = reconcile_once(Kube(running.api_client()), settings)
        elapsed = time.perf_counter() - started
        server_log.removeHandler(counter)
        assert len(results) == n and not any(r.failed for r in results)
        return elapsed, counter.verbs
    finally:
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    for level in ("baseline", "auto"):
        elapsed, verbs = run(args.n, level)
        per = {verb: round(count / args.n, 2) for verb, count in sorted(verbs.items())}
        print(
            f"psaLevel {level:8s}: {args.n} namespaces in {elapsed:.2f}s "
            f"({elapsed / args.n * 1000:.1f} ms each); requests per namespace {per}"
        )


if __name__ == "__main__":
    main()
