"""The status document's ``podSecurity.needs``: the level the namespace needs, and a mismatch.

Called from :func:`vsphere_kale.health.status.collect_status` (psa mode only: in psp mode the
RoleBinding grants a PodSecurityPolicy, not a level). It reads what the status caller may read
(the namespace's ``FailedCreate`` Events; Istio CNI's DaemonSet/ConfigMap, usually not
readable by a notebook's service account, and then "unknown", which the decision treats as
"istio-init"), sends **no** dry run (a status page writes nothing, not even a dry run), and
decides with :func:`vsphere_kale.policy.psa_level.decide_psa_level`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vsphere_kale.health.psa_evidence import fetch_istio_cni, fetch_psa_decision
from vsphere_kale.kube import Kube
from vsphere_kale.policy.health import decide_overall
from vsphere_kale.policy.kale_podsecurity import IstioCniFacts, decide_injection
from vsphere_kale.policy.psa_level import PsaDecision, build_needs_section
from vsphere_kale.settings import Settings

_RANK = {"healthy": 0, "degraded": 1, "broken": 2}


def fetch_needs(
    kube: Kube, namespace_obj: Mapping[str, Any], *, settings: Settings, runs_notebooks: bool
) -> PsaDecision:
    # With a fixed psaLevel the question is what the evidence alone asks (keep=False); with
    # auto, what the reconciler keeps too. Istio CNI matters only where Istio injects.
    labels = (namespace_obj.get("metadata") or {}).get("labels") or {}
    injected, _ = decide_injection(labels)
    return fetch_psa_decision(
        kube,
        namespace_obj,
        runs_notebooks=runs_notebooks,
        istio_cni=fetch_istio_cni(kube) if injected else IstioCniFacts(),
        server_minor=None,
        dry_run=False,
        keep=settings.pod_security.psa_level == "auto",
    )


def add_needs(doc: dict[str, Any], decision: PsaDecision, *, settings: Settings) -> None:
    """Put ``needs`` into ``doc["podSecurity"]`` and a mismatch into ``problems``/``overall``."""
    needs = build_needs_section(decision, configured=settings.pod_security.psa_level)
    doc["podSecurity"]["needs"] = needs
    if needs["mismatch"] is None:
        return
    hint = (
        f"Set podSecurity.psaLevel: {decision.level} (or auto) and reconcile"
        if not decision.istio.istio_init
        else "Set podSecurity.psaLevel: privileged (or auto) and reconcile, or install Istio CNI"
    )
    doc["problems"].append(
        {
            "component": "podSecurity",
            "object": decision.namespace,
            "severity": needs["severity"],
            "message": needs["mismatch"][0].upper() + needs["mismatch"][1:] + ".",
            "hint": hint,
        }
    )
    order = {"error": 0, "warning": 1, "info": 2}
    doc["problems"].sort(key=lambda p: order.get(p.get("severity"), 3))  # worst first, stable
    worse = decide_overall([needs["severity"]])
    if _RANK.get(worse, 0) > _RANK.get(str(doc.get("overall")), 0):
        doc["overall"] = worse
