"""``HealthPanel``: the notebook namespace's vsphere-kale health, with Refresh and Reconcile.

Standard ipywidgets 8 only (no custom JavaScript, so nothing to install in JupyterLab beyond
ipywidgets itself). The panel talks to the Jupyter server extension over HTTP through a client
object; tests hand in a client pointed at a real server. What it draws comes from the pure
``render_*`` functions of :mod:`vsphere_kale.jupyter.widget_render` (status JSON in, HTML out).

Usage in a notebook::

    from vsphere_kale.jupyter.widget import HealthPanel
    HealthPanel()
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

import ipywidgets as widgets

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.jupyter.widget_client import JupyterHealthClient, find_server
from vsphere_kale.jupyter.widget_render import (
    MUTED,
    RECREATABLE,
    count_problems,
    decide_primary_action,
    describe_expiry,
    e,
    name,
    recreatable_claims,
    recreate_refusals,
    render_badge,
    render_error,
    render_pod_security,
    render_pvc_table,
    render_reconcile_result,
    render_recreate_result,
    render_updated,
    render_webhook,
    section,
    status_names,
)

log = logging.getLogger(__name__)

__all__ = [
    "RECREATABLE",
    "HealthPanel",
    "StatusClient",
    "count_problems",
    "decide_primary_action",
    "describe_expiry",
    "recreatable_claims",
    "recreate_refusals",
    "render_badge",
    "render_error",
    "render_pod_security",
    "render_pvc_table",
    "render_reconcile_result",
    "render_recreate_result",
    "render_webhook",
]


class StatusClient(Protocol):
    """What the panel needs from its HTTP client."""

    def fetch_status(self) -> dict[str, Any]: ...

    def reconcile(self) -> dict[str, Any]: ...

    def recreate_pvc(self, name: str) -> dict[str, Any]: ...


class HealthPanel(widgets.VBox):  # type: ignore[misc]
    """PVC and pod-security health of the notebook's namespace, with Refresh and Reconcile.

    ``client`` is found automatically (NB_PREFIX on Kubeflow, else the server that launched
    this kernel); pass ``url``/``token`` or a ``client`` to point it elsewhere. In a notebook
    with Kale metadata it also shows that notebook's Kale volumes (found from this kernel's
    id; ``notebook="path/x.ipynb"`` names another notebook under the Jupyter root).
    """

    def __init__(
        self,
        client: StatusClient | None = None,
        *,
        url: str | None = None,
        token: str = "",
        notebook: str | None = None,
        refresh: bool = True,
        **kwargs: Any,
    ) -> None:
        # Imported here: the Kale section builds on this module's pills and cells.
        from vsphere_kale.jupyter.widget_kale import KaleSection

        self.kale = KaleSection()
        self.badge = widgets.HTML(value="<i>Loading…</i>")
        self.updated = widgets.HTML(value="")
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", layout=widgets.Layout(width="auto")
        )
        self.reconcile_button = widgets.Button(
            description="Reconcile",
            icon="wrench",
            disabled=True,
            tooltip="Repair this namespace's pod-security setup (needs admin permission)",
            layout=widgets.Layout(width="auto"),
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
        # Wraps as a whole (buttons under the badge in a narrow notebook) rather than
        # squeezing the badge's words onto three lines.
        header = widgets.HBox(
            [self.badge, self.refresh_button, self.reconcile_button],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        super().__init__(
            [
                header,
                self.updated,
                self.error,
                # What the last click did, near the buttons: the Recreate row it came from
                # is gone once the claim is fixed.
                self.result,
                self.note,
                self.kale,
                self.pvc_table,
                self.recreate_box,
                self.pod_security,
                self.webhook,
            ],
            **kwargs,
        )
        self.add_class("vsk-health-panel")
        self.status: dict[str, Any] | None = None
        self._client = client
        self._url = url
        self._token = token
        self._notebook = notebook
        if refresh:
            self.refresh()

    @property
    def client(self) -> StatusClient:
        if self._client is None:
            from vsphere_kale.jupyter.widget_client import ServerRef
            from vsphere_kale.jupyter.widget_kale import decide_status_query, find_kernel_id

            server = (
                ServerRef(self._url if self._url.endswith("/") else self._url + "/", self._token)
                if self._url
                else find_server()
            )
            query = decide_status_query(self._notebook, kernel_id=find_kernel_id())
            self._client = JupyterHealthClient(server, query=query)
        return self._client

    def _busy(self, busy: bool) -> None:
        self.refresh_button.disabled = busy
        can = bool(self.status and self.status.get("canReconcile"))
        self.reconcile_button.disabled = busy or not can
        for row in (*self.recreate_box.children, *self.kale.actions.children):
            for button in row.children:
                if isinstance(button, widgets.Button):
                    button.disabled = busy

    def _target_class(self) -> str:
        webhook = section(self.status or {}, "webhook")
        return str(webhook.get("rwxStorageClass") or "the RWX class")

    def _recreate_row(self, claim: str, *, primary: bool) -> widgets.HBox:
        """ "Recreate on nfs-client", then a confirmation step: deleting a claim is not undone."""
        target = self._target_class()
        ask = widgets.Button(
            description=f"Recreate on {target}",
            icon="refresh",
            button_style="primary" if primary else "",
            tooltip=f"Delete {claim} and create it again, empty, on {target}",
            layout=widgets.Layout(width="auto"),
        )
        ask.add_class("vsk-recreate")
        label = widgets.HTML(value=f"<b>{name(claim)}</b> cannot bind:")
        # Wraps between the label and its button; a cut-short button label says nothing.
        row = widgets.HBox(
            [label, ask], layout=widgets.Layout(align_items="center", flex_flow="row wrap")
        )
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
                value=f'<div style="line-height:1.45">Delete <b>{name(claim)}</b> and create '
                f"it again, empty, on {name(target)}?</div>"
            )
            yes.on_click(lambda _b: self.recreate(claim))
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
        names = status_names(status)
        recreatable = recreatable_claims(status)
        primary = decide_primary_action(status)
        # The Kale section offers Recreate for the claims it shows; the namespace table then
        # does not offer the same button a second time.
        in_kale = self.kale.show(
            status,
            recreate_row=lambda claim: self._recreate_row(claim, primary=primary == "recreate"),
            target=self._target_class(),
        )
        self.pvc_table.value = render_pvc_table(
            pvcs if isinstance(pvcs, list) else [],
            names=names,
            # Its fix points at the button, whether it sits here or in the Kale section.
            recreatable=recreatable,
            refusals=recreate_refusals(status),
            target_class=self._target_class(),
        )
        self.pod_security.value = render_pod_security(status.get("podSecurity"), names=names)
        self.webhook.value = render_webhook(status.get("webhook"), names=names)
        self.recreate_box.children = tuple(
            self._recreate_row(claim, primary=primary == "recreate")
            for claim in recreatable
            if claim not in in_kale
        )
        self.reconcile_button.button_style = "primary" if primary == "reconcile" else ""
        notes = []
        if status.get("source") == "local":
            reason = status.get("fallbackReason") or "the vsphere-kale service could not be reached"
            notes.append(
                f"Read-only view computed with your notebook's own permissions: {e(reason)}. "
                "Fixes need the vsphere-kale service."
            )
        elif not status.get("canReconcile"):
            notes.append("You may read this status but not reconcile this namespace.")
        self.note.value = "".join(
            f'<div class="vsk-note" style="color:{MUTED};line-height:1.45">{n}</div>' for n in notes
        )
        self.updated.value = render_updated(status, now=dt.datetime.now().astimezone())

    def recreate(self, claim: str) -> None:
        """Recreate one stuck claim on the RWX class, show the answer, then refresh."""
        self._busy(True)
        self.error.value = ""
        try:
            result = self.client.recreate_pvc(claim)
        except VsphereKaleError as exc:
            self.error.value = render_error(f"Recreating {claim} failed: {exc}")
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
