"""The newcomer's tour in a real browser, in both flavors: ``vsphere-kale sandbox``,
JupyterLab, the health notebook, one click to repair the stuck claim, a green panel.

Given the playground (kubeflow-demo: alice's Kale marshal volume stuck on the vSphere CSI
block class, asking for ReadWriteMany) with serve and JupyterLab started by the CLI, when the
notebook's cell runs in Chromium, then the panel flags the claim with a "Recreate on
nfs-client" button; when alice clicks it and confirms, the claim is Bound on nfs-client (read
back through the API) and after Refresh the panel is healthy. At every step the panel is
photographed at 850 px and 1280 px (tests/e2e/artifacts/, git-ignored) and checked for what a
reader relies on there: names on one line, a problem count equal to the problem badges.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from playwright.sync_api import Page, expect

# A hang guard, not a bound on anything measured: one test includes the start of its
# flavor's playground and JupyterLab's first load on 2 shared cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WIDTHS = (850, 1280)
RED, ORANGE, GREEN, GREY = (
    "rgb(198, 40, 40)",
    "rgb(178, 106, 0)",
    "rgb(30, 126, 52)",
    "rgb(97, 97, 97)",
)
MARSHAL = "wf-1-kale-marshal-pvc"

# The lines the text of an element occupies on screen: 1 unless it wraps. Text nodes only
# (a button's icon sits a few pixels off the text's line box), tops within 3 px are one line.
_LINES_OF_TEXT = """el => {
  const tops = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const rect of range.getClientRects()) {
      if (rect.width > 0 && !tops.some(t => Math.abs(t - rect.top) < 3)) tops.push(rect.top);
    }
  }
  return tops.length;
}"""
_IS_CUT = "el => el.scrollWidth > el.clientWidth + 1"


def check_panel_reads_well(page: Page, where: str) -> None:
    """What a reader relies on, at the current width."""
    panel = page.locator(".vsk-health-panel")
    # Names and classes never wrap mid-word; when cut short, the tooltip holds the whole value.
    names = panel.locator(".vsk-name")
    assert names.count() > 0, where
    for i in range(names.count()):
        name = names.nth(i)
        text = name.inner_text()
        assert name.evaluate(_LINES_OF_TEXT) == 1, f"{where}: {text!r} wraps"
        if name.evaluate(_IS_CUT):
            assert name.get_attribute("title") == text.strip(), f"{where}: {text!r} cut, no tooltip"
    for label in panel.locator("button").all():
        assert label.evaluate(_LINES_OF_TEXT) <= 1, f"{where}: button {label.inner_text()!r} wraps"
    # The count in the header is the number of problem badges below it.
    count = panel.locator(".vsk-count").inner_text()
    match = re.match(r"(\d+) problems?$", count.strip())
    assert match, f"{where}: count reads {count!r}"
    badges = panel.locator("[data-problem='true']").count()
    assert int(match.group(1)) == badges, f"{where}: says {count!r}, shows {badges} problem badges"
    # One colour per meaning: problems red or orange, fine ones green or grey, never mixed.
    for pill in panel.locator(".vsk-verdict").all():
        colour = pill.evaluate("el => getComputedStyle(el).backgroundColor")
        verdict = pill.get_attribute("data-verdict")
        if pill.get_attribute("data-problem") == "true":
            assert colour in (RED, ORANGE), f"{where}: problem {verdict} is {colour}"
        else:
            assert colour in (GREEN, GREY), f"{where}: {verdict} is {colour}"
    # Nothing is pushed off the right edge of the output area.
    assert not panel.evaluate(_IS_CUT), f"{where}: the panel is wider than the output area"


def capture(page: Page, artifacts: Path, flavor: str, step: str) -> None:
    """The page and the panel at each width, then the checks (photos first: a failing check
    leaves the picture that shows why)."""
    panel = page.locator(".vsk-health-panel")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        # A resize lays out on the next frame: wait for two, rather than for a clock.
        page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        stem = f"{flavor}-{step}-{width}"
        panel.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / f"{stem}-page.png"))
        panel.screenshot(path=str(artifacts / f"{stem}-panel.png"))
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        check_panel_reads_well(page, f"{flavor} {step} at {width} px")


def wait_until_bound(kubeconfig: Path, namespace: str, name: str) -> Any:
    """The claim as the API has it once Bound: a watch, not a polling loop."""
    api = config.new_client_from_config(str(kubeconfig), context="admin@sandbox")
    core = client.CoreV1Api(api)
    try:
        claim = core.read_namespaced_persistent_volume_claim(name, namespace)
        stream = watch.Watch().stream(
            core.list_namespaced_persistent_volume_claim,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=claim.metadata.resource_version,
        )
        while (claim.status.phase or "") != "Bound":
            claim = next(stream)["object"]
        return claim
    finally:
        api.close()


def open_notebook_and_run_the_panel(page: Page, lab_url: str) -> None:
    page.goto(lab_url)
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
    expect(cell).to_be_visible()
    # A cell run before the kernel is connected is dropped: wait for "Idle".
    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle")).to_be_visible()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def test_the_tour_ends_with_a_healthy_panel(playground: Any, page: Page, artifacts: Path) -> None:
    flavor = playground.flavor
    panel = page.locator(".vsk-health-panel")
    try:
        # Given JupyterLab on the health notebook, when alice runs its cell
        open_notebook_and_run_the_panel(page, playground.lab_url)

        # Then the stuck marshal claim is flagged: on the block class, asking for RWX
        row = panel.locator(f".vsk-pvc-row[data-pvc='{MARSHAL}']")
        expect(row.locator(".vsk-verdict")).to_have_attribute("data-verdict", "rwx-on-block-class")
        expect(row).to_contain_text("Kale marshal volume")
        expect(panel.locator(".vsk-badge")).to_contain_text("BROKEN")
        expect(panel.locator(".vsk-podsecurity")).to_have_attribute("data-verdict", "ok")
        if flavor == "psa":
            expect(panel.locator(".vsk-podsecurity")).to_contain_text("Pod Security Admission")
        else:
            expect(panel.locator(".vsk-podsecurity")).to_contain_text(
                "psp:vmware-system-privileged"
            )
        # and the big button is the one that fixes it; Reconcile is not (pod security is ok)
        recreate = panel.locator("button.vsk-recreate")
        expect(recreate).to_have_text("Recreate on nfs-client")
        expect(recreate).to_have_class(re.compile(r"\bmod-primary\b"))
        expect(panel.locator("button.vsk-reconcile")).not_to_have_class(
            re.compile(r"\bmod-warning\b")
        )
        capture(page, artifacts, flavor, "1-flagged")

        # When alice clicks Recreate, she is asked first: deleting a claim is not undone
        recreate.click()
        confirm = panel.locator("button.vsk-recreate-confirm")
        expect(confirm).to_be_visible()
        expect(panel.locator(".vsk-recreate-row")).to_contain_text("empty")
        capture(page, artifacts, flavor, "2-confirm")

        # When she confirms, then the claim is recreated and Bound on nfs-client
        confirm.click()
        expect(panel.locator(".vsk-recreate-result")).to_contain_text(
            f"Recreated {MARSHAL} on nfs-client"
        )
        claim = wait_until_bound(playground.kubeconfig, "alice", MARSHAL)
        assert claim.spec.storage_class_name == "nfs-client"
        assert claim.spec.access_modes == ["ReadWriteMany"]
        annotations = claim.metadata.annotations or {}
        assert annotations.get("vsphere-kale.io/original-storage-class")
        capture(page, artifacts, flavor, "3-recreated")

        # When she clicks Refresh, then the panel is green with no problem left
        panel.locator("button.vsk-refresh").click()
        expect(panel.locator(".vsk-badge")).to_have_attribute("data-overall", "healthy")
        expect(panel.locator(".vsk-count")).to_have_text("0 problems")
        expect(row).to_contain_text("nfs-client")
        expect(row).to_contain_text("Bound")
        expect(row.locator("[data-verdict]")).to_have_attribute("data-verdict", "ok")
        expect(panel.locator(".vsk-podsecurity")).to_have_attribute("data-verdict", "ok")
        expect(panel.locator("button.vsk-recreate")).to_have_count(0)
        expect(panel.locator(".vsk-error")).to_have_count(0)
        capture(page, artifacts, flavor, "4-healthy")

        # Reconcile still answers (it has nothing to repair) and leaves the panel green
        panel.locator("button.vsk-reconcile").click()
        result = panel.locator(".vsk-result [data-outcome]")
        expect(result).to_contain_text("alice")
        expect(result).not_to_have_attribute("data-outcome", re.compile("conflict|failed"))
        expect(panel.locator(".vsk-badge")).to_have_attribute("data-overall", "healthy")
        capture(page, artifacts, flavor, "5-reconciled")
    finally:
        page.screenshot(path=str(artifacts / f"{flavor}-last-page.png"))
