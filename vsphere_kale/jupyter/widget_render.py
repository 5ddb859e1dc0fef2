"""The health panel's pure rendering: a ``NamespaceStatus`` document in, HTML out.

Written for a data scientist reading a notebook that may be 400 px or 1200 px wide, and judged
in screenshots at both (tests/e2e): every name, class and label is one unbreakable piece
(``white-space:nowrap``; cut with an ellipsis, the whole value in its tooltip, where a name
can be longer than the line), pieces wrap *between* each other, one line per fact, colours
follow the severity the service decided (so one verdict has one colour everywhere), and the
problem count is counted from the badges drawn.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

GOOD = "#1e7e34"
WARN = "#b26a00"
BAD = "#c62828"
MUTED = "#616161"
_SEVERITY_COLOURS = {"error": BAD, "warning": WARN, "info": MUTED}
_OVERALL_COLOURS = {"healthy": GOOD, "degraded": WARN, "broken": BAD}
# When a document carries no severity (an older service), the verdict alone decides.
_VERDICT_SEVERITY = {
    "rwx-on-block-class": "error",
    "lost": "error",
    "pending": "warning",
    "missing": "error",
    "drifted": "error",
    "conflict": "warning",
    "ca-invalid": "error",
    "ca-expiring": "warning",
    "class-missing": "error",
    "unknown": "info",
}
# Verdicts that are fine: green when "ok", grey otherwise; never counted.
_NOT_PROBLEMS = frozenset({"ok", "unmanaged", "off", "unknown", ""})
# What a verdict pill says: words a data scientist knows; the code stays in data-verdict and
# in the pill's tooltip (docs/health.md lists the codes).
_VERDICT_WORDS = {
    "level-too-low": "level too low",
    "ok": "ok",
    "rwx-on-block-class": "cannot bind",
    "pending": "pending",
    "lost": "volume lost",
    "missing": "missing",
    "drifted": "changed by hand",
    "conflict": "conflict",
    "unmanaged": "not managed",
    "off": "off",
    "ca-invalid": "certificate invalid",
    "ca-expiring": "certificate expiring",
    "class-missing": "class missing",
    "unknown": "unknown",
}
# Reconcile outcomes: the same colour as the verdict of the same meaning (a conflict is a
# warning in the pod-security row, so it is orange here too, never green). Unknown: grey.
_OUTCOME_COLOURS = {
    "created": GOOD,
    "updated": GOOD,
    "repaired": GOOD,
    "adopted": GOOD,
    "unchanged": GOOD,
    "ok": GOOD,
    "conflict": WARN,
    "failed": BAD,
    "skipped": MUTED,
}
_MODE_NAMES = {"psp": "PodSecurityPolicy", "psa": "Pod Security Admission"}
# Kubernetes kinds as Kubernetes writes them. The reconciler's sentences use kubectl's
# lower-case resource words ("create rolebinding a/b -> clusterrole/c"), fine in a log, not
# in a panel.
# Only whole words, in any case (a sentence may start "Rolebinding x ..."); "my-rolebinding"
# is a name and stays as it is.
_KINDS = (
    (re.compile(r"(?<![\w./-])rolebinding(?![\w-])", re.IGNORECASE), "RoleBinding"),
    (re.compile(r"(?<![\w./-])clusterrole/", re.IGNORECASE), "ClusterRole "),
    (re.compile(r"(?<![\w./-])clusterrole(?![\w-])", re.IGNORECASE), "ClusterRole"),
)
_NAME = "white-space:nowrap"
# A name that may be longer than the line: an inline block, so it can be cut with an ellipsis.
_CUT_NAME = (
    "display:inline-block;max-width:100%;overflow:hidden;text-overflow:ellipsis;"
    "white-space:nowrap;vertical-align:bottom"
)
# Pieces that wrap between each other, never inside.
_LINE = "display:flex;flex-wrap:wrap;align-items:baseline;column-gap:0.6em"
# ipywidgets' HTML uses the 28 px input-row height as line height; text reads better tighter.
_BLOCK = "line-height:1.45;margin:6px 0"


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def kube_words(text: str) -> str:
    for pattern, word in _KINDS:
        text = pattern.sub(word, text)
    return text


def name(value: object, *, code: bool = False) -> str:
    """One name, never broken; cut with an ellipsis if the line is shorter, tooltip = value."""
    text = e(value)
    font = "font-family:var(--jp-code-font-family,monospace);" if code else ""
    return f'<span class="vsk-name" title="{text}" style="{_CUT_NAME};{font}">{text}</span>'


def prose(text: object, names: Iterable[object] = ()) -> str:
    """Escaped text whose known names are kept whole.

    A line may break after any hyphen in running text, which splits
    ``wf-1-kale-/marshal-pvc``; each occurrence of a name the panel knows (claims, classes,
    the namespace) is wrapped in a no-wrap span instead.
    """
    out = e(kube_words(str(text)))
    known = sorted({e(n) for n in names if n and ("-" in str(n) or ":" in str(n))}, key=len)
    if not known:
        return out
    pattern = re.compile("|".join(re.escape(n) for n in reversed(known)))
    return pattern.sub(lambda m: f'<span class="vsk-name" style="{_NAME}">{m.group(0)}</span>', out)


def pill(text: str, colour: str, *, title: str = "", attrs: str = "") -> str:
    tip = f' title="{e(title)}"' if title else ""
    return (
        f'<span{attrs}{tip} style="background:{colour};color:#fff;border-radius:4px;'
        f'padding:0 6px;font-weight:600;white-space:nowrap">{e(text)}</span>'
    )


def severity_of(row: Mapping[str, Any]) -> str | None:
    """The row's severity as the service decided it (``error``/``warning``/``info``/None)."""
    verdict = str(row.get("verdict") or "")
    if "severity" in row:
        value = row.get("severity")
        return str(value) if value else None
    return None if verdict in _NOT_PROBLEMS - {"unknown"} else _VERDICT_SEVERITY.get(verdict)


def is_problem(row: Mapping[str, Any]) -> bool:
    """A red or orange badge: something the reader should fix (info is not)."""
    return severity_of(row) in ("error", "warning")


def verdict_pill(row: Mapping[str, Any]) -> str:
    verdict = str(row.get("verdict") or "unknown")
    severity = severity_of(row)
    colour = _SEVERITY_COLOURS.get(severity or "", GOOD if verdict == "ok" else MUTED)
    problem = "true" if is_problem(row) else "false"
    attrs = f' class="vsk-verdict" data-verdict="{e(verdict)}" data-problem="{problem}"'
    return pill(_VERDICT_WORDS.get(verdict, verdict), colour, title=verdict, attrs=attrs)


def pvc_rows(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pvcs = status.get("pvcs") or []
    return [p for p in pvcs if isinstance(p, Mapping)] if isinstance(pvcs, list) else []


def section(status: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = status.get(key)
    return value if isinstance(value, Mapping) else {}


def count_problems(status: Mapping[str, Any]) -> int:
    """The number of red or orange badges the panel shows for ``status``.

    Counted from the rows themselves, not from the document's ``problems`` list (the webhook
    row can hold two findings under one badge), so the number in the header always matches
    the badges below it and is the same every time the same document is shown.
    """
    rows = [*pvc_rows(status), section(status, "podSecurity"), section(status, "webhook")]
    return sum(1 for row in rows if row and is_problem(row)) + (1 if level_mismatch(status) else 0)


def level_mismatch(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """psa mode: ``podSecurity.needs`` when the configured level does not admit what the
    namespace runs (drawn as its own badge, so it is counted as one)."""
    needs = section(status, "podSecurity").get("needs")
    if isinstance(needs, Mapping) and needs.get("mismatch") and needs.get("severity"):
        return needs
    return None


def status_names(status: Mapping[str, Any]) -> list[str]:
    """Every name the panel may print inside a sentence."""
    names = [str(status.get("namespace") or "")]
    for pvc in pvc_rows(status):
        names += [str(pvc.get("name") or ""), str(pvc.get("storageClass") or "")]
    names.append(str(section(status, "webhook").get("rwxStorageClass") or ""))
    return [n for n in names if n]


def render_badge(status: Mapping[str, Any]) -> str:
    """Overall state, namespace, the problem count and where the answer came from."""
    overall = str(status.get("overall") or "unknown")
    colour = _OVERALL_COLOURS.get(overall, MUTED)
    count = count_problems(status)
    source = str(status.get("source") or "")
    origin = {
        "admin-api": "from the vsphere-kale service",
        "local": "computed in this notebook (read-only)",
    }.get(source, "")
    pieces = [
        f'<span style="background:{colour};color:#fff;border-radius:6px;padding:1px 10px;'
        f'font-weight:700;white-space:nowrap">{e(overall.upper())}</span>',
        f'<span style="{_NAME}">namespace {name(status.get("namespace", "?"))}</span>',
        f'<span class="vsk-count" style="{_NAME};font-weight:600">'
        f"{count} {'problem' if count == 1 else 'problems'}</span>",
    ]
    if origin:
        pieces.append(f'<span style="{_NAME};color:{MUTED}">{e(origin)}</span>')
    return (
        f'<div class="vsk-badge" data-overall="{e(overall)}" '
        f'style="{_LINE};font-size:1.1em;line-height:1.6">{"".join(pieces)}</div>'
    )


def render_pvc_table(
    pvcs: Sequence[Mapping[str, Any]],
    *,
    names: Iterable[str] = (),
    recreatable: Iterable[str] = (),
    refusals: Mapping[str, str] | None = None,
    target_class: str = "",
) -> str:
    """One block per claim: its name and verdict; what it asks (modes, class, phase); why and
    the fix when it is a problem; for a claim in ``refusals``, why it has no Recreate button.
    Blocks, not a six-column table: a table cannot fit a 400 px notebook without breaking
    names or hiding the verdict off to the right."""
    if not pvcs:
        return (
            f'<div class="vsk-pvcs" style="{_BLOCK}">'
            "<i>No PersistentVolumeClaims in this namespace.</i></div>"
        )
    known = [*names, *(str(p.get("name") or "") for p in pvcs)]
    known += [str(p.get("storageClass") or "") for p in pvcs]
    can_recreate = set(recreatable)
    blocks = []
    for pvc in pvcs:
        raw_name = str(pvc.get("name", "?"))
        head = [f'<b style="max-width:100%">{name(raw_name)}</b>', verdict_pill(pvc)]
        if pvc.get("kaleMarshal"):
            head.append(f'<span style="{_NAME};color:{MUTED}">Kale marshal volume</span>')
        facts = [e(m) for m in pvc.get("accessModes") or []]
        klass = str(pvc.get("storageClass") or "(default)")
        facts.append(f"class {name(klass)}")
        facts.append(e(pvc.get("phase") or "?"))
        if pvc.get("capacity"):
            facts.append(e(pvc["capacity"]))
        lines = [f'<div style="{_LINE}">{"".join(head)}</div>']
        # "ReadWriteMany · class x · Pending · 1Gi": a separator starts its piece, so a line
        # never ends on a dangling dot.
        lines.append(
            f'<div style="{_LINE};column-gap:0.35em;color:{MUTED}">'
            + "".join(
                f'<span style="{_NAME};max-width:100%">{"· " if i else ""}{fact}</span>'
                for i, fact in enumerate(facts)
            )
            + "</div>"
        )
        if is_problem(pvc):
            if pvc.get("message"):
                # The service's whole sentence (with the provisioner's own error) is for
                # whoever asks "why?"; the fix below is what most readers need.
                lines.append(
                    f'<details><summary style="color:{MUTED}">Why?</summary>'
                    f'<div style="color:{MUTED}">{prose(pvc["message"], known)}</div></details>'
                )
            hint = (
                f"use <b>Recreate on {name(target_class)}</b> (the claim is empty "
                "and unbound: nothing is lost), then re-run the pipeline step"
                if raw_name in can_recreate and target_class
                else prose(pvc.get("hint") or "", known)
            )
            if hint:
                lines.append(f"<div><i>Fix:</i> {hint}</div>")
            if refusals and raw_name in refusals:
                lines.append(render_refusal(refusals[raw_name], names=known))
        blocks.append(
            f'<div class="vsk-pvc-row" data-pvc="{e(raw_name)}" '
            f'style="padding:4px 0;border-top:1px solid #e0e0e0">{"".join(lines)}</div>'
        )
    return (
        f'<div class="vsk-pvcs" style="{_BLOCK}"><div style="font-weight:600">Volumes '
        f'<span style="color:{MUTED};font-weight:400">(PersistentVolumeClaims)</span></div>'
        f"{''.join(blocks)}</div>"
    )


def _row(css: str, title: str, row: Mapping[str, Any], lines: Sequence[str]) -> str:
    body = "".join(f"<div>{line}</div>" for line in lines if line)
    verdict = str(row.get("verdict") or "unknown")
    return (
        f'<div class="{css}" data-verdict="{e(verdict)}" style="{_BLOCK}">'
        f'<div style="{_LINE}"><b style="{_NAME}">{e(title)}</b>{verdict_pill(row)}</div>'
        f"{body}</div>"
    )


def _required_lines(required: str, present: object) -> list[str]:
    """What the namespace needs, one item per line: each label, or the binding and its role."""
    state = "" if present is None else (" (present)" if present else " (missing)")
    if required.startswith("labels "):
        labels = [label for label in required[len("labels ") :].split(", ") if label]
        return [f"Needs these labels{state}:", *(name(label, code=True) for label in labels)]
    binding = re.fullmatch(r"RoleBinding (\S+) -> ClusterRole (\S+)", required)
    if binding:
        return [
            f'<span style="{_LINE};column-gap:0.3em"><span style="{_NAME}">Needs RoleBinding</span>'
            f"{name(binding.group(1), code=True)}"
            f'<span style="{_NAME}">granting ClusterRole</span>'
            f"{name(binding.group(2), code=True)}<span>{state}</span></span>"
        ]
    return [f"Needs {prose(required)}{state}"] if required else []


def render_pod_security(
    pod_security: Mapping[str, Any] | None, *, names: Iterable[str] = ()
) -> str:
    """Mode; what is needed (one label or binding per line) and whether it is there; the why
    and the fix only when it is a problem (when fine, the message says "present" again)."""
    if not pod_security:
        return _row("vsk-podsecurity", "Pod security", {}, ["No pod-security information."])
    mode = str(pod_security.get("mode") or "?")
    lines = [f"Mode: {e(_MODE_NAMES.get(mode, mode))}"]
    lines += _required_lines(str(pod_security.get("required") or ""), pod_security.get("present"))
    message = str(pod_security.get("message") or "")
    if is_problem(pod_security) or pod_security.get("verdict") in ("unmanaged", "unknown", "off"):
        lines.append(prose(message, names))
    if is_problem(pod_security) and pod_security.get("hint"):
        lines.append(f"<i>Fix:</i> {prose(pod_security['hint'], names)}")
    needs = level_mismatch({"podSecurity": pod_security})  # the level pods need (docs/health.md)
    if needs is not None:
        badge = verdict_pill(
            {"verdict": "level-too-low", "severity": needs["severity"], "message": ""}
        )
        lines.append(f"<b>Level</b> {badge} {prose(needs['mismatch'], names)}")
    return _row("vsk-podsecurity", "Pod security", pod_security, lines)


def describe_expiry(not_after: str, *, now: dt.datetime | None = None) -> str:
    """ "CA certificate expires in 364 days" (the exact time in a tooltip)."""
    try:
        when = dt.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    except ValueError:
        return f"CA certificate valid until {e(not_after)}"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    current = now or dt.datetime.now(dt.timezone.utc)
    days = (when - current).total_seconds() / 86400
    if days < 0:
        text = f"CA certificate expired {_days(-days)} ago"
    elif days < 1:
        text = "CA certificate expires today"
    else:
        text = f"CA certificate expires in {_days(days)}"
    return f'<span title="{e(not_after)}">{text}</span>'


def _days(days: float) -> str:
    whole = int(days)
    return "1 day" if whole == 1 else f"{whole} days"


def render_webhook(
    webhook: Mapping[str, Any] | None,
    *,
    now: dt.datetime | None = None,
    names: Iterable[str] = (),
) -> str:
    """Where new ReadWriteMany claims go, and the service's certificate; the service's own
    sentence ("MutatingWebhookConfiguration … is installed") only when something is wrong."""
    title = "Shared volumes (ReadWriteMany)"
    if not webhook:
        return _row("vsk-webhook", title, {}, ["No information about the volume rewrite."])
    lines = []
    target = webhook.get("rwxStorageClass")
    if target:
        exists = webhook.get("rwxClassExists")
        where = "" if exists is None else (" (exists)" if exists else " (does not exist)")
        lines.append(
            f'<span style="{_LINE};column-gap:0.3em"><span style="{_NAME}">New ReadWriteMany '
            f"claims go to class</span>{name(target)}<span>{where}</span></span>"
        )
    if webhook.get("caBundleNotAfter"):
        lines.append(describe_expiry(str(webhook["caBundleNotAfter"]), now=now))
    if webhook.get("verdict") != "ok" and webhook.get("message"):
        lines.append(prose(webhook["message"], [*names, str(target or "")]))
    if is_problem(webhook) and webhook.get("hint"):
        lines.append(f"<i>Fix:</i> {prose(webhook['hint'], [*names, str(target or '')])}")
    return _row("vsk-webhook", title, webhook, lines)


def render_reconcile_result(result: Mapping[str, Any]) -> str:
    """Per-namespace outcome, message and actions of a ReconcileResult."""
    results = result.get("results") or []
    if not results:
        return f'<div class="vsk-result" style="{_BLOCK}">Reconcile finished: nothing to do.</div>'
    items = []
    for item in results:
        outcome = str(item.get("outcome") or "?")
        colour = _OUTCOME_COLOURS.get(outcome, MUTED)
        namespace = str(item.get("namespace", "?"))
        actions = "".join(f"<li>{prose(a, [namespace])}</li>" for a in item.get("actions") or [])
        items.append(
            f'<div data-outcome="{e(outcome)}"><div style="{_LINE}">'
            f'<span style="{_NAME}">Reconcile <b>{e(namespace)}</b></span>{pill(outcome, colour)}'
            f"<span>{prose(item.get('message') or '', [namespace])}</span></div>"
            + (f"<ul style='margin:2px 0'>{actions}</ul>" if actions else "")
            + "</div>"
        )
    return f'<div class="vsk-result" style="{_BLOCK}">{"".join(items)}</div>'


# Verdicts the one-click recreation repairs: an unbound claim whose class cannot give what it
# asks for. The service says in each row whether its rule accepts (``recreateRefusal``).
RECREATABLE = frozenset({"rwx-on-block-class", "class-missing"})


def _repair_candidates(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Rows where a Recreate button belongs, for a caller who may repair, from the service."""
    if not status.get("canReconcile") or status.get("source") == "local":
        return []
    return [p for p in pvc_rows(status) if p.get("verdict") in RECREATABLE and p.get("name")]


def recreatable_claims(status: Mapping[str, Any]) -> list[str]:
    """Names of the claims the panel offers to recreate on the RWX class: those the service's
    rule accepts (no ``recreateRefusal``; a service older than the field: unbound ones)."""
    return [
        str(p.get("name"))
        for p in _repair_candidates(status)
        if not p.get("recreateRefusal") and p.get("phase") != "Bound"
    ]


def recreate_refusals(status: Mapping[str, Any]) -> dict[str, str]:
    """Claim -> why there is no Recreate button where one would be expected: the service's
    sentence (``pvcs[].recreateRefusal``), shown in the row instead of the button."""
    return {
        str(p.get("name")): str(p["recreateRefusal"])
        for p in _repair_candidates(status)
        if p.get("recreateRefusal")
    }


def render_refusal(refusal: str, *, names: Iterable[str] = ()) -> str:
    """ "Recreate is not offered: <the service's sentence>" (words, not a disabled button)."""
    return (
        f'<div class="vsk-recreate-refusal" style="color:{MUTED}"><i>Recreate is not offered:'
        f"</i> {prose(refusal, names)}</div>"
    )


def decide_primary_action(status: Mapping[str, Any]) -> str:
    """What the panel's highlighted button is: ``recreate``, ``reconcile`` or ``none``.

    The worst problem shown decides: a claim that can never bind blocks the pipeline step the
    user is waiting for, so recreating it comes first; a pod-security problem is what
    Reconcile repairs. Reconcile is not highlighted when pod security is already fine (the
    reconciler repairs drift within a second on its own).
    """
    if recreatable_claims(status):
        return "recreate"
    if is_problem(section(status, "podSecurity")) and status.get("canReconcile"):
        return "reconcile"
    return "none"


def render_recreate_result(result: Mapping[str, Any]) -> str:
    """ "Recreated X on nfs-client (it was on vsan-…)": from the fields, not the log sentence."""
    target = str(result.get("storageClass") or "")
    was = str(result.get("originalStorageClass") or "")
    text = f"Recreated {name(result.get('name', '?'))}"
    if target:
        text += f" on {name(target)}"
    if was:
        text += f" (it was on {name(was)})"
    text += ". It is empty; re-run the pipeline step that uses it."
    return (
        f'<div class="vsk-recreate-result" data-outcome="{e(result.get("outcome", "recreated"))}"'
        f' style="{_BLOCK}">{text}</div>'
    )


def render_error(message: str) -> str:
    return f'<div class="vsk-error" style="color:{BAD};{_BLOCK}">⚠ {e(message)}</div>'


def render_updated(status: Mapping[str, Any], *, now: dt.datetime) -> str:
    """ "Last updated at 14:02:11" in the notebook's local time; the date and the service's own
    timestamp in the tooltip."""
    generated = str(status.get("generatedAt") or "")
    tip = now.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if generated:
        tip += f" (the service answered at {generated})"
    return (
        f'<span title="{e(tip)}" style="color:{MUTED};white-space:nowrap">'
        f"Last updated at {e(now.strftime('%H:%M:%S'))}</span>"
    )
