"""``podSecurity.psaLevel: auto``: which enforce level one namespace gets, and why. PURE.

The reconciler (:mod:`vsphere_kale.reconcile.psa_auto`) and the status/doctor readers
(:mod:`vsphere_kale.health.psa_evidence`) fetch the facts; everything here decides.

How a level is decided (:func:`decide_psa_level`): every input asks for a level, the answer is
the most privileged of them, and every input is kept with its reason.

1. **Notebook pods** (profile namespaces run them; ``extraNamespaces`` do not):
   ``baseline``, or ``privileged`` when they get Istio's ``istio-init`` (the namespace asks for
   sidecar injection and no Istio CNI runs: ``kale_podsecurity.decide_istio``).
   In a namespace without notebooks, injection without CNI still means every pod that does not
   opt out gets istio-init: ``privileged``.
2. **Recorded rejections**: each ``FailedCreate`` PodSecurity rejection in the namespace's
   Events asks for the least privileged level that admits it.
3. **The API server's own judgement of the pods that exist**: the namespace is labelled with a
   candidate enforce level by server-side dry run (nothing is stored) and the warnings name
   the pods that would violate it (``podsecurity_evidence.decide_dry_run_level``).
   Only the candidates that can still change the answer are asked (:func:`plan_dry_runs`).
4. **The level we set earlier**, while our enforce label is still in place: ``auto`` raises a
   level by itself but never lowers one, because missing evidence is not evidence that
   nothing needs the level (Events expire after an hour; a stopped notebook has no pod, and
   starting it again would be rejected). Removing the enforce label lets it decide afresh.

With no input the answer is ``restricted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vsphere_kale.policy.kale_podsecurity import (
    AutoLevel,
    IstioCniFacts,
    IstioVerdict,
    decide_auto_level,
    decide_istio,
)
from vsphere_kale.policy.podsecurity import (
    PSA_ENFORCE,
    PSA_ENFORCE_VERSION,
    decide_owned_labels,
)
from vsphere_kale.policy.podsecurity_evidence import (
    LEVELS,
    DryRunFinding,
    Level,
    Rejection,
    level_rank,
)

AUTO = "auto"


@dataclass(frozen=True)
class PsaEvidence:
    """What the caller found about one namespace (``None``: not asked or not readable)."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    runs_notebooks: bool = True
    """A Kubeflow profile namespace: notebook pods run (or will run) there."""
    istio_cni: IstioCniFacts = field(default_factory=IstioCniFacts)
    rejections: tuple[Rejection, ...] = ()
    rejections_readable: bool = True
    dry_run_baseline: tuple[DryRunFinding, ...] | None = None
    dry_run_restricted: tuple[DryRunFinding, ...] | None = None


@dataclass(frozen=True)
class PsaDecision:
    """The level for one namespace, with the Istio verdict and every input."""

    namespace: str
    auto: AutoLevel
    istio: IstioVerdict
    rejections: tuple[Rejection, ...] = ()
    dry_run_asked: tuple[Level, ...] = ()

    @property
    def level(self) -> Level:
        return self.auto.level

    def to_json(self) -> dict[str, Any]:
        out = self.auto.to_json()
        out["istio"] = {
            "injected": self.istio.injected,
            "cni": self.istio.cni,
            "istioInit": self.istio.istio_init,
            "needs": self.istio.needs,
            "why": self.istio.why,
        }
        out["rejections"] = [r.to_json() for r in self.rejections]
        out["dryRun"] = list(self.dry_run_asked)
        return out


def decide_kept_level(labels: Mapping[str, str], annotations: Mapping[str, str]) -> Level | None:
    """The enforce level vsphere-kale set and that is still in place (recorded and unchanged)."""
    recorded = decide_owned_labels(annotations).get(PSA_ENFORCE)
    current = labels.get(PSA_ENFORCE)
    if recorded is None or current != recorded or current not in LEVELS:
        return None
    return current


def decide_psa_level(evidence: PsaEvidence, *, keep: bool = True) -> PsaDecision:
    """The least privileged level admitting what the namespace runs (module docstring).

    ``keep=False`` leaves out input 4 (the level set earlier): what the evidence alone asks,
    for doctor and the panel.
    """
    istio = decide_istio(evidence.labels, evidence.istio_cni)
    auto = decide_auto_level(
        runs_notebooks=evidence.runs_notebooks,
        istio=istio,
        steps="none",
        rejections=evidence.rejections,
        dry_run_baseline=evidence.dry_run_baseline,
        dry_run_restricted=evidence.dry_run_restricted,
    )
    reasons = list(auto.reasons)
    if not evidence.runs_notebooks and istio.istio_init:
        reasons.insert(0, ("privileged", f"pods that do not opt out of the sidecar: {istio.why}"))
    kept = decide_kept_level(evidence.labels, evidence.annotations) if keep else None
    if kept is not None:
        reasons.append(
            (
                kept,
                f"vsphere-kale set enforce={kept} earlier and auto never lowers a level by "
                "itself (remove the label to decide afresh)",
            )
        )
    level: Level = max((r[0] for r in reasons), key=level_rank, default="restricted")
    asked = tuple(
        lvl
        for lvl, found in (
            ("baseline", evidence.dry_run_baseline),
            ("restricted", evidence.dry_run_restricted),
        )
        if found is not None
    )
    return PsaDecision(
        evidence.namespace,
        AutoLevel(level, tuple(reasons)),
        istio,
        evidence.rejections,
        asked,  # type: ignore[arg-type]
    )


def plan_dry_runs(evidence: PsaEvidence) -> tuple[Level, ...]:
    """The dry-run candidates that can still change the answer, most privileged first.

    Nothing is above ``privileged``; a level already at ``baseline`` can only be raised by
    a pod named at ``baseline``. The caller asks ``restricted`` only when ``baseline`` named no
    pod (a pod named at baseline makes the answer ``privileged`` whatever restricted says).
    """
    so_far = decide_psa_level(
        replace(evidence, dry_run_baseline=None, dry_run_restricted=None)
    ).level
    if so_far == "privileged":
        return ()
    if so_far == "baseline":
        return ("baseline",)
    return ("baseline", "restricted")


def build_dry_run_patch(
    level: Level, *, labels: Mapping[str, str], server_minor: int | None
) -> dict[str, Any]:
    """The merge patch for a server-side dry run of ``enforce=<level>``.

    kube-apiserver's PodSecurity admission evaluates the existing pods only when the new
    enforce policy differs from the old one, and not when it relaxes the level at the same
    version (k8s.io/pod-security-admission ``ValidateNamespace``). So the candidate is sent
    with a *different* enforce-version that means the same checks: the server's own
    ``v1.<minor>`` when the namespace is at ``latest`` (or unset), ``latest`` otherwise.
    """
    current = labels.get(PSA_ENFORCE_VERSION, "latest")
    pinned = current == "latest" and server_minor is not None
    version = f"v1.{server_minor}" if pinned else "latest"
    return {"metadata": {"labels": {PSA_ENFORCE: level, PSA_ENFORCE_VERSION: version}}}


def parse_server_minor(version: Mapping[str, Any]) -> int | None:
    """The minor version from ``/version`` (``"36"``, ``"36+"`` on some distributions)."""
    digits = "".join(ch for ch in str(version.get("minor") or "") if ch.isdigit())
    return int(digits) if digits else None


def decide_psa_mismatch(configured: str, decision: PsaDecision) -> str | None:
    """A sentence when the configured enforce level would reject what the namespace runs.

    ``configured`` is ``podSecurity.psaLevel``; ``auto`` never mismatches (it follows the
    decision). A configured level that is merely more permissive than needed is no mismatch
    here: it admits everything (the status says what would do).
    """
    if configured not in LEVELS:
        return None
    needed = decision.level
    if level_rank(configured) >= level_rank(needed):
        return None
    ns = decision.namespace
    istio = decision.istio
    if istio.istio_init and needed == "privileged":
        return (
            f"notebook pods in {ns} get istio-init (NET_ADMIN, NET_RAW), which only privileged "
            f"admits; psaLevel is {configured} ({istio.why.split(':')[0]}): set "
            "podSecurity.psaLevel to privileged or auto, or install Istio CNI"
        )
    return (
        f"{ns} needs {needed} ({decision.auto.why}); psaLevel is {configured}: set "
        f"podSecurity.psaLevel to {needed} or auto"
    )


def build_needs_section(decision: PsaDecision, *, configured: str) -> dict[str, Any]:
    """The ``podSecurity.needs`` part of the status document (docs/health.md).

    ``mismatch`` is :func:`decide_psa_mismatch`'s sentence (``null`` when the configured level
    admits what the namespace needs, and always with ``auto``); ``severity`` is ``error`` when
    a rejection is on record (pods are being refused now), ``warning`` when only inferred.
    """
    mismatch = decide_psa_mismatch(configured, decision)
    severity = None
    if mismatch is not None:
        severity = "error" if decision.rejections else "warning"
    out = decision.to_json()
    out.update({"configured": configured, "mismatch": mismatch, "severity": severity})
    return out
