"""How much the sandbox's policy parts cost per request: RBAC evaluation and token checks.

Run: ``python tests/benchmarks/sandbox_policy.py``. Prints microseconds per call, each next
to a baseline measured in the same run (authorization off, a static token), on the
``kubeflow-demo`` seed. Not collected by pytest; never a timed assert.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client

from vsphere_kale.playground.seed import USERS
from vsphere_kale.sandbox.rbac import AllowAllAuthorizer, Authorizer
from vsphere_kale.sandbox.server import build_sandbox
from vsphere_kale.sandbox.testing import start_sandbox
from vsphere_kale.sandbox.types import Attributes, UserInfo


def per_call_us(fn: Callable[[], object], *, rounds: int) -> float:
    fn()  # warm up
    started = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    setup = build_sandbox(seed="kubeflow-demo", authorization=True)
    store = setup.sandbox.store
    rbac, allow_all = Authorizer(store), AllowAllAuthorizer()
    alice = setup.sandbox.authenticate(USERS["alice"].token)
    assert isinstance(alice, UserInfo)
    own = Attributes(alice, "list", resource="persistentvolumeclaims", namespace="alice")
    other = Attributes(alice, "list", resource="persistentvolumeclaims", namespace="bob")
    rounds = 2000

    def show(label: str, fn: Callable[[], object]) -> None:
        print(f"{label:42s} {per_call_us(fn, rounds=rounds):9.1f} us")

    show("authorize, authorization off (baseline)", lambda: allow_all.authorize(own))
    show("authorize, RBAC allow via aggregation", lambda: rbac.authorize(own))
    show("authorize, RBAC deny (full scan)", lambda: rbac.authorize(other))
    registry = setup.sandbox.authenticate.__self__  # type: ignore[attr-defined]
    sa_token = registry.token_for_service_account("alice", "default-editor")
    static = USERS["alice"].token
    show("authenticate, static token (baseline)", lambda: registry.authenticate(static))
    show("authenticate, service-account JWT", lambda: registry.authenticate(sa_token))
    setup.sandbox.close()

    # End to end over HTTP with the real client: the same list, RBAC off vs on.
    for authorization in (False, True):
        with start_sandbox(seed="kubeflow-demo", authorization=authorization) as running:
            core = client.CoreV1Api(running.api_client(static))

            def list_pvcs(api: client.CoreV1Api = core) -> object:
                return api.list_namespaced_persistent_volume_claim("alice")

            took = per_call_us(list_pvcs, rounds=200) / 1000
            label = "RBAC on" if authorization else "RBAC off (baseline)"
            print(f"{'HTTP list PVCs as alice, ' + label:42s} {took:9.2f} ms")


if __name__ == "__main__":
    main()
