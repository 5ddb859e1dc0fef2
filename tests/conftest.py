"""Shared fixtures: a real sandbox API server per test.

``sandbox``
    A :class:`vsphere_kale.sandbox.testing.RunningSandbox` (function scope): flavor ``psa``,
    seed ``empty``, authorization off (every authenticated request allowed), no Kubeflow
    emulation, plain HTTP on 127.0.0.1. Use ``sandbox.api_client()`` for a real
    ``kubernetes.client.ApiClient`` (admin), ``sandbox.api_client(token)`` for another user,
    ``sandbox.kubeconfig_path`` for kubectl or code that loads a kubeconfig,
    ``sandbox.request(method, path, body=..., content_type=...)`` for a raw call,
    ``sandbox.sandbox`` for the in-process object (``.store``, ``.faults``,
    ``.close_watches()``, hooks).

``sandbox_factory``
    ``sandbox_factory(**kwargs)`` starts another sandbox with
    :func:`vsphere_kale.sandbox.testing.start_sandbox` arguments (``flavor``, ``seed``,
    ``authorization``, ``kubeflow``, ``tls``, ``service_map``, ``watch_history``, Sandbox
    attributes such as ``bookmark_interval``); every one is stopped at teardown.

Both are cheap (milliseconds), so tests do not share state through them.

``real_control_plane``
    A :class:`vsphere_kale.controlplane.RunningControlPlane` (session scope: one etcd +
    kube-apiserver + kube-controller-manager, ~4 s to start). Tests that use it carry the
    ``realcp`` marker and clean up the namespaces they create.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vsphere_kale.controlplane import (
    ControlPlaneError,
    RunningControlPlane,
    find_binaries,
    start_control_plane,
)
from vsphere_kale.sandbox.testing import RunningSandbox, start_sandbox


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., RunningSandbox]]:
    started: list[RunningSandbox] = []

    def factory(**kwargs: Any) -> RunningSandbox:
        running = start_sandbox(**kwargs)
        started.append(running)
        return running

    yield factory
    for running in reversed(started):
        running.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., RunningSandbox]) -> RunningSandbox:
    return sandbox_factory()


# --- the real control plane (tests/realcp, marker ``realcp``) ---------------------------------


@pytest.fixture(scope="session")
def real_control_plane() -> Iterator[RunningControlPlane]:
    """One etcd + kube-apiserver 1.36 + kube-controller-manager for the whole session.

    Shared, so tests create their own namespaces (``unique_namespace``) and delete them.
    Without the binaries: a skip saying how to get them, but a failure with ``CI=true`` (a
    CI run that skips the judge proves nothing). Teardown checks, by PID, that no process is
    left behind.
    """
    try:
        find_binaries()
    except ControlPlaneError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the real control plane is missing: {exc}")
        pytest.skip("real control plane not built: run tools/control-plane/build")
    running = start_control_plane()
    pids = list(running.pids.values())
    try:
        yield running
    finally:
        running.stop()
        left = [pid for pid in pids if _alive(pid)]
        assert not left, f"control plane processes left behind: {left}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
