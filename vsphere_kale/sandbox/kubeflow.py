"""Moved to :mod:`vsphere_kale.playground.kubeflow`: the profile controller is now an API
client that runs on either control plane. Kept for existing imports of the builders."""

from vsphere_kale.playground.kubeflow import (
    PROFILE_NAMESPACE_LABELS,
    PROFILES,
    build_profile,
    plan_profile,
)

__all__ = ["PROFILES", "PROFILE_NAMESPACE_LABELS", "build_profile", "plan_profile"]
