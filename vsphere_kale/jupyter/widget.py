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
_OUTCOME_COLOURS = {"failed": _BAD, "skipped": _MUTED}


class StatusClient(Protocol):
    """What the panel needs from its HTTP client."""

    def fetch_status(self) -> dict[str, Any]: ...

    def reconcile(self) -> dict[str, Any]: ...


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


def render_badge(status: Mapping[str, Any]) -> str:
    """Overall state, namespace and where the answer came from."""
    overall = str(status.get("overall") or "unknown")
    colour = _OVERALL_COLOURS.get(overall, _MUTED)
    problems = status.get("problems") or []
    count = len(problems) if isinstance(problems, list) else 0
    noun = "problem" if count == 1 else "problems"
    source = str(status.get("source") or "")
    origin = (
        "from the admin API"
        if source == "admin-api"
        else "computed locally (read-only)"
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
        name = _e(pvc.get("name", "?"))
        if pvc.get("kaleMarshal"):
            name += f' <span style="color:{_MUTED}">(Kale marshal)</span>'
        modes = ", ".join(str(m) for m in pvc.get("accessModes") or [])
        hint = pvc.get("hint") or ""
        message = pvc.get("message") or ""
        detail = _e(hint) if pvc.get("verdict") != "ok" else ""
        cells = (
            name,
            _e(modes),
            _e(pvc.get("storageClass") or "(default)"),
            _e(pvc.get("phase") or "?"),
            _verdict(pvc.get("verdict")),
            detail,
        )
        row = "".join(f'<td style="padding:2px 8px;vertical-align:top">{c}</td>' for c in cells)
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


def render_pod_security(pod_security: Mapping[str, Any] | None) -> str:
    if not pod_security:
        return _row("vsk-podsecurity", "Pod security", "unknown", ["No pod-security information."])
    mode = str(pod_security.get("mode") or "?")
    required = str(pod_security.get("required") or "")
    present = pod_security.get("present")
    lines = [
        f"mode <code>{_e(mode)}</code>"
        + (f"; needs {_e(required)}" if required else "")
        + ("" if present is None else f" ({'present' if present else 'missing'})"),
        _e(pod_security.get("message") or ""),
    ]
    if pod_security.get("verdict") not in ("ok", None):
        lines.append(f"<i>Fix:</i> {_e(pod_security.get('hint') or '')}")
    return _row("vsk-podsecurity", "Pod security", pod_security.get("verdict"), lines)


def render_webhook(webhook: Mapping[str, Any] | None) -> str:
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
        facts.append(f"CA valid until {_e(webhook['caBundleNotAfter'])}")
    lines = ["; ".join(facts), _e(webhook.get("message") or "")]
    if webhook.get("verdict") not in ("ok", None):
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
        colour = _OUTCOME_COLOURS.get(outcome, _GOOD)
        actions = "".join(f"<li>{_e(a)}</li>" for a in item.get("actions") or [])
        items.append(
            f'<div data-outcome="{_e(outcome)}">Reconcile <b>{_e(item.get("namespace", "?"))}'
            f"</b>: {_pill(outcome, colour)} {_e(item.get('message') or '')}"
            + (f"<ul style='margin:2px 0'>{actions}</ul>" if actions else "")
            + "</div>"
        )
    return f'<div class="vsk-result">{"".join(items)}</div>'


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
        for child, css in (
            (self.badge, "vsk-badge-widget"),
            (self.updated, "vsk-updated"),
            (self.error, "vsk-error-widget"),
            (self.pvc_table, "vsk-pvc-widget"),
            (self.pod_security, "vsk-podsecurity-widget"),
            (self.webhook, "vsk-webhook-widget"),
            (self.result, "vsk-result-widget"),
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
        notes = []
        if status.get("source") == "local":
            reason = status.get("fallbackReason") or "the admin API could not be reached"
            notes.append(
                f"Read-only view computed with your notebook's own permissions: {_e(reason)}. "
                "Reconcile needs the admin API."
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
