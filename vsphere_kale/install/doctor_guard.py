"""doctor's ``namespace-guard`` line: is the ValidatingAdmissionPolicy that narrows our
``patch namespaces`` in place, binding and all, and does it say what the settings say?

Without it (GitOps with plain kustomize renders none; an admin deleted it) our service account
may relabel any namespace in the cluster, so a missing guard where the cluster could run it is
a warning; where it cannot (Kubernetes < 1.30) or the admin chose ``never``, the line says so
and is ``ok``. Pure: the objects as read in, one :class:`Check` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vsphere_kale.install import namespace_guard
from vsphere_kale.install.doctor_check import Check, decide_unreadable
from vsphere_kale.policy import health
from vsphere_kale.settings import Settings

CHECK_NAME = "namespace-guard"
_FIX = "vsphere-kale install (GitOps: keep the guard's objects from `vsphere-kale install -o yaml`)"

Read = Mapping[str, Any] | health.Unreadable | None


def _variables(policy: Mapping[str, Any]) -> dict[str, str]:
    spec = policy.get("spec") or {}
    return {str(v.get("name")): str(v.get("expression")) for v in spec.get("variables") or []}


def decide_guard_check(
    *,
    settings: Settings,
    served: bool,
    policy: Read,
    binding: Read,
    caller: str = "",
) -> Check:
    """``served``: the cluster serves ValidatingAdmissionPolicy v1; ``policy``/``binding``
    as read (None: absent; not read when not served)."""
    choice = settings.pod_security.namespace_guard
    if not served:
        return Check(
            CHECK_NAME,
            "ok",
            "not available: this cluster serves no ValidatingAdmissionPolicy v1 (Kubernetes "
            "< 1.30), so `patch namespaces` is bounded by RBAC alone",
        )
    if isinstance(policy, health.Unreadable):
        return decide_unreadable(CHECK_NAME, policy, caller=caller)
    if isinstance(binding, health.Unreadable):
        return decide_unreadable(CHECK_NAME, binding, caller=caller)
    if policy is None or binding is None:
        if choice == "never":
            return Check(CHECK_NAME, "ok", "not installed (podSecurity.namespaceGuard: never)")
        missing = "ValidatingAdmissionPolicy" if policy is None else "its binding"
        return Check(
            CHECK_NAME,
            "warn",
            f"{missing} {namespace_guard.NAME} is missing: the service account may relabel "
            "any namespace",
            _FIX,
        )
    actions = list((binding.get("spec") or {}).get("validationActions") or [])
    if "Deny" not in actions:
        return Check(
            CHECK_NAME,
            "warn",
            f"binding {namespace_guard.NAME} has validationActions {actions}, not Deny: "
            "nothing is refused",
            _FIX,
        )
    want = _variables(namespace_guard.build_guard_policy(settings))
    live = _variables(policy)
    drift = [key for key in ("extra", "excluded") if live.get(key) != want[key]]
    if drift:
        keys = " and ".join(
            {"extra": "extraNamespaces", "excluded": "excludedNamespaces"}[k] for k in drift
        )
        return Check(
            CHECK_NAME,
            "warn",
            f"the guard was rendered with other podSecurity.{keys} than the installed "
            "settings: it refuses what the reconciler will try, or allows what it should not",
            _FIX,
        )
    return Check(
        CHECK_NAME,
        "ok",
        "in place: the service account may change only Pod Security labels, only on "
        "namespaces it manages",
    )
