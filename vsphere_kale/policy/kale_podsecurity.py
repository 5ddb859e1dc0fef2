"""Which Pod Security level a Kubeflow profile namespace needs: Istio, Kale steps, evidence.

Pure: namespace labels, what was found of Istio CNI, the shape of the Kale steps, recorded
rejections and dry-run findings in; a level and the reasons for it out.

Istio (``../shared/KALE.md``): notebook pods in profile namespaces get the Istio sidecar when
the namespace is labelled ``istio-injection: enabled`` or ``istio.io/rev: <revision>``
(``istio-injection: disabled`` wins over a revision label). Without Istio CNI the injector
adds the ``istio-init`` init container, which adds NET_ADMIN and NET_RAW to program
iptables: only ``privileged`` admits it. With Istio CNI the node agent does that work, there
is no istio-init, and ``baseline`` suffices.

Istio CNI evidence, strongest first: a DaemonSet ``istio-cni-node`` in ``kube-system`` or
``istio-system`` (the agent that replaces istio-init; both namespaces are where Istio's charts
install it); else the ConfigMap ``istio-cni-config`` there (what the chart installs beside
it, readable by roles that may not list DaemonSets). When neither could be read, CNI is
unknown and injection is assumed to bring istio-init (the conservative answer: a level too low
rejects the notebook; one too high only admits more).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vsphere_kale.policy.podsecurity_evidence import (
    DryRunFinding,
    Level,
    Rejection,
    decide_dry_run_level,
    level_rank,
)

ISTIO_INJECTION_LABEL = "istio-injection"
ISTIO_REVISION_LABEL = "istio.io/rev"
ISTIO_CNI_DAEMONSET = "istio-cni-node"
ISTIO_CNI_CONFIGMAP = "istio-cni-config"
ISTIO_CNI_NAMESPACES = ("kube-system", "istio-system")

StepShape = Literal["kfp-v2-restricted", "kfp-v2-root", "kale-v1-root", "none"]
"""How Kale's step pods look:

``kfp-v2-restricted``: Kale 2 on KFP backend >= 2.16 with its security context on (uid 65534,
runAsNonRoot; the backend adds seccomp RuntimeDefault, allowPrivilegeEscalation false, drop
ALL): ``restricted`` admits them. ``kfp-v2-root``: ``KALE_SECURITY_CONTEXT_ENABLED=false``,
steps run as root: ``baseline``. ``kale-v1-root``: Kale <= 0.7 on KFP v1 (root): ``baseline``.
``none``: no Kale steps run here."""

_STEP_NEEDS: Mapping[str, tuple[Level, str]] = {
    "kfp-v2-restricted": ("restricted", "Kale 2 steps on KFP >= 2.16 pass restricted"),
    "kfp-v2-root": (
        "baseline",
        "Kale 2 steps with KALE_SECURITY_CONTEXT_ENABLED=false run as root",
    ),
    "kale-v1-root": ("baseline", "Kale <= 0.7 steps on KFP v1 run as root"),
    "none": ("restricted", "no Kale steps"),
}


@dataclass(frozen=True)
class IstioCniFacts:
    """What the caller found of Istio CNI (``namespace/name`` strings)."""

    daemonsets: tuple[str, ...] = ()
    configmaps: tuple[str, ...] = ()
    daemonsets_readable: bool = True
    configmaps_readable: bool = True


def build_istio_cni_facts(
    daemonsets: Sequence[Mapping[str, Any]] | None,
    configmaps: Sequence[Mapping[str, Any]] | None,
) -> IstioCniFacts:
    """From the DaemonSets and ConfigMaps of kube-system and istio-system (``None``: unreadable)."""

    def named(objs: Sequence[Mapping[str, Any]] | None, name: str) -> tuple[str, ...]:
        out = []
        for obj in objs or ():
            meta = obj.get("metadata") or {}
            if meta.get("name") == name and meta.get("namespace") in ISTIO_CNI_NAMESPACES:
                out.append(f"{meta['namespace']}/{name}")
        return tuple(out)

    return IstioCniFacts(
        daemonsets=named(daemonsets, ISTIO_CNI_DAEMONSET),
        configmaps=named(configmaps, ISTIO_CNI_CONFIGMAP),
        daemonsets_readable=daemonsets is not None,
        configmaps_readable=configmaps is not None,
    )


@dataclass(frozen=True)
class IstioVerdict:
    injected: bool
    cni: bool | None
    """``None``: could not tell."""
    istio_init: bool
    needs: Level
    """What notebook pods of this namespace need."""
    why: str


def decide_injection(labels: Mapping[str, str]) -> tuple[bool, str]:
    """Does Istio inject its sidecar into pods of a namespace with these labels?"""
    value = labels.get(ISTIO_INJECTION_LABEL)
    if value == "enabled":
        return True, f"{ISTIO_INJECTION_LABEL}=enabled"
    if value is not None:
        return False, f"{ISTIO_INJECTION_LABEL}={value}"
    if labels.get(ISTIO_REVISION_LABEL):
        return True, f"{ISTIO_REVISION_LABEL}={labels[ISTIO_REVISION_LABEL]}"
    return False, "no Istio injection label"


def decide_istio(labels: Mapping[str, str], facts: IstioCniFacts) -> IstioVerdict:
    """Whether notebook pods get istio-init, and so the level they need (module docstring)."""
    injected, label_why = decide_injection(labels)
    if facts.daemonsets:
        cni: bool | None = True
        cni_why = f"Istio CNI runs (DaemonSet {facts.daemonsets[0]})"
    elif facts.configmaps:
        cni = True
        cni_why = f"Istio CNI is installed (ConfigMap {facts.configmaps[0]})"
    elif facts.daemonsets_readable:
        cni = False
        cni_why = "no istio-cni-node DaemonSet in kube-system or istio-system"
    else:
        cni = None
        cni_why = "Istio CNI unknown (DaemonSets in kube-system/istio-system not readable)"
    if not injected:
        return IstioVerdict(
            False, cni, False, "baseline", f"{label_why}: no sidecar, no istio-init"
        )
    if cni:
        return IstioVerdict(
            True,
            cni,
            False,
            "baseline",
            f"{label_why} and {cni_why}: no istio-init, baseline suffices",
        )
    return IstioVerdict(
        True,
        cni,
        True,
        "privileged",
        f"{label_why} and {cni_why}: istio-init adds NET_ADMIN and NET_RAW, only privileged "
        "admits it",
    )


@dataclass(frozen=True)
class AutoLevel:
    """``psaLevel: auto``: the level, and every input with the level it asked for."""

    level: Level
    reasons: tuple[tuple[Level, str], ...]

    @property
    def why(self) -> str:
        raised = [why for need, why in self.reasons if need == self.level]
        return "; ".join(raised) or "nothing needs more than restricted"

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "why": self.why,
            "inputs": [{"needs": need, "why": why} for need, why in self.reasons],
        }


def decide_auto_level(
    *,
    runs_notebooks: bool,
    istio: IstioVerdict | None,
    steps: StepShape,
    rejections: Iterable[Rejection] = (),
    dry_run_baseline: Sequence[DryRunFinding] | None = None,
    dry_run_restricted: Sequence[DryRunFinding] | None = None,
) -> AutoLevel:
    """The least privileged level that admits what the namespace runs.

    Each input asks for a level; the answer is the most privileged of them:

    1. notebook pods (``runs_notebooks``, true for profile namespaces): ``baseline`` at least
       (Kubeflow's notebook pods set none of restricted's fields), ``privileged`` when
       :func:`decide_istio` says they get istio-init;
    2. Kale step pods: by :data:`StepShape`;
    3. every recorded rejection (FailedCreate Events, Argo nodes): the level that admits it
       (:mod:`~vsphere_kale.policy.podsecurity_evidence`);
    4. the API server's own judgement of the existing pods, from server-side dry-run
       labelling at baseline and restricted (:func:`decide_dry_run_level`).

    With no input it answers ``restricted``. It never answers below what evidence shows.
    """
    reasons: list[tuple[Level, str]] = []
    if runs_notebooks:
        if istio is None:
            reasons.append(("baseline", "notebook pods set none of restricted's fields"))
        else:
            reasons.append((istio.needs, f"notebook pods: {istio.why}"))
    step_level, step_why = _STEP_NEEDS[steps]
    if steps != "none":
        reasons.append((step_level, step_why))
    for rejection in rejections:
        reasons.append(
            (
                rejection.needs,
                f"{rejection.source or 'a pod'}: pod {rejection.pod or '?'} was rejected at "
                f"{rejection.level} ({', '.join(v.check for v in rejection.violations)})",
            )
        )
    dry = decide_dry_run_level(dry_run_baseline, dry_run_restricted)
    if dry is not None:
        reasons.append(dry)
    level: Level = max((r[0] for r in reasons), key=level_rank, default="restricted")
    return AutoLevel(level, tuple(reasons))


def decide_level_mismatch(configured: str, needed: AutoLevel) -> str | None:
    """A sentence when the configured enforce level is stricter than what is needed."""
    if configured not in ("privileged", "baseline", "restricted"):
        return None
    if level_rank(configured) >= level_rank(needed.level):  # type: ignore[arg-type]
        return None
    return (
        f"psaLevel {configured} is stricter than this namespace needs ({needed.level}: "
        f"{needed.why}); pods will be rejected until it is {needed.level}"
    )
