"""The panel's Kale section: the volumes the notebook's Kale pipeline mounts, with verdicts.

Shown when the panel runs in a notebook with Kale metadata (``metadata.kubeflow_notebook``):
one row per volume (claim, mount point, what the claim is, verdict, why and the fix). The
extension finds the notebook from this kernel's id (see :mod:`vsphere_kale.jupyter.kale_status`
for why the id and not ``JPY_SESSION_NAME``), so the panel only has to say which kernel it is.

The one-click fix is offered only where it is safe: a claim that is not bound (so it holds no
data) and asks for ReadWriteMany on a class that cannot give it, recreated on the RWX class
through the service, and only where the service's own rule accepts (the claim's
``recreateRefusal``, its namespace row's, is ``null``); elsewhere the row says why, as the
namespace table does. A ReadWriteOnce claim that is Bound holds data: no button, the hint says
how to make an RWX copy.

Rendering is pure (status JSON in, HTML out); :class:`KaleSection` is the ipywidgets part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets

from vsphere_kale.jupyter.widget_render import (
    _BLOCK,
    _LINE,
    _NAME,
    BAD,
    GOOD,
    MUTED,
    RECREATABLE,
    WARN,
    e,
    name,
    pill,
    prose,
    pvc_rows,
    recreatable_claims,
    render_refusal,
    verdict_pill,
)

_CONNECTION_FILE = re.compile(r"^kernel-(?P<id>[A-Za-z0-9][A-Za-z0-9._-]{0,127})\.json$")
"""jupyter_client names the connection file of a kernel it starts ``kernel-<kernel id>.json``."""

# Severity -> pill colour, the panel's three meanings: fine, look at it, broken.
_SEVERITY_COLOURS = {"ok": GOOD, "info": GOOD, "warning": WARN, "error": BAD}
_FIT_PILLS = {True: ("fit", GOOD), False: ("not fit", BAD), None: ("unknown", MUTED)}


def decide_kernel_id(connection_file: str | None) -> str | None:
    """This kernel's id from its connection file's name, or ``None`` (not a server's kernel)."""
    if not connection_file:
        return None
    match = _CONNECTION_FILE.match(os.path.basename(connection_file))
    return match.group("id") if match else None


def find_kernel_id() -> str | None:
    """The running kernel's id; ``None`` outside an ipykernel (plain Python, tests)."""
    try:
        from ipykernel.connect import get_connection_file
    except ImportError:
        return None
    try:
        return decide_kernel_id(get_connection_file())
    except (RuntimeError, OSError):
        # Not in a running kernel, or its connection file is gone: no notebook to show.
        return None


def decide_status_query(notebook: str | None, *, kernel_id: str | None) -> dict[str, str]:
    """The status request's query: an explicit ``notebook`` path wins over the kernel id."""
    if notebook:
        return {"path": notebook}
    if kernel_id:
        return {"kernel": kernel_id}
    return {}


def _kale(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    kale = status.get("kale")
    if not isinstance(kale, Mapping) or kale.get("kaleMetadata") is not True:
        return None  # no notebook, or one without Kale metadata: nothing to show
    return kale


def _volumes(kale: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    volumes = kale.get("volumes")
    return [v for v in volumes if isinstance(v, Mapping)] if isinstance(volumes, list) else []


def kale_recreatable(status: Mapping[str, Any]) -> list[str]:
    """Claims of this notebook the panel offers to recreate on the RWX class.

    Either the Kale verdict says so (the notebook identity could read the classes), or the
    service's own row for the claim does (it reads StorageClasses the notebook may not); in
    both cases only an unbound claim, only when the caller may repair and not in the read-only
    local view (the same rule as :func:`~vsphere_kale.jupyter.widget.recreatable_claims`).
    """
    by_service = set(recreatable_claims(status))
    names: list[str] = []
    for volume, claim in _repair_candidates(status):
        name = str(volume.get("name") or "")
        if volume.get("recreateRefusal"):
            continue  # the service would refuse (bound, opted out, in use): no button
        unbound = claim.get("phase") != "Bound"
        offered = name in by_service or (volume.get("verdict") in RECREATABLE and unbound)
        if offered and name not in names:
            names.append(name)
    return names


def kale_refusals(status: Mapping[str, Any]) -> dict[str, str]:
    """Volume -> why its claim has no Recreate button although it cannot bind (by the Kale
    verdict or the service's): the status row's ``recreateRefusal``, the same sentence the
    namespace table shows."""
    service = {str(p.get("name")): p.get("verdict") for p in pvc_rows(status)}
    return {
        str(volume.get("name")): str(volume["recreateRefusal"])
        for volume, _claim in _repair_candidates(status)
        if volume.get("recreateRefusal")
        and (
            volume.get("verdict") in RECREATABLE
            or service.get(str(volume.get("name"))) in RECREATABLE
        )
    }


def _repair_candidates(
    status: Mapping[str, Any],
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(volume, claim) of the notebook's claims, for a caller who may repair, from the service."""
    kale = _kale(status)
    if kale is None or not status.get("canReconcile") or status.get("source") == "local":
        return []
    found = []
    for volume in _volumes(kale):
        claim = volume.get("claim")
        if volume.get("name") and volume.get("type") == "pvc" and isinstance(claim, Mapping):
            found.append((volume, claim))
    return found


def count_unfit(kale: Mapping[str, Any]) -> int:
    """Volumes the steps cannot share (the red rows)."""
    return sum(1 for v in _volumes(kale) if v.get("fit") is False)


def _claim_words(claim: object) -> str:
    if not isinstance(claim, Mapping):
        return "no claim"
    modes = ", ".join(str(m) for m in claim.get("accessModes") or []) or "no access mode"
    klass = claim.get("storageClass")
    klass_words = {None: "(default class)", "": '"" (no class)'}.get(klass, str(klass))
    return f"{modes} · {klass_words} · {claim.get('phase') or '?'}"


# Kale verdicts that only say "not bound, reason unknown": the service, which may read the
# StorageClasses a notebook identity may not, usually knows why.
_VAGUE = frozenset({"pending", "unknown"})


def _service_view(
    volume: Mapping[str, Any], pvc: Mapping[str, Any] | None
) -> tuple[str, str, str, str]:
    """(verdict, pill HTML, message, hint) to show: the service's own row for the claim when
    the notebook's verdict is vague and the service's is not (same pill as its table row)."""
    verdict = str(volume.get("verdict") or "unknown")
    severity = str(volume.get("severity"))
    colour = MUTED if verdict == "unknown" else _SEVERITY_COLOURS.get(severity, MUTED)
    message = str(volume.get("message") or "")
    hint = str(volume.get("hint") or "")
    service = str((pvc or {}).get("verdict") or "")
    if pvc is None or verdict not in _VAGUE or service in ("", "ok", *_VAGUE):
        return verdict, pill(verdict, colour, title=message), message, hint
    return (
        service,
        verdict_pill(pvc),
        f"{message}; the vsphere-kale service says {service}: {pvc.get('message')}",
        str(pvc.get("hint") or hint),
    )


def _row(
    volume: Mapping[str, Any],
    *,
    recreatable: bool,
    target: str,
    pvc: Mapping[str, Any] | None = None,
    refusal: str | None = None,
) -> str:
    """One block per volume, like the namespace's claims: name, verdict and mount point; what
    the claim is; why and the fix when the steps cannot share it."""
    volume_name = str(volume.get("name") or "(no name)")
    kind = str(volume.get("type") or "?")
    mount = str(volume.get("mountPoint") or "-")
    verdict, badge, message, hint = _service_view(volume, pvc)
    known = [volume_name, target]
    head = [f"<b>{name(volume_name)}</b>", badge]
    head.append(f'<span style="{_NAME};color:{MUTED}">at</span>{name(mount, code=True)}')
    if kind != "pvc":
        head.append(f'<span style="{_NAME};color:{MUTED}">type {e(kind)}</span>')
    lines = [
        f'<div style="{_LINE}">{"".join(head)}</div>',
        f'<div style="color:{MUTED}">{prose(_claim_words(volume.get("claim")), known)}</div>',
    ]
    problem = volume.get("fit") is False or volume.get("severity") in ("warning", "error")
    if problem:
        if message:
            lines.append(f"<div>{prose(message, known)}</div>")
        if hint:
            lines.append(f'<div class="vsk-kale-hint"><i>Fix:</i> {prose(hint, known)}</div>')
        if recreatable:
            lines.append(
                f"<div><i>Or:</i> <b>Recreate on {name(target)}</b> below "
                "(it holds no data yet).</div>"
            )
        elif refusal:
            lines.append(render_refusal(refusal, names=known))
    return (
        f'<div class="vsk-kale-row" data-volume="{e(volume_name)}" data-verdict="{e(verdict)}" '
        f'style="padding:4px 0;border-top:1px solid #e0e0e0">{"".join(lines)}</div>'
    )


def render_kale_section(
    status: Mapping[str, Any], *, recreatable: Sequence[str] = (), target: str = "the RWX class"
) -> str:
    """The Kale section's HTML; empty when the notebook has no Kale metadata."""
    kale = _kale(status)
    if kale is None:
        return ""
    fit = kale.get("fit")
    words, colour = _FIT_PILLS.get(fit if isinstance(fit, bool) else None, _FIT_PILLS[None])
    notebook = str(kale.get("notebook") or "this notebook")
    pipeline = kale.get("pipelineName")
    volumes = _volumes(kale)
    unfit = count_unfit(kale)
    if fit is None:
        summary = ""
    elif not volumes:
        summary = "The pipeline's steps mount no volume."
    elif unfit:
        summary = (
            f"{unfit} of {len(volumes)} volumes cannot be shared by the pipeline's steps "
            "(Kale mounts each on every step)."
        )
    else:
        summary = "Every volume can be shared by the pipeline's steps."
    head = (
        f'<div style="{_LINE}"><b style="{_NAME}">Kale volumes</b>'
        f'<span style="{_NAME}">of</span>{name(notebook, code=True)}'
        + (f'<span style="{_NAME}">pipeline</span><b>{name(pipeline)}</b>' if pipeline else "")
        + f"{pill(words, colour)}</div>"
        + (f"<div>{e(summary)}</div>" if summary else "")
    )
    parts = [head]
    if kale.get("error"):
        parts.append(f'<div class="vsk-kale-error" style="color:{BAD}">⚠ {e(kale["error"])}</div>')
    readable = kale.get("storageReadable")
    if isinstance(readable, Mapping) and readable.get("classes") is False and volumes:
        parts.append(
            f'<div class="vsk-note" style="color:{MUTED}">StorageClasses could not be read '
            "with this notebook's permissions: verdicts that need them say so.</div>"
        )
    if volumes:
        offered = set(recreatable)
        refused = kale_refusals(status)
        pvcs = status.get("pvcs")
        by_name = {
            str(p.get("name")): p for p in (pvcs if isinstance(pvcs, list) else [])
            if isinstance(p, Mapping)
        }  # fmt: skip
        rows = "".join(
            _row(
                v,
                recreatable=str(v.get("name") or "") in offered,
                target=target,
                pvc=by_name.get(str(v.get("name") or "")) if v.get("type") == "pvc" else None,
                refusal=refused.get(str(v.get("name") or "")),
            )
            for v in volumes
        )
        parts.append(f'<div class="vsk-kale-volumes">{rows}</div>')
    return (
        f'<div class="vsk-kale" data-fit="{e(str(fit).lower())}" style="{_BLOCK}">'
        f"{''.join(parts)}</div>"
    )


class KaleSection(widgets.VBox):  # type: ignore[misc]
    """The Kale rows and, below them, the Recreate buttons for this notebook's claims."""

    def __init__(self) -> None:
        self.html = widgets.HTML(value="")
        self.actions = widgets.VBox([])
        self.html.add_class("vsk-kale-widget")
        self.actions.add_class("vsk-kale-actions")
        super().__init__([self.html, self.actions])
        self.add_class("vsk-kale-section")

    def show(
        self,
        status: Mapping[str, Any],
        *,
        recreate_row: Callable[[str], widgets.Widget],
        target: str,
    ) -> list[str]:
        """Redraw for ``status``; returns the claims it offers to recreate (so the panel does
        not offer them twice)."""
        names = kale_recreatable(status)
        self.html.value = render_kale_section(status, recreatable=names, target=target)
        self.actions.children = tuple(recreate_row(name) for name in names)
        self.layout.display = None if _kale(status) is not None else "none"
        return names
