"""The differential suite: the same scenarios on the embedded sandbox and on kube-apiserver.

``control_plane`` is parametrized ``embedded`` / ``real``; each yields a
:class:`differential_scenarios.Target` (admin API client, one per seeded user, kubectl). The
real one shares the session's ``real_control_plane`` (tests/conftest.py: a skip saying how
to build it, a failure under ``CI=true``). Every test here carries the ``differential``
marker, and the ``real`` half also ``realcp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from differential_scenarios import ControlPlaneTarget, SandboxTarget, Target

from vsphere_kale.sandbox.testing import start_sandbox

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.differential)
            if "[real" in item.nodeid or "both" in item.name:
                item.add_marker(pytest.mark.realcp)


@pytest.fixture(scope="session")
def embedded_target() -> Iterator[Target]:
    # The kubeflow-demo seed gives the same users (and tokens) as the real control plane's
    # token file; RBAC on, TLS so kubectl sends its token.
    running = start_sandbox(seed="kubeflow-demo", authorization=True, tls=True)
    try:
        yield SandboxTarget(running)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def real_target(request: pytest.FixtureRequest) -> Target:
    return ControlPlaneTarget(request.getfixturevalue("real_control_plane"))


@pytest.fixture(params=["embedded", "real"])
def control_plane(request: pytest.FixtureRequest) -> Target:
    name = "embedded_target" if request.param == "embedded" else "real_target"
    target: Target = request.getfixturevalue(name)
    return target
