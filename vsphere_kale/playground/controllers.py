"""The emulated cluster controllers of the playground, started together on any API server.

Kubeflow's profile controller and the vSphere CSI / nfs-client provisioners are API clients
(:mod:`~vsphere_kale.playground.kubeflow`, :mod:`~vsphere_kale.playground.storage`), so one
call starts them on the embedded sandbox or on a real kube-apiserver.
"""

from __future__ import annotations

import time
from typing import Protocol

from vsphere_kale.kube import Kube
from vsphere_kale.playground.kubeflow import start_profile_controller
from vsphere_kale.playground.storage import start_provisioners


class _Controller(Protocol):
    def wait_idle(self, timeout: float = 5.0) -> bool: ...

    def stop(self, timeout: float = 2.0) -> None: ...


class PlaygroundControllers:
    """Started by :func:`start_controllers`; :meth:`stop` ends every thread they run."""

    def __init__(self, controllers: list[_Controller]) -> None:
        self._controllers = controllers

    def wait_idle(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(c.wait_idle(max(0.0, deadline - time.monotonic())) for c in self._controllers)

    def stop(self) -> None:
        for controller in self._controllers:
            controller.stop()
        self._controllers = []


def start_controllers(
    api: Kube, *, kubeflow: bool = True, storage: bool = True
) -> PlaygroundControllers:
    """Start the profile controller and/or the provisioners on ``api``; all or none."""
    started: list[_Controller] = []
    try:
        if kubeflow:
            started.append(start_profile_controller(api))
        if storage:
            started.append(start_provisioners(api))
    except BaseException:
        for controller in started:
            controller.stop()
        raise
    return PlaygroundControllers(started)
