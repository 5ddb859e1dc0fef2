"""``vsphere-kale doctor``'s ``pod-security-level`` check: does the configured psaLevel admit
what each managed namespace runs?

psa mode only (in psp mode the RoleBinding grants a PodSecurityPolicy, not a level). Reads,
cluster-wide and once: ``FailedCreate`` Events (one list, all namespaces, by field selector)
and Istio CNI's DaemonSet/ConfigMap; then decides per managed namespace with
:func:`vsphere_kale.policy.psa_level.decide_psa_level`. Doctor writes nothing, so no dry run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vsphere_kale.errors import KubeForbidden
from vsphere_kale.health.psa_evidence import FAILED_CREATE_SELECTOR, build_evidence, fetch_istio_cni
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy import podsecurity
from vsphere_kale.policy.psa_level import PsaDecision, decide_psa_level, decide_psa_mismatch
from vsphere_kale.settings import Settings

NAME = "pod-security-level"
Status = Literal["ok", "warn", "fail"]


def fetch_psa_decisions(
    kube: Kube,
    *,
    settings: Settings,
    namespaces: Sequence[Mapping[str, Any]],
    profiles: Sequence[Mapping[str, Any]] | None,
) -> list[PsaDecision] | str:
    """One decision per managed namespace, or a sentence saying what could not be read."""
    try:
        events = list(kube.list(r.EVENT, field_selector=FAILED_CREATE_SELECTOR).get("items") or [])
    except KubeForbidden:
        return "cannot judge pod-security levels: the caller may not list events"
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_ns.setdefault(str((event.get("metadata") or {}).get("namespace")), []).append(event)
    cni = fetch_istio_cni(kube)
    profile_by_name = {(p.get("metadata") or {}).get("name"): p for p in profiles or ()}
    ps = settings.pod_security
    decisions = []
    for ns_obj in namespaces:
        name = str((ns_obj.get("metadata") or {}).get("name") or "")
        profile = profile_by_name.get(name)
        managed, _ = podsecurity.decide_managed(
            name,
            profile=profile,
            namespace_obj=ns_obj,
            settings=ps,
            service_namespace=settings.namespace,
        )
        if not managed:
            continue
        evidence = build_evidence(
            ns_obj,
            runs_notebooks=podsecurity.decide_owned_by_profile(ns_obj, profile),
            istio_cni=cni,
            events=by_ns.get(name, []),
        )
        decisions.append(decide_psa_level(evidence, keep=ps.psa_level == "auto"))
    return decisions


def decide_psa_level_check(
    decisions: Sequence[PsaDecision] | str | None, *, settings: Settings, psp_served: bool
) -> tuple[Status, str, str]:
    """``(status, message, hint)`` of the check; ``decisions`` as :func:`fetch_psa_decisions`
    returned them (``None``: not fetched)."""
    configured = settings.pod_security.psa_level
    mode = podsecurity.decide_mode(settings.pod_security.mode, psp_served=psp_served)
    if mode != "psa" or decisions is None:
        return "ok", f"mode {mode}: no enforce level to judge", ""
    if isinstance(decisions, str):
        return "warn", decisions, "grant list on events to the caller"
    if configured == "auto":
        summary = ", ".join(f"{d.namespace}={d.level}" for d in decisions) or "none managed"
        return "ok", f"psaLevel auto: {summary}", ""
    bad = [(d, m) for d in decisions if (m := decide_psa_mismatch(configured, d)) is not None]
    if not bad:
        count = len(decisions)
        return "ok", f"psaLevel {configured} admits what {count} managed namespaces run", ""
    # A warning, also when a rejection is on record: like a stuck claim, a refused pod is a
    # workload to repair (by a settings change), not a broken installation -- doctor's exit
    # code stays for what the service itself needs (docs/install.md, "doctor").
    bad.sort(key=lambda found: not found[0].rejections)  # refused pods first (stable)
    more = f" (and {len(bad) - 1} more namespaces)" if len(bad) > 1 else ""
    return (
        "warn",
        bad[0][1] + more,
        "set podSecurity.psaLevel: auto (or the level named) and run vsphere-kale reconcile --all",
    )
