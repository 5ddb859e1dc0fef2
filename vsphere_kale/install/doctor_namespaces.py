"""doctor's warning for system namespaces an admin listed in ``podSecurity.extraNamespaces``.

Listing a namespace there is the one way the reconciler manages ``default``, ``kube-*`` or
the service's own namespace (a Profile's name never pulls them in). That can be meant (an
admin relaxing ``kube-system`` on purpose) but is far more often a copy-paste: on a cluster
``enforce=baseline`` on ``kube-system`` rejects the CNI and CSI pods, and in psp mode every
service account there gets the privileged PSP. So doctor warns, never fails. Pure.
"""

from __future__ import annotations

from vsphere_kale.install.doctor_check import Check
from vsphere_kale.policy.podsecurity import decide_protected
from vsphere_kale.settings import Settings

CHECK_NAME = "extra-namespaces"


def decide_extra_namespaces(settings: Settings) -> list[Check]:
    """One ``warn`` Check naming the system namespaces in ``extraNamespaces``, else none."""
    listed = [
        ns
        for ns in settings.pod_security.extra_namespaces
        if decide_protected(ns, service_namespace=settings.namespace)
    ]
    if not listed:
        return []
    names = ", ".join(listed)
    return [
        Check(
            CHECK_NAME,
            "warn",
            f"podSecurity.extraNamespaces lists system namespace(s) {names}: the reconciler "
            "manages their pod security (psa: enforce labels that can reject CNI and CSI pods; "
            "psp: the privileged PSP for every service account there)",
            f"remove {names} from podSecurity.extraNamespaces unless that is intended",
        )
    ]
