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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
