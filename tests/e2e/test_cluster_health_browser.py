"""The newcomer's path in a real browser: ``vsphere-kale sandbox``, JupyterLab, the notebook.

Given the sandbox (psp flavor, kubeflow-demo: alice's Kale marshal volume stuck on a block
class) with serve and JupyterLab started by the CLI, when the notebook's cell runs in
Chromium, then the panel shows the stuck claim with its fix and the pod-security row, and
Reconcile shows alice's result. A screenshot is kept in tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 90_000
"""JupyterLab's first load and a kernel start take seconds on a 2-core CI machine."""
expect.set_options(timeout=TIMEOUT_MS)


def test_notebook_panel_shows_the_stuck_claim_and_reconciles(
    sandbox_cli: Any, browser: Browser, artifacts: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        # Given JupyterLab opened on the health notebook
        page.goto(sandbox_cli.lab_url)
        cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
        expect(cell).to_be_visible()
        # A cell run before the kernel is connected is dropped: wait for "Idle".
        expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle")).to_be_visible()
        # JupyterLab asks once about its news feed; the toast would cover the panel. Its
        # absence (another JupyterLab version) is no failure of ours.
        with contextlib.suppress(PlaywrightTimeoutError):
            page.get_by_role("button", name="No", exact=True).click(timeout=15_000)
        # When the code cell runs
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")

        # Then the panel renders alice's stuck marshal claim with its fix hint
        row = page.locator(".vsk-pvc-row[data-pvc='wf-1-kale-marshal-pvc']")
        expect(row).to_be_visible()
        expect(row).to_contain_text("rwx-on-block-class")
        expect(row).to_contain_text("nfs-client")
        expect(page.locator(".vsk-badge")).to_contain_text("BROKEN")
        # and the pod-security row (psp flavor: the PSP RoleBinding)
        pod_security = page.locator(".vsk-podsecurity")
        expect(pod_security).to_be_visible()
        expect(pod_security).to_contain_text("psp:vmware-system-privileged")
        expect(page.locator(".vsk-webhook")).to_be_visible()

        # When alice clicks Reconcile (enabled: she owns the profile)
        reconcile = page.locator("button.vsk-reconcile")
        expect(reconcile).to_be_enabled()
        reconcile.click()

        # Then the per-namespace result shows
        result = page.locator(".vsk-result [data-outcome]")
        expect(result).to_be_visible()
        expect(result).to_contain_text("Reconcile alice")
        expect(page.locator(".vsk-error")).to_have_count(0)
        page.locator(".vsk-health-panel").screenshot(path=str(artifacts / "health-panel.png"))
    finally:
        page.screenshot(path=str(artifacts / "cluster-health.png"))
        page.close()
