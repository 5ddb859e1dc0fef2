"""Pod Security Admission rejections read from evidence, and the level that would admit them.

Pure: Event and Argo Workflow JSON, or the API's dry-run warnings, in; frozen values out.

The text we parse is kube-apiserver's own (k8s.io/pod-security-admission): a rejected pod is
``pods "<name>" is forbidden: violates PodSecurity "<level>:<version>": <checks>`` where
``<checks>`` is ``<reason> (<detail>)`` items joined by ``", "``, the reason being the check's
ForbiddenReason (``non-default capabilities``, ``allowPrivilegeEscalation != false``,
``unrestricted capabilities``, ``runAsNonRoot != true``, ``seccompProfile``, ...). Controllers
copy it into a ``FailedCreate`` Event on the StatefulSet/ReplicaSet/Job/DaemonSet (``Create Pod
nb-0 in StatefulSet nb failed error: pods "nb-0" is forbidden: ...``, ``Error creating: pods
"x-" is forbidden: ...``), Argo into the workflow node's ``message``. A namespace labelled
with an enforce level by server-side dry run answers warnings ``existing pods in namespace "x"
violate the new PodSecurity enforce level "<level>:<version>"`` then ``<pod> (and N other
pods): <reason>, <reason>``.

The least privileged level admitting a violation: any check the ``baseline`` level makes needs
``privileged``; a check only ``restricted`` makes needs ``baseline`` -- except where restricted
checks replace baseline ones and the detail shows a baseline breach too: capabilities added
beyond baseline's default set (``NET_ADMIN``, ``NET_RAW`` of Istio's ``istio-init``), and a
seccomp profile explicitly ``Unconfined``. ``restricted volume types`` replaces ``hostPath
volumes`` at restricted and names volumes but not their types, so it is judged ``baseline``
with the ambiguity recorded (``certain=False``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["privileged", "baseline", "restricted"]
LEVELS: tuple[Level, ...] = ("restricted", "baseline", "privileged")
"""From least to most privileged."""

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
"""Capabilities ``baseline`` lets a container add (check_capabilities_baseline.go)."""

BASELINE_CHECKS = frozenset(
    {
        "non-default capabilities",
        "host namespaces",
        "hostPath volumes",
        "hostPort",
        "privileged",
        "procMount",
        "seLinuxOptions",
        "forbidden sysctls",
        "forbidden AppArmor profile",
        "forbidden AppArmor profiles",
        "hostProcess",
        "probe or lifecycle host",
    }
)
"""ForbiddenReasons of the checks the baseline level runs: only ``privileged`` admits them."""

RESTRICTED_CHECKS = frozenset(
    {
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "runAsUser=0",
        "seccompProfile",
        "restricted volume types",
    }
)
"""ForbiddenReasons of restricted-only checks: ``baseline`` admits them (but see above)."""

WORKLOAD_KINDS = frozenset({"StatefulSet", "ReplicaSet", "Job", "DaemonSet"})

_VIOLATES = re.compile(
    r'violates PodSecurity "(?P<level>privileged|baseline|restricted):(?P<version>[^"]+)": '
    r"(?P<checks>.*)$",
    re.DOTALL,
)
_POD = re.compile(r'pods? "(?P<pod>[^"]*)" is forbidden')
_QUOTED_LIST = r'((?:"[^"]*"(?:, )?)+)'
_CONTAINERS = re.compile(r"\bcontainers? " + _QUOTED_LIST)
_CAPS_ADDED = re.compile(
    r"must not include " + _QUOTED_LIST + r" in securityContext\.capabilities\.add"
)
_EXISTING = re.compile(
    r'existing pods in namespace "(?P<ns>[^"]*)" violate the new PodSecurity enforce level '
    r'"(?P<level>privileged|baseline|restricted):(?P<version>[^"]+)"'
)
_DRY_RUN_POD = re.compile(
    r"^(?P<pod>[^\s:()]+)(?: \(and (?P<others>\d+) other pods?\))?: (?P<checks>.+)$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_MESSAGE = 1000


def _names(quoted: str) -> tuple[str, ...]:
    return tuple(re.findall(r'"([^"]*)"', quoted))


def level_rank(level: Level) -> int:
    return LEVELS.index(level)


def most_privileged(levels: Iterable[Level], default: Level = "restricted") -> Level:
    return max(levels, key=level_rank, default=default)


@dataclass(frozen=True)
class Violation:
    """One failed check of one rejection."""

    check: str
    """The check's ForbiddenReason, e.g. ``non-default capabilities``."""
    detail: str
    containers: tuple[str, ...]
    capabilities: tuple[str, ...]
    """Capabilities named as added (``securityContext.capabilities.add``)."""
    needs: Level
    why: str
    certain: bool = True


def decide_violation(check: str, detail: str, *, rejected_at: Level) -> Violation:
    """The least privileged level that admits one violation (rules in the module docstring)."""
    containers = tuple(n for m in _CONTAINERS.finditer(detail) for n in _names(m.group(1)))
    caps_match = _CAPS_ADDED.search(detail)
    caps = _names(caps_match.group(1)) if caps_match else ()

    def made(needs: Level, why: str, certain: bool = True) -> Violation:
        return Violation(check, detail, containers, caps, needs, why, certain)

    if rejected_at == "baseline" or check in BASELINE_CHECKS:
        beyond = sorted(set(caps) - BASELINE_CAPABILITIES)
        if beyond:
            return made("privileged", f"adds {', '.join(beyond)}, which only privileged admits")
        return made("privileged", f"{check} is a baseline check: only privileged admits it")
    if check == "unrestricted capabilities":
        beyond = sorted(set(caps) - BASELINE_CAPABILITIES)
        if beyond:
            return made("privileged", f"adds {', '.join(beyond)}, which only privileged admits")
        return made("baseline", "does not drop ALL capabilities: baseline admits it")
    if check == "seccompProfile":
        if "Unconfined" in detail or detail.startswith("forbidden annotation"):
            return made("privileged", "seccomp Unconfined: only privileged admits it")
        return made("baseline", "sets no seccomp profile: baseline admits it")
    if check == "restricted volume types":
        return made(
            "baseline",
            "volume types restricted forbids; baseline admits them unless one is a hostPath",
            certain=False,
        )
    if check in RESTRICTED_CHECKS:
        return made("baseline", f"{check} is a restricted-only check: baseline admits it")
    return made("privileged", f"unknown check {check!r}: assuming only privileged admits it", False)


def split_checks(text: str) -> list[tuple[str, str]]:
    """``a (x, y), b, c (z)`` -> ``[(a, "x, y"), (b, ""), (c, "z")]`` (quotes respected)."""
    items: list[tuple[str, str]] = []
    reason, detail, depth, quoted = "", "", 0, False
    for ch in text:
        if ch == '"' and depth:
            quoted = not quoted
        if quoted:
            detail += ch
            continue
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                continue
        if depth:
            detail += ch
        elif ch == ",":
            items.append((reason.strip(), detail.strip()))
            reason, detail = "", ""
        else:
            reason += ch
    if reason.strip() or detail.strip():
        items.append((reason.strip(), detail.strip()))
    return [item for item in items if item[0]]


@dataclass(frozen=True)
class Rejection:
    """A pod Pod Security Admission refused, with the level that would admit it."""

    level: Level
    version: str
    pod: str | None
    violations: tuple[Violation, ...]
    source: str
    """Where it was read: ``StatefulSet alice/nb`` or ``Workflow alice/wf node wf-123``."""
    message: str

    @property
    def needs(self) -> Level:
        return most_privileged((v.needs for v in self.violations), default="privileged")

    @property
    def containers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for v in self.violations:
            seen.update(dict.fromkeys(v.containers))
        return tuple(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pod": self.pod,
            "level": self.level,
            "version": self.version,
            "needs": self.needs,
            "containers": list(self.containers),
            "checks": [
                {
                    "check": v.check,
                    "detail": v.detail,
                    "containers": list(v.containers),
                    "capabilities": list(v.capabilities),
                    "needs": v.needs,
                    "why": v.why,
                    "certain": v.certain,
                }
                for v in self.violations
            ],
            "message": self.message,
        }


def clean_message(text: str) -> str:
    """No control characters, bounded length: the message may end up in a log or a panel."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def parse_rejection(message: str, *, source: str = "") -> Rejection | None:
    """A PodSecurity rejection in ``message``, or ``None`` when it holds none."""
    if not isinstance(message, str):
        return None
    match = _VIOLATES.search(message)
    if match is None:
        return None
    level: Level = match.group("level")  # type: ignore[assignment]
    pod_match = _POD.search(message, 0, match.start())
    checks = split_checks(match.group("checks").strip())
    return Rejection(
        level=level,
        version=match.group("version"),
        pod=pod_match.group("pod") if pod_match else None,
        violations=tuple(decide_violation(c, d, rejected_at=level) for c, d in checks),
        source=source,
        message=clean_message(message),
    )


def rejections_from_events(events: Iterable[Mapping[str, Any]]) -> list[Rejection]:
    """``FailedCreate`` Events on workload controllers that carry a PodSecurity rejection."""
    found: list[Rejection] = []
    for event in events:
        ref = event.get("involvedObject") or {}
        if event.get("reason") != "FailedCreate" or ref.get("kind") not in WORKLOAD_KINDS:
            continue
        source = f"{ref.get('kind')} {ref.get('namespace', '')}/{ref.get('name', '')}"
        rejection = parse_rejection(str(event.get("message") or ""), source=source)
        if rejection is not None:
            found.append(rejection)
    return found


def rejections_from_workflow(workflow: Mapping[str, Any]) -> list[Rejection]:
    """Argo Workflow nodes (KFP's runs) whose ``message`` is a PodSecurity rejection."""
    meta = workflow.get("metadata") or {}
    where = f"Workflow {meta.get('namespace', '')}/{meta.get('name', '')}"
    nodes = (workflow.get("status") or {}).get("nodes") or {}
    found: list[Rejection] = []
    if not isinstance(nodes, dict):
        return found
    for node_id, node in sorted(nodes.items()):
        if not isinstance(node, dict):
            continue
        label = node.get("displayName") or node.get("name") or node_id
        rejection = parse_rejection(str(node.get("message") or ""), source=f"{where} node {label}")
        if rejection is not None:
            found.append(rejection)
    return found


@dataclass(frozen=True)
class DryRunFinding:
    """Pods the API server says would violate ``level`` (server-side dry-run labelling)."""

    namespace: str
    level: Level
    version: str
    pod: str
    other_pods: int
    checks: tuple[str, ...]


def parse_dry_run_warnings(warnings: Sequence[str]) -> list[DryRunFinding]:
    """The warnings of ``kubectl label --dry-run=server ns X <enforce label>=<level>``."""
    found: list[DryRunFinding] = []
    current: tuple[str, Level, str] | None = None
    for raw in warnings:
        text = raw.strip()
        if text.startswith("Warning: "):
            text = text[len("Warning: ") :]
        head = _EXISTING.search(text)
        if head is not None:
            current = (head.group("ns"), head.group("level"), head.group("version"))  # type: ignore[assignment]
            continue
        line = _DRY_RUN_POD.match(text)
        if current is None or line is None:
            continue
        found.append(
            DryRunFinding(
                namespace=current[0],
                level=current[1],
                version=current[2],
                pod=line.group("pod"),
                other_pods=int(line.group("others") or 0),
                checks=tuple(c.strip() for c in line.group("checks").split(", ") if c.strip()),
            )
        )
    return found


def decide_dry_run_level(
    baseline: Sequence[DryRunFinding] | None, restricted: Sequence[DryRunFinding] | None
) -> tuple[Level, str] | None:
    """The least privileged level the API server itself says admits every existing pod.

    ``baseline``/``restricted``: the findings of a dry run at that level (empty: no pod named;
    ``None``: not run). A pod named at baseline needs privileged; named only at restricted,
    baseline. The server decides from the full pod, so this settles what the check names alone
    cannot (which capabilities, which volume types).
    """
    if baseline:
        pods = ", ".join(f.pod for f in baseline)
        return "privileged", f"the API server says {pods} would violate baseline"
    if restricted:
        pods = ", ".join(f.pod for f in restricted)
        if baseline is not None:
            return "baseline", f"the API server says {pods} would violate restricted, not baseline"
        return None
    if restricted is not None:
        return "restricted", "the API server names no existing pod that restricted refuses"
    return None
