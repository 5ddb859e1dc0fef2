"""``HealthPanel``: the notebook namespace's vsphere-kale health, with Refresh and Reconcile.

Standard ipywidgets 8 only (no custom JavaScript, so nothing to install in JupyterLab beyond
ipywidgets itself). The panel talks to the Jupyter server extension over HTTP through a client
object; tests hand in a client pointed at a real server, and the ``render_*`` functions below
are pure (status JSON in, HTML out).

Usage in a notebook::

    from vsphere_kale.jupyter.widget import HealthPanel
    HealthPanel()
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import ipywidgets as widgets

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.jupyter.widget_client import JupyterHealthClient, find_server

log = logging.getLogger(__name__)

_OVERALL_COLOURS = {"healthy": "#1e7e34", "degraded": "#b26a00", "broken": "#c62828"}
_GOOD = "#1e7e34"
_WARN = "#b26a00"
_BAD = "#c62828"
_MUTED = "#616161"
_VERDICT_COLOURS = {
    # PVCs
    "ok": _GOOD,
    "rwx-on-block-class": _BAD,
    "pending": _WARN,
    "lost": _BAD,
    # pod security
    "missing": _BAD,
    "drifted": _WARN,
    "conflict": _BAD,
    "unmanaged": _MUTED,
    "off": _MUTED,
    # webhook
    "ca-invalid": _BAD,
    "ca-expiring": _WARN,
    "class-missing": _BAD,
    "unknown": _MUTED,
}
# Reconcile outcomes: one colour per meaning, the same as the verdict pills (a conflict is
# never green). Anything not listed is shown muted rather than assumed good.
_OUTCOME_COLOURS = {
    "created": _GOOD,
    "updated": _GOOD,
    "repaired": _GOOD,
    "adopted": _GOOD,
    "unchanged": _GOOD,
    "ok": _GOOD,
    "conflict": _BAD,
    "failed": _BAD,
    "skipped": _MUTED,
}
# Verdicts that are not a problem: they do not count and never ask for an action.
_NOT_PROBLEMS = frozenset({"ok", "unmanaged", "off", "unknown", ""})
# A cell that holds a Kubernetes name or class: never wrapped mid-word, cut with an ellipsis
# when the notebook is narrow, the whole value in the tooltip.
_NAME_CELL = (
    "padding:2px 8px;vertical-align:top;white-space:nowrap;overflow:hidden;"
    "text-overflow:ellipsis;max-width:16em"
)
_TEXT_CELL = "padding:2px 8px;vertical-align:top;overflow-wrap:normal;word-break:normal"


class StatusClient(Protocol):
    """What the panel needs from its HTTP client."""

    def fetch_status(self) -> dict[str, Any]: ...

    def reconcile(self) -> dict[str, Any]: ...

    def recreate_pvc(self, name: str) -> dict[str, Any]: ...


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pill(text: str, colour: str) -> str:
    return (
        f'<span style="background:{colour};color:#fff;border-radius:4px;'
        f'padding:1px 6px;font-weight:600;white-space:nowrap">{_e(text)}</span>'
    )


def _verdict(value: object) -> str:
    text = str(value or "unknown")
    return _pill(text, _VERDICT_COLOURS.get(text, _MUTED))


def _is_problem(verdict: object) -> bool:
    return str(verdict or "") not in _NOT_PROBLEMS


def _pvc_rows(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pvcs = status.get("pvcs") or []
    return [p for p in pvcs if isinstance(p, Mapping)] if isinstance(pvcs, list) else []


def _section(status: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = status.get(key)
    return value if isinstance(value, Mapping) else {}


def count_problems(status: Mapping[str, Any]) -> int:
    """The number of red or orange badges the panel shows for ``status``.

    Counted from the rows themselves, not from the document's ``problems`` list, so the
    number in the header always matches the badges below it and is the same every time the
    same document is shown.
    """
    rows = [p.get("verdict") for p in _pvc_rows(status)]
    rows += [_section(status, "podSecurity").get("verdict")]
    rows += [_section(status, "webhook").get("verdict")]
    return sum(1 for verdict in rows if _is_problem(verdict))


def render_badge(status: Mapping[str, Any]) -> str:
    """Overall state, namespace and where the answer came from."""
    overall = str(status.get("overall") or "unknown")
    colour = _OVERALL_COLOURS.get(overall, _MUTED)
    count = count_problems(status)
    noun = "problem" if count == 1 else "problems"
    source = str(status.get("source") or "")
    origin = (
        "from the vsphere-kale service"
        if source == "admin-api"
        else "computed in this notebook (read-only)"
        if source == "local"
        else ""
    )
    return (
        f'<div class="vsk-badge" data-overall="{_e(overall)}" style="font-size:1.1em">'
        f'<span style="background:{colour};color:#fff;border-radius:6px;padding:2px 10px;'
        f'font-weight:700">{_e(overall.upper())}</span> '
        f"namespace <b>{_e(status.get('namespace', '?'))}</b>: {count} {noun}"
        f'<span style="color:{_MUTED}"> {_e(origin)}</span></div>'
    )


def render_pvc_table(pvcs: Sequence[Mapping[str, Any]]) -> str:
    """One row per PVC: name, access modes, class, phase, verdict, hint."""
    if not pvcs:
        return '<div class="vsk-pvcs"><i>No PersistentVolumeClaims in this namespace.</i></div>'
    head = "".join(
        f'<th style="text-align:left;padding:2px 8px">{h}</th>'
        for h in ("PVC", "Access modes", "Class", "Phase", "Verdict", "Hint")
    )
    rows = []
    for pvc in pvcs:
        raw_name = str(pvc.get("name", "?"))
        name = f'<span title="{_e(raw_name)}">{_e(raw_name)}</span>'
        if pvc.get("kaleMarshal"):
            name += f'<div style="color:{_MUTED};font-size:0.9em">Kale marshal volume</div>'
        modes = ", ".join(str(m) for m in pvc.get("accessModes") or [])
        hint = pvc.get("hint") or ""
        message = pvc.get("message") or ""
        detail = _e(hint) if _is_problem(pvc.get("verdict")) else ""
        klass = str(pvc.get("storageClass") or "(default)")
        cells = (
            (_NAME_CELL, name),
            (_NAME_CELL, _e(modes)),
            (_NAME_CELL, f'<span title="{_e(klass)}">{_e(klass)}</span>'),
            (_NAME_CELL, _e(pvc.get("phase") or "?")),
            (_NAME_CELL, _verdict(pvc.get("verdict"))),
            (_TEXT_CELL, detail),
        )
        row = "".join(f'<td style="{style}">{c}</td>' for style, c in cells)
        rows.append(
            f'<tr class="vsk-pvc-row" data-pvc="{_e(pvc.get("name", ""))}" '
            f'title="{_e(message)}">{row}</tr>'
        )
    return (
        '<table class="vsk-pvcs" style="border-collapse:collapse">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _row(css: str, title: str, verdict: object, lines: Sequence[str]) -> str:
    body = "".join(f"<div>{line}</div>" for line in lines if line)
    return (
        f'<div class="{css}" data-verdict="{_e(verdict)}" style="margin:4px 0">'
        f"<b>{_e(title)}</b> {_verdict(verdict)}{body}</div>"
    )


_MODE_NAMES = {
    "psp": "PodSecurityPolicy",
    "psa": "Pod Security Admission",
}


def render_pod_security(pod_security: Mapping[str, Any] | None) -> str:
    if not pod_security:
        return _row("vsk-podsecurity", "Pod security", "unknown", ["No pod-security information."])
    mode = str(pod_security.get("mode") or "?")
    required = str(pod_security.get("required") or "")
    present = pod_security.get("present")
    needs = ""
    if required:
        state = "" if present is None else (" — present" if present else " — missing")
        needs = f"Needs {_e(required)}{state}"
    lines = [
        f"Mode: <code>{_e(_MODE_NAMES.get(mode, mode))}</code>",
        needs,
        _e(pod_security.get("message") or ""),
    ]
    if _is_problem(pod_security.get("verdict")):
        lines.append(f"<i>Fix:</i> {_e(pod_security.get('hint') or '')}")
    level_needed = pod_security.get("needs")  # psa mode: the level pods need (docs/health.md)
    if isinstance(level_needed, Mapping) and level_needed.get("mismatch"):
        lines.append(f"<b>Level:</b> {_e(level_needed['mismatch'])}")
    return _row("vsk-podsecurity", "Pod security", pod_security.get("verdict"), lines)


def describe_expiry(not_after: str, *, now: dt.datetime | None = None) -> str:
    """ "CA certificate expires in 364 days" (the exact time in a tooltip)."""
    try:
        when = dt.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    except ValueError:
        return f"CA certificate valid until {_e(not_after)}"
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
    return f'<span title="{_e(not_after)}">{text}</span>'


def _days(days: float) -> str:
    whole = int(days)
    return "1 day" if whole == 1 else f"{whole} days"


def render_webhook(webhook: Mapping[str, Any] | None, *, now: dt.datetime | None = None) -> str:
    if not webhook:
        return _row("vsk-webhook", "RWX webhook", "unknown", ["No webhook information."])
    facts = []
    if webhook.get("rwxStorageClass"):
        exists = webhook.get("rwxClassExists")
        facts.append(
            f"RWX class <code>{_e(webhook['rwxStorageClass'])}</code>"
            + ("" if exists is None else (" exists" if exists else " does not exist"))
        )
    if webhook.get("caBundleNotAfter"):
        facts.append(describe_expiry(str(webhook["caBundleNotAfter"]), now=now))
    lines = [*facts, _e(webhook.get("message") or "")]
    if _is_problem(webhook.get("verdict")):
        lines.append(f"<i>Fix:</i> {_e(webhook.get('hint') or '')}")
    return _row("vsk-webhook", "RWX webhook", webhook.get("verdict"), lines)


def render_reconcile_result(result: Mapping[str, Any]) -> str:
    """Per-namespace outcome, message and actions of a ReconcileResult."""
    results = result.get("results") or []
    if not results:
        return '<div class="vsk-result">Reconcile finished: nothing to do.</div>'
    items = []
    for item in results:
        outcome = str(item.get("outcome") or "?")
        colour = _OUTCOME_COLOURS.get(outcome, _MUTED)
        actions = "".join(f"<li>{_e(a)}</li>" for a in item.get("actions") or [])
        items.append(
            f'<div data-outcome="{_e(outcome)}">Reconcile <b>{_e(item.get("namespace", "?"))}'
            f"</b>: {_pill(outcome, colour)} {_e(item.get('message') or '')}"
            + (f"<ul style='margin:2px 0'>{actions}</ul>" if actions else "")
            + "</div>"
        )
    return f'<div class="vsk-result">{"".join(items)}</div>'


# Verdicts the one-click recreation repairs: an unbound claim whose class cannot give what it
# asks for. The admin API re-checks (Bound, data source, in use) and refuses with a sentence.
RECREATABLE = frozenset({"rwx-on-block-class", "class-missing"})


def recreatable_claims(status: Mapping[str, Any]) -> list[str]:
    """Names of the claims the panel offers to recreate on the RWX class."""
    if not status.get("canReconcile") or status.get("source") == "local":
        return []
    return [
        str(p.get("name"))
        for p in _pvc_rows(status)
        if p.get("verdict") in RECREATABLE and p.get("phase") != "Bound" and p.get("name")
    ]


def decide_primary_action(status: Mapping[str, Any]) -> str:
    """What the panel's highlighted button is: ``recreate``, ``reconcile`` or ``none``.

    The worst problem shown decides: a claim that can never bind blocks the pipeline step the
    user is waiting for, so recreating it comes first; a pod-security problem is what
    Reconcile repairs. Reconcile is not highlighted when pod security is already fine (the
    reconciler repairs drift within a second on its own).
    """
    if recreatable_claims(status):
        return "recreate"
    if _is_problem(_section(status, "podSecurity").get("verdict")) and status.get("canReconcile"):
        return "reconcile"
    return "none"


def render_recreate_result(result: Mapping[str, Any]) -> str:
    name = _e(result.get("name", "?"))
    message = _e(result.get("message") or "")
    return (
        f'<div class="vsk-recreate-result" data-outcome="{_e(result.get("outcome", "?"))}">'
        f"Recreated <b>{name}</b>: {message}</div>"
    )


def render_error(message: str) -> str:
    return f'<div class="vsk-error" style="color:{_BAD}">⚠ {_e(message)}</div>'


def _now() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


class HealthPanel(widgets.VBox):  # type: ignore[misc]
    """PVC and pod-security health of the notebook's namespace, with Refresh and Reconcile.

    ``client`` is found automatically (NB_PREFIX on Kubeflow, else the server that launched
    this kernel); pass ``url``/``token`` or a ``client`` to point it elsewhere.
    """

    def __init__(
        self,
        client: StatusClient | None = None,
        *,
        url: str | None = None,
        token: str = "",
        refresh: bool = True,
        **kwargs: Any,
    ) -> None:
        self.badge = widgets.HTML(value="<i>Loading…</i>")
        self.updated = widgets.HTML(value="")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.reconcile_button = widgets.Button(
            description="Reconcile",
            icon="wrench",
            button_style="warning",
            disabled=True,
            tooltip="Repair this namespace's pod-security setup (needs admin permission)",
        )
        self.error = widgets.HTML(value="")
        self.note = widgets.HTML(value="")
        self.pvc_table = widgets.HTML(value="")
        self.pod_security = widgets.HTML(value="")
        self.webhook = widgets.HTML(value="")
        self.result = widgets.HTML(value="")
        self.recreate_box = widgets.VBox([])
        for child, css in (
            (self.badge, "vsk-badge-widget"),
            (self.updated, "vsk-updated"),
            (self.error, "vsk-error-widget"),
            (self.pvc_table, "vsk-pvc-widget"),
            (self.pod_security, "vsk-podsecurity-widget"),
            (self.webhook, "vsk-webhook-widget"),
            (self.result, "vsk-result-widget"),
            (self.recreate_box, "vsk-recreate-box"),
            (self.refresh_button, "vsk-refresh"),
            (self.reconcile_button, "vsk-reconcile"),
        ):
            child.add_class(css)
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.reconcile_button.on_click(lambda _button: self.reconcile())
        header = widgets.HBox(
            [self.badge, self.refresh_button, self.reconcile_button],
            layout=widgets.Layout(align_items="center"),
        )
        super().__init__(
            [
                header,
                self.updated,
                self.error,
                self.note,
                self.pvc_table,
                self.recreate_box,
                self.pod_security,
                self.webhook,
                self.result,
            ],
            **kwargs,
        )
        self.add_class("vsk-health-panel")
        self.status: dict[str, Any] | None = None
        self._client = client
        self._url = url
        self._token = token
        if refresh:
            self.refresh()

    @property
    def client(self) -> StatusClient:
        if self._client is None:
            from vsphere_kale.jupyter.widget_client import ServerRef

            server = (
                ServerRef(self._url if self._url.endswith("/") else self._url + "/", self._token)
                if self._url
                else find_server()
            )
            self._client = JupyterHealthClient(server)
        return self._client

    def _busy(self, busy: bool) -> None:
        self.refresh_button.disabled = busy
        can = bool(self.status and self.status.get("canReconcile"))
        self.reconcile_button.disabled = busy or not can
        for row in self.recreate_box.children:
            for button in row.children:
                if isinstance(button, widgets.Button):
                    button.disabled = busy

    def _target_class(self) -> str:
        webhook = _section(self.status or {}, "webhook")
        return str(webhook.get("rwxStorageClass") or "the RWX class")

    def _recreate_row(self, name: str) -> widgets.HBox:
        """ "Recreate on nfs-client", then a confirmation step: deleting a claim is not undone."""
        ask = widgets.Button(
            description=f"Recreate on {self._target_class()}",
            icon="refresh",
            button_style="danger",
            tooltip=f"Delete {name} and create it again on {self._target_class()}",
            layout=widgets.Layout(width="auto"),
        )
        ask.add_class("vsk-recreate")
        label = widgets.HTML(
            value=f'<span style="white-space:nowrap">Claim <b>{_e(name)}</b> cannot bind.</span>'
        )
        row = widgets.HBox([label, ask], layout=widgets.Layout(align_items="center"))
        row.add_class("vsk-recreate-row")

        def confirm_step(_button: object) -> None:
            yes = widgets.Button(
                description="Yes, recreate it",
                button_style="danger",
                layout=widgets.Layout(width="auto"),
            )
            yes.add_class("vsk-recreate-confirm")
            no = widgets.Button(description="Cancel", layout=widgets.Layout(width="auto"))
            no.add_class("vsk-recreate-cancel")
            question = widgets.HTML(
                value=f"Delete <b>{_e(name)}</b> and create it again, empty, on "
                f"<code>{_e(self._target_class())}</code>?"
            )
            yes.on_click(lambda _b: self.recreate(name))
            no.on_click(lambda _b: setattr(row, "children", (label, ask)))
            row.children = (question, yes, no)

        ask.on_click(confirm_step)
        return row

    def refresh(self) -> None:
        """Fetch the status and redraw; errors become a sentence in the panel."""
        self._busy(True)
        self.error.value = ""
        try:
            status = self.client.fetch_status()
        except VsphereKaleError as exc:
            self.error.value = render_error(f"Could not read the status: {exc}")
            self.status = None
        else:
            self.show_status(status)
        finally:
            self._busy(False)

    def show_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.badge.value = render_badge(status)
        pvcs = status.get("pvcs") or []
        self.pvc_table.value = render_pvc_table(pvcs if isinstance(pvcs, list) else [])
        self.pod_security.value = render_pod_security(status.get("podSecurity"))
        self.webhook.value = render_webhook(status.get("webhook"))
        self.recreate_box.children = tuple(
            self._recreate_row(name) for name in recreatable_claims(status)
        )
        primary = decide_primary_action(status)
        self.reconcile_button.button_style = "warning" if primary == "reconcile" else ""
        notes = []
        if status.get("source") == "local":
            reason = status.get("fallbackReason") or "the vsphere-kale service could not be reached"
            notes.append(
                f"Read-only view computed with your notebook's own permissions: {_e(reason)}. "
                "Fixes need the vsphere-kale service."
            )
        elif not status.get("canReconcile"):
            notes.append("You may read this status but not reconcile this namespace.")
        self.note.value = "".join(
            f'<div class="vsk-note" style="color:{_MUTED}">{n}</div>' for n in notes
        )
        self.updated.value = (
            f'<span style="color:{_MUTED}">Last updated {_e(_now())}'
            + (f" (generated {_e(status['generatedAt'])})" if status.get("generatedAt") else "")
            + "</span>"
        )

    def recreate(self, name: str) -> None:
        """Recreate one stuck claim on the RWX class, show the answer, then refresh."""
        self._busy(True)
        self.error.value = ""
        try:
            result = self.client.recreate_pvc(name)
        except VsphereKaleError as exc:
            self.error.value = render_error(f"Recreating {name} failed: {exc}")
            self._busy(False)
            return
        self.result.value = render_recreate_result(result)
        self._busy(False)
        self.refresh()

    def reconcile(self) -> None:
        """Ask for a repair, show the per-namespace result, then refresh the status."""
        self._busy(True)
        self.error.value = ""
        self.result.value = "<i>Reconciling…</i>"
        try:
            result = self.client.reconcile()
        except VsphereKaleError as exc:
            self.result.value = ""
            self.error.value = render_error(f"Reconcile failed: {exc}")
            self._busy(False)
            return
        self.result.value = render_reconcile_result(result)
        self._busy(False)
        self.refresh()
