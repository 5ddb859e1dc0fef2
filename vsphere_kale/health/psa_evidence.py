"""Fetch what decides a namespace's Pod Security level: Istio CNI, rejections, dry runs.

The I/O half of :mod:`vsphere_kale.policy.psa_level` (which decides). Used by the reconciler
for ``psaLevel: auto``, by the status document and by ``vsphere-kale doctor``. Requests:

* Istio CNI, cluster-wide (cache it: :class:`IstioCniCache`): the ``istio-cni-node``
  DaemonSet (one list by field selector), and only when DaemonSets may not be listed the
  ``istio-cni-config`` ConfigMap in ``kube-system`` and ``istio-system``;
* per namespace: its ``FailedCreate`` Events (one list, by field selector);
* per namespace, only in the reconciler and only for the candidates
  :func:`~vsphere_kale.policy.psa_level.plan_dry_runs` names: a server-side dry-run merge patch
  of the namespace's enforce label, whose ``Warning`` headers name the existing pods that would
  violate it (nothing is stored; it needs ``patch namespaces``, which the reconciler has).

A read that is refused (403) or of a type the server does not serve (404) becomes "unknown"
(``None``); the decision then takes the conservative side (see the policy module).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from vsphere_kale.errors import KubeForbidden, KubeNotFound
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.kale_podsecurity import (
    ISTIO_CNI_CONFIGMAP,
    ISTIO_CNI_DAEMONSET,
    ISTIO_CNI_NAMESPACES,
    IstioCniFacts,
    build_istio_cni_facts,
)
from vsphere_kale.policy.podsecurity_evidence import (
    DryRunFinding,
    Level,
    parse_dry_run_warnings,
    rejections_from_events,
)
from vsphere_kale.policy.psa_level import (
    PsaDecision,
    PsaEvidence,
    build_dry_run_patch,
    decide_psa_level,
    parse_server_minor,
    plan_dry_runs,
)

log = logging.getLogger(__name__)

FAILED_CREATE_SELECTOR = "reason=FailedCreate"
"""``reason`` is a selectable field of core/v1 Events in kube-apiserver (and the sandbox)."""

REQUEST_TIMEOUT = 10.0


def _listed(
    kube: Kube, resource: r.Resource, name: str, *, namespace: str | None
) -> list[dict[str, Any]] | None:
    try:
        listed = kube.list(
            resource,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            timeout=REQUEST_TIMEOUT,
        )
    except (KubeForbidden, KubeNotFound) as exc:
        log.info("Istio CNI: cannot list %s: %s", resource.plural, exc)
        return None
    return list(listed.get("items") or [])


def fetch_istio_cni(kube: Kube) -> IstioCniFacts:
    """Is Istio CNI installed? (DaemonSet, else ConfigMap; ``None`` parts when unreadable).

    The DaemonSets: one cluster-wide list by name (the policy keeps kube-system and
    istio-system). The ConfigMap fallback is read per namespace, and only when the DaemonSets
    cannot be: a cluster-wide ConfigMap list is a permission we do not ask for.
    """
    daemonsets = _listed(kube, r.DAEMON_SET, ISTIO_CNI_DAEMONSET, namespace=None)
    if daemonsets is not None:
        return build_istio_cni_facts(daemonsets, [])
    configmaps: list[dict[str, Any]] = []
    for namespace in ISTIO_CNI_NAMESPACES:
        found = _listed(kube, r.CONFIG_MAP, ISTIO_CNI_CONFIGMAP, namespace=namespace)
        if found is None:
            return build_istio_cni_facts(None, None)
        configmaps.extend(found)
    return build_istio_cni_facts(None, configmaps)


class IstioCniCache:
    """Istio CNI facts, read at most once per ``ttl`` seconds (cluster-wide, rarely change)."""

    def __init__(
        self, kube: Kube, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kube = kube
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._facts: tuple[float, IstioCniFacts] | None = None

    def get(self) -> IstioCniFacts:
        with self._lock:
            if self._facts is not None and self._clock() - self._facts[0] < self._ttl:
                return self._facts[1]
        facts = fetch_istio_cni(self._kube)
        with self._lock:
            self._facts = (self._clock(), facts)
        return facts


def fetch_server_minor(kube: Kube) -> int | None:
    try:
        return parse_server_minor(kube.get_json("/version"))
    except (KubeForbidden, KubeNotFound):
        return None


def fetch_failed_creates(kube: Kube, namespace: str) -> list[dict[str, Any]] | None:
    """The namespace's ``FailedCreate`` Events (``None``: may not list events)."""
    try:
        listed = kube.list(
            r.EVENT,
            namespace=namespace,
            field_selector=FAILED_CREATE_SELECTOR,
            timeout=REQUEST_TIMEOUT,
        )
    except KubeForbidden:
        return None
    return list(listed.get("items") or [])


def fetch_dry_run(
    kube: Kube, namespace: str, level: Level, *, labels: Mapping[str, str], server_minor: int | None
) -> tuple[list[str], bool]:
    """Label ``namespace`` enforce=``level`` by server-side dry run: (warnings, answered)."""
    warnings: list[str] = []
    body = build_dry_run_patch(level, labels=labels, server_minor=server_minor)
    try:
        kube.patch(r.NAMESPACE, namespace, body, dry_run=True, warnings=warnings)
    except KubeForbidden as exc:
        log.info("namespace %s: dry run at %s refused: %s", namespace, level, exc)
        return [], False
    return warnings, True


def build_evidence(
    namespace_obj: Mapping[str, Any],
    *,
    runs_notebooks: bool,
    istio_cni: IstioCniFacts,
    events: list[dict[str, Any]] | None,
) -> PsaEvidence:
    meta = namespace_obj.get("metadata") or {}
    return PsaEvidence(
        namespace=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        runs_notebooks=runs_notebooks,
        istio_cni=istio_cni,
        rejections=tuple(rejections_from_events(events or [])),
        rejections_readable=events is not None,
    )


def fetch_psa_decision(
    kube: Kube,
    namespace_obj: Mapping[str, Any],
    *,
    runs_notebooks: bool,
    istio_cni: IstioCniFacts,
    server_minor: int | None,
    dry_run: bool = True,
    keep: bool = True,
) -> PsaDecision:
    """Read the evidence for one namespace and decide (``dry_run=False``: no dry-run patch,
    for callers that must send no write of any kind)."""
    evidence = build_evidence(
        namespace_obj,
        runs_notebooks=runs_notebooks,
        istio_cni=istio_cni,
        events=fetch_failed_creates(kube, str((namespace_obj.get("metadata") or {})["name"])),
    )
    if dry_run:
        evidence = ask_dry_runs(kube, evidence, server_minor=server_minor)
    return decide_psa_level(evidence, keep=keep)


def ask_dry_runs(kube: Kube, evidence: PsaEvidence, *, server_minor: int | None) -> PsaEvidence:
    """Add the API server's judgement for the candidates that can still change the answer."""
    found: dict[str, tuple[DryRunFinding, ...] | None] = {"baseline": None, "restricted": None}
    for level in plan_dry_runs(evidence):
        warnings, answered = fetch_dry_run(
            kube, evidence.namespace, level, labels=evidence.labels, server_minor=server_minor
        )
        if not answered:
            break
        findings = tuple(parse_dry_run_warnings(warnings))
        found[level] = findings
        if findings:
            break  # a pod named at baseline: privileged whatever restricted says
    return replace(
        evidence, dry_run_baseline=found["baseline"], dry_run_restricted=found["restricted"]
    )
