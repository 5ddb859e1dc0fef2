"""A Kale 2 user's notebook in a real browser: its ReadWriteOnce volume flagged with the fix.

Given ``vsphere-kale sandbox`` (serve, JupyterLab) and, in alice's namespace, the claims a Kale 2
notebook mounts — ``raw-data`` ReadWriteOnce on the vSAN block class (Bound, holds data) and
``features`` ReadWriteMany on the block class, opted out of the webhook (Pending for ever) —
when the notebook (``metadata.kubeflow_notebook.volumes`` as Kale's own ``mount_pvc.ipynb``)
runs the panel cell in Chromium, then the panel's Kale section flags ``raw-data`` with the
RWX-copy hint and no button, and says why ``features`` has no Recreate (it opts out: the
service would refuse); once the opt-out is dropped, it offers "Recreate on nfs-client" for
``features`` only, and the recreation goes through. Screenshots in tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from playwright.sync_api import Browser, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from reconcile_helpers import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 90_000
"""JupyterLab's first load and a kernel start take seconds on a 2-core CI machine."""
expect.set_options(timeout=TIMEOUT_MS)

NOTEBOOK = "kale-train.ipynb"
BLOCK = "vsan-default-storage-policy"
OPT_OUT = "vsphere-kale.io/rewrite-storage-class"


def kale_notebook() -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                           "language": "python"},
            "kubeflow_notebook": {
                "pipeline_name": "mount-pvc-test",
                "base_image": "python:3.12",
                "volumes": [
                    {"name": "raw-data", "type": "pvc", "mount_point": "/data"},
                    {"name": "features", "type": "pvc", "mount_point": "/features"},
                ],
            },
        },
        "cells": [{"cell_type": "code", "id": "panel", "metadata": {}, "execution_count": None,
                   "outputs": [],
                   "source": "from vsphere_kale.jupyter.widget import HealthPanel\n\n"
                             "HealthPanel()"}],
    }  # fmt: skip


def claim(name: str, mode: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"accessModes": [mode], "storageClassName": BLOCK,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip


def test_kale_notebook_panel_flags_the_rwo_volume_with_its_fix(
    sandbox_cli: Any, browser: Browser, artifacts: Path
) -> None:
    # Given alice's claims (the sandbox's admin kubeconfig)
    api = config.new_client_from_config(config_file=str(sandbox_cli.workdir / "kubeconfig"))
    core = client.CoreV1Api(api)
    # raw-data is the kubeflow-demo seed's own: ReadWriteOnce on the block class
    seeded = core.read_namespaced_persistent_volume_claim("raw-data", "alice")
    assert (seeded.spec.access_modes, seeded.spec.storage_class_name) == (["ReadWriteOnce"], BLOCK)
    core.create_namespaced_persistent_volume_claim(
        "alice",
        claim("features", "ReadWriteMany", **{OPT_OUT: "false"}),
    )

    def phase(name: str) -> str:
        return str(core.read_namespaced_persistent_volume_claim(name, "alice").status.phase)

    wait_for("raw-data Bound", lambda: phase("raw-data") == "Bound" or None, timeout=30)
    # features asked for the block class on purpose (opted out): stuck there, and the
    # service refuses to recreate it while it opts out.
    # and the Kale 2 notebook in the Lab's root directory
    (sandbox_cli.workdir / "notebooks" / NOTEBOOK).write_text(json.dumps(kale_notebook()))

    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(
            sandbox_cli.lab_url.replace("/lab/tree/cluster-health.ipynb", f"/lab/tree/{NOTEBOOK}")
        )
        cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
        expect(cell).to_be_visible()
        expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle")).to_be_visible()
        with contextlib.suppress(PlaywrightTimeoutError):
            page.get_by_role("button", name="No", exact=True).click(timeout=15_000)
        # When the panel cell runs
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")

        # Then the Kale section names the notebook and flags raw-data with the copy hint
        section = page.locator(".vsk-kale")
        expect(section).to_be_visible()
        expect(section).to_contain_text(NOTEBOOK)
        expect(section).to_contain_text("not fit")
        raw = page.locator(".vsk-kale-row[data-volume='raw-data']")
        expect(raw).to_have_attribute("data-verdict", "rwo")
        expect(raw).to_contain_text("/data")
        expect(raw).to_contain_text("ReadWriteOnce")
        expect(raw).to_contain_text("make an RWX copy on nfs-client and point the notebook at it")
        # and, while features opts out, offers no Recreate the service would refuse: both its
        # Kale row and its namespace row say why instead
        features = page.locator(".vsk-kale-row[data-volume='features']")
        expect(features).to_contain_text(
            "Recreate is not offered: claim alice/features opts out of class rewriting"
        )
        expect(features).not_to_contain_text("Recreate on nfs-client below")
        expect(page.locator(".vsk-kale-actions .vsk-recreate-row")).to_have_count(0)
        refusal = page.locator(".vsk-pvc-row[data-pvc='features'] .vsk-recreate-refusal")
        expect(refusal).to_contain_text("opts out of class rewriting")
        main_box = page.locator(".vsk-recreate-box .vsk-recreate-row")
        expect(main_box.filter(has_text="features")).to_have_count(0)
        expect(main_box.filter(has_text="wf-1-kale-marshal-pvc")).to_have_count(1)
        page.locator(".vsk-health-panel").screenshot(path=str(artifacts / "kale-refused.png"))

        # When alice drops the opt-out, as the panel's hint says (the claim stays on the
        # block class, as if made before the webhook), and refreshes
        core.patch_namespaced_persistent_volume_claim(
            "features", "alice", {"metadata": {"annotations": {OPT_OUT: None}}}
        )
        page.locator("button.vsk-refresh").click()
        # Then the one-click fix is offered for the unbound RWX claim, once
        expect(features).to_contain_text("Recreate on nfs-client below")
        expect(features).not_to_contain_text("Recreate is not offered")
        # (alice may not read StorageClasses; the service can, and its reason is shown)
        expect(features).to_contain_text("the vsphere-kale service says rwx-on-block-class")
        expect(raw).not_to_contain_text("Recreate")
        actions = page.locator(".vsk-kale-actions .vsk-recreate-row")
        expect(actions).to_have_count(1)
        expect(actions).to_contain_text("features")
        # (the box under the namespace table keeps the seeded marshal claim, not features)
        expect(main_box.filter(has_text="wf-1-kale-marshal-pvc")).to_have_count(1)
        expect(main_box.filter(has_text="features")).to_have_count(0)
        expect(page.locator(".vsk-error")).to_have_count(0)
        page.locator(".vsk-health-panel").screenshot(path=str(artifacts / "kale-panel.png"))

        # When alice recreates features on nfs-client (after the confirmation)
        actions.locator("button.vsk-recreate").click()
        page.locator("button.vsk-recreate-confirm").click()
        # Then the service recreated it on the RWX class
        expect(page.locator(".vsk-recreate-result")).to_contain_text("features")
        moved = wait_for(
            "features on nfs-client",
            lambda: (
                core.read_namespaced_persistent_volume_claim(
                    "features", "alice"
                ).spec.storage_class_name
                == "nfs-client"
                or None
            ),
            timeout=30,
        )
        assert moved
        # and once the NFS provisioner bound it, Refresh shows the volume fit for the steps
        wait_for("features Bound", lambda: phase("features") == "Bound" or None, timeout=30)
        page.locator("button.vsk-refresh").click()
        expect(features).to_have_attribute("data-verdict", "ok")
        expect(page.locator(".vsk-kale-actions .vsk-recreate-row")).to_have_count(0)
        expect(raw).to_have_attribute("data-verdict", "rwo")  # still needs the copy
    finally:
        page.screenshot(path=str(artifacts / "kale-notebook.png"))
        page.close()
        api.close()
