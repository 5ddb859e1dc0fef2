"""The panel's Kale section, pure: sections built by the real verdicts from Kale 2's shapes.

The status documents are what the extension returns: the namespace status plus the ``kale``
section that :func:`vsphere_kale.jupyter.kale_status.build_status_section` makes from a
notebook and claims (``../shared/KALE.md``: ``metadata.kubeflow_notebook.volumes``).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

import pytest

from vsphere_kale.health.kale_status import KaleInputs
from vsphere_kale.jupyter.kale_status import build_status_section
from vsphere_kale.jupyter.widget import HealthPanel, render_pvc_table
from vsphere_kale.jupyter.widget_kale import (
    decide_kernel_id,
    decide_status_query,
    kale_recreatable,
    render_kale_section,
)
from vsphere_kale.jupyter.widget_render import BAD as _BAD
from vsphere_kale.jupyter.widget_render import GOOD as _GOOD
from vsphere_kale.jupyter.widget_render import WARN as _WARN
from vsphere_kale.policy.health import PodSecurityFacts, build_namespace_status
from vsphere_kale.policy.kale import parse_notebook
from vsphere_kale.settings import StorageSettings

BLOCK = "vsan-default-storage-policy"
NFS = "cluster.local/nfs-subdir-external-provisioner"
CLASSES = [
    {"metadata": {"name": BLOCK}, "provisioner": "csi.vsphere.vmware.com"},
    {"metadata": {"name": "nfs-client"}, "provisioner": NFS},
]


def claim(name: str, modes: list[str], klass: str, phase: str) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if phase == "Bound":
        status["accessModes"] = modes
    return {
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"accessModes": modes, "storageClassName": klass,
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": status,
    }  # fmt: skip


def kale_notebook(*volumes: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "cells": [],
        "metadata": {
            "kubeflow_notebook": {
                "pipeline_name": "mount-pvc-test",
                "volumes": [{"name": n, "type": t, "mount_point": m} for n, t, m in volumes],
            }
        },
    }


RAW_DATA = claim("raw-data", ["ReadWriteOnce"], BLOCK, "Bound")
STUCK = claim("features", ["ReadWriteMany"], BLOCK, "Pending")
NOTEBOOK = kale_notebook(
    ("raw-data", "pvc", "/data"), ("features", "pvc", "/features"), ("tmp", "new_pvc", "/tmp/x")
)


def section(
    doc: dict[str, Any],
    claims: list[dict[str, Any]],
    classes: list[dict[str, Any]] | None = CLASSES,
    pods: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    try:
        parsed = parse_notebook(doc)
    except ValueError:
        parsed = None
    inputs = KaleInputs(
        tuple(claims), None if classes is None else tuple(classes), (), notebook=parsed
    )
    return build_status_section(
        doc,
        inputs,
        path="pipelines/train.ipynb",
        namespace="alice",
        storage=STORAGE,
        pvc_rows=service_rows(claims, pods=pods),
    )


STORAGE = StorageSettings(rwx_storage_class="nfs-client")


def service_rows(
    claims: list[dict[str, Any]], *, pods: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The namespace status's ``pvcs`` as the service computes them (it reads the classes)."""
    doc = build_namespace_status(
        "alice",
        pvcs=claims,
        events=[],
        storage_classes=CLASSES,
        webhook_configuration=None,
        pod_security=PodSecurityFacts("off"),
        storage=STORAGE,
        can_reconcile=True,
        source="admin-api",
        now=dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc),
        pods=pods,
    ).to_json()
    rows: list[dict[str, Any]] = doc["pvcs"]
    return rows


def status(kale: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "NamespaceStatus",
        "namespace": "alice",
        "source": "admin-api",
        "overall": "broken",
        "canReconcile": True,
        "pvcs": [],
        "podSecurity": {"mode": "psa", "verdict": "ok"},
        "webhook": {"rwxStorageClass": "nfs-client", "verdict": "ok"},
        "kale": kale,
    }
    return doc | overrides


def text(html: str) -> str:
    """What a reader sees: the HTML without its tags."""
    return re.sub(r"<[^>]+>", "", html)


def row(html: str, volume: str) -> str:
    """The HTML of one volume's block (up to the next volume's)."""
    match = re.search(
        rf'<div class="vsk-kale-row" data-volume="{re.escape(volume)}"'
        r'.*?(?=<div class="vsk-kale-row"|$)',
        html,
        re.S,
    )
    assert match, html
    return match.group(0)


@pytest.mark.parametrize(
    ("connection_file", "kernel_id"),
    [
        ("/root/.local/share/jupyter/runtime/kernel-3f1c2b1a-0d4e-4c55-9a0b-2b1a3f1c0d4e.json",
         "3f1c2b1a-0d4e-4c55-9a0b-2b1a3f1c0d4e"),
        ("kernel-abc.json", "abc"),
        ("/tmp/kernel.json", None),  # started by hand with its own connection file
        ("/tmp/kernel-.json", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_kernel_id_comes_from_the_connection_file_name(
    connection_file: str | None, kernel_id: str | None
) -> None:
    assert decide_kernel_id(connection_file) == kernel_id


def test_status_query_names_the_notebook_or_this_kernel() -> None:
    assert decide_status_query("a/b.ipynb", kernel_id="k1") == {"path": "a/b.ipynb"}
    assert decide_status_query(None, kernel_id="k1") == {"kernel": "k1"}
    assert decide_status_query(None, kernel_id=None) == {}


def test_rwo_claim_is_flagged_with_the_copy_hint_and_no_button() -> None:
    doc = status(section(NOTEBOOK, [RAW_DATA, STUCK]))
    html = render_kale_section(doc, recreatable=kale_recreatable(doc), target="nfs-client")
    assert 'data-fit="false"' in html and "pipelines/train.ipynb" in html
    assert "1 of 3" not in html and "2 of 3 volumes cannot be shared" in html
    raw = row(html, "raw-data")
    assert 'data-verdict="rwo"' in raw and f"background:{_BAD}" in raw
    assert "/data" in text(raw) and "ReadWriteOnce · vsan-default-storage-policy · Bound" in raw
    assert "Multi-Attach" in raw
    assert "make an RWX copy on nfs-client and point the notebook at it" in text(raw)
    assert "Recreate" not in raw  # Bound with data: no one-click fix
    assert kale_recreatable(doc) == ["features"]
    stuck = row(html, "features")
    assert 'data-verdict="rwx-on-block-class"' in stuck
    assert "Recreate on nfs-client below" in text(stuck)
    dropped = row(html, "tmp")
    assert 'data-verdict="dropped"' in dropped and f"background:{_WARN}" in dropped
    assert "type new_pvc" in dropped and "no claim" in dropped


def test_badges_use_the_panels_colours() -> None:
    ok = claim("raw-data", ["ReadWriteMany"], "nfs-client", "Bound")
    doc = status(section(kale_notebook(("raw-data", "pvc", "/data")), [ok]))
    html = render_kale_section(doc)
    assert 'data-fit="true"' in html and "Every volume can be shared" in html
    assert f"background:{_GOOD}" in row(html, "raw-data")
    assert "Fix:" not in html  # nothing to fix, nothing said
    # the same red as the namespace table's broken claims
    assert f"background:{_BAD}" in render_pvc_table([{"name": "x", "verdict": "lost"}])


def test_names_never_wrap_and_show_whole_in_a_tooltip() -> None:
    long = "raw-data-" + "x" * 80
    doc = status(section(kale_notebook((long, "pvc", "/data")), []))
    cells = row(render_kale_section(doc), long)
    # the volume's name and its mount point: each one piece, cut with an ellipsis if needed
    assert cells.count("overflow:hidden;text-overflow:ellipsis;white-space:nowrap") == 2
    assert f'title="{long}"' in cells and f">{long}</span>" in cells
    assert 'data-verdict="missing"' in cells


def test_recreate_is_offered_from_the_services_verdict_when_the_notebook_cannot_read_classes() -> (
    None
):
    # The notebook identity cannot list StorageClasses, so its own verdict is vaguer...
    kale = section(NOTEBOOK, [RAW_DATA, STUCK], classes=None)
    (features,) = [v for v in kale["volumes"] if v["name"] == "features"]
    assert features["verdict"] != "rwx-on-block-class"
    # ...but the service's row for the claim says it can never bind where it is.
    pvc_row = {"name": "features", "phase": "Pending", "verdict": "rwx-on-block-class"}
    doc = status(kale, pvcs=[pvc_row])
    assert kale_recreatable(doc) == ["features"]
    html = render_kale_section(doc, recreatable=["features"], target="nfs-client")
    assert "StorageClasses could not be read" in html
    # and the row says what the service knows, with the service's fix
    pvc_row |= {"message": "It asks ReadWriteMany on a block class.", "hint": "Recreate it."}
    html = render_kale_section(status(kale, pvcs=[pvc_row]), recreatable=["features"])
    assert "the vsphere-kale service says rwx-on-block-class: It asks" in row(html, "features")
    assert "<i>Fix:</i> Recreate it." in row(html, "features")
    # with the service's pill, as in its table row
    assert 'data-verdict="rwx-on-block-class"' in row(html, "features")
    assert f"background:{_BAD}" in row(html, "features")
    # never in the read-only local view, nor for a caller who may not repair
    assert kale_recreatable(status(kale, pvcs=[pvc_row], source="local")) == []
    assert kale_recreatable(status(kale, pvcs=[pvc_row], canReconcile=False)) == []


def test_no_button_where_the_service_would_refuse_the_recreation() -> None:
    # Given the claim opts out of the rewrite: it cannot bind, and the service refuses it
    opted_out = copy.deepcopy(STUCK)
    opted_out["metadata"]["annotations"] = {"vsphere-kale.io/rewrite-storage-class": "false"}
    rows = service_rows([RAW_DATA, opted_out])
    kale = section(NOTEBOOK, [RAW_DATA, opted_out])
    refusals = {v["name"]: v["recreateRefusal"] for v in kale["volumes"] if v["claim"]}
    # Then each volume with a claim carries its status row's refusal: one rule, decided once
    assert refusals == {r["name"]: r["recreateRefusal"] for r in rows}
    assert "opts out of class rewriting" in refusals["features"]
    assert "is Bound to a volume: recreating it would lose" in refusals["raw-data"]
    doc = status(kale, pvcs=rows)
    assert kale_recreatable(doc) == []
    # and the row says why, in the same words as the namespace table
    html = render_kale_section(doc, recreatable=kale_recreatable(doc), target="nfs-client")
    features = text(row(html, "features"))
    assert "Recreate is not offered: claim alice/features opts out of class rewriting" in features
    assert "Recreate on nfs-client below" not in features
    # raw-data is Bound ReadWriteOnce: its fix is the RWX copy, there is no button to explain
    assert "Recreate is not offered" not in row(html, "raw-data")
    # A pod still mounting the claim is a refusal too (the service lists the pods)
    step = {
        "metadata": {"name": "step-1", "namespace": "alice"},
        "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "features"}}]},
        "status": {"phase": "Running"},
    }
    busy = section(NOTEBOOK, [RAW_DATA, STUCK], pods=[step])
    busy_doc = status(busy, pvcs=service_rows([RAW_DATA, STUCK], pods=[step]))
    assert kale_recreatable(busy_doc) == []
    assert "mounted by pod step-1" in text(row(render_kale_section(busy_doc), "features"))
    # The same claim without the opt-out is offered
    kale = section(NOTEBOOK, [RAW_DATA, STUCK])
    assert {v["name"]: v.get("recreateRefusal") for v in kale["volumes"]}["features"] is None
    assert kale_recreatable(status(kale, pvcs=service_rows([RAW_DATA, STUCK]))) == ["features"]


def test_a_claim_the_status_does_not_list_is_not_offered() -> None:
    kale = build_status_section(
        NOTEBOOK,
        KaleInputs((RAW_DATA, STUCK), tuple(CLASSES), (), notebook=parse_notebook(NOTEBOOK)),
        path="t.ipynb",
        namespace="alice",
        storage=STORAGE,
        pvc_rows=[],
    )
    (features,) = [v for v in kale["volumes"] if v["name"] == "features"]
    assert "does not list claim features" in features["recreateRefusal"]
    assert kale_recreatable(status(kale)) == []


def test_notebook_without_kale_metadata_shows_nothing() -> None:
    plain = {"nbformat": 4, "cells": [], "metadata": {}}
    kale = section(plain, [])
    assert kale["kaleMetadata"] is False and kale["fit"] is None
    assert render_kale_section(status(kale)) == ""
    assert render_kale_section(status({"notebook": None, "kaleMetadata": False})) == ""
    assert render_kale_section({"kind": "NamespaceStatus"}) == ""


def test_an_unreadable_cluster_is_a_sentence_in_the_section() -> None:
    inputs = KaleInputs((), None, None, parse_notebook(NOTEBOOK), error="Cannot check: no.")
    kale = build_status_section(
        NOTEBOOK, inputs, path="t.ipynb", namespace="alice", storage=StorageSettings(), pvc_rows=[]
    )
    html = render_kale_section(status(kale))
    assert 'data-fit="none"' in html and "unknown" in html
    assert 'class="vsk-kale-error"' in html and "Cannot check: no." in html


class FixedClient:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls: list[str] = []

    def fetch_status(self) -> dict[str, Any]:
        self.calls.append("status")
        return copy.deepcopy(self.document)

    def recreate_pvc(self, name: str) -> dict[str, Any]:
        self.calls.append(f"recreate {name}")
        return {"name": name, "outcome": "recreated", "message": "Now on nfs-client."}

    def reconcile(self) -> dict[str, Any]:
        raise AssertionError("not used")


def test_panel_shows_the_section_and_offers_recreate_once() -> None:
    pvc_row = {"name": "features", "phase": "Pending", "verdict": "rwx-on-block-class"}
    client = FixedClient(status(section(NOTEBOOK, [RAW_DATA, STUCK]), pvcs=[pvc_row]))
    panel = HealthPanel(client)
    assert panel.kale.layout.display is None
    assert 'data-volume="raw-data"' in panel.kale.html.value
    # The stuck claim's button sits under the Kale rows, not a second time under the table.
    assert panel.recreate_box.children == ()
    (action,) = panel.kale.actions.children
    ask = action.children[-1]
    assert ask.description == "Recreate on nfs-client"
    ask.click()
    action.children[-2].click()  # "Yes, recreate it"
    assert client.calls == ["status", "recreate features", "status"]


def test_panel_hides_the_section_outside_a_kale_notebook() -> None:
    panel = HealthPanel(FixedClient(status(section({"nbformat": 4, "cells": []}, []))))
    assert panel.kale.layout.display == "none" and panel.kale.actions.children == ()
