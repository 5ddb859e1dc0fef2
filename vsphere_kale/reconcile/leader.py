"""Who leads: the Lease's name and this replica's identity.

The election itself (``kubernetes.leaderelection``, adapted to stop, release and use our
client) is :class:`vsphere_kale.kube.leaderelection.LeaderElector`.
"""

from __future__ import annotations

import secrets
import socket

from vsphere_kale.kube.leaderelection import LeaderElector

__all__ = ["LEASE_NAME", "LeaderElector", "default_identity"]

LEASE_NAME = "vsphere-kale-leader"


def default_identity(pod_name: str | None = None) -> str:
    """The Pod's name when given (``POD_NAME`` via the downward API, read by the CLI), else
    hostname plus a random suffix so two processes on one host never share an identity."""
    if pod_name:
        return pod_name
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"
