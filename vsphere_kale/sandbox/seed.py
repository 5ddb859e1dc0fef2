"""Moved to :mod:`vsphere_kale.playground.seed` (the seed runs on either control plane).

Kept so existing imports (``from vsphere_kale.sandbox.seed import USERS``) go on working.
"""

from vsphere_kale.playground.seed import (
    BLOCK_CLASS,
    MARSHAL_PVC,
    NFS_CLASS,
    NFS_PROVISIONER,
    PROVISIONING_FAILED,
    SEEDS,
    USERS,
    VSPHERE_CSI,
    apply_seed,
)

__all__ = [
    "BLOCK_CLASS",
    "MARSHAL_PVC",
    "NFS_CLASS",
    "NFS_PROVISIONER",
    "PROVISIONING_FAILED",
    "SEEDS",
    "USERS",
    "VSPHERE_CSI",
    "apply_seed",
]
