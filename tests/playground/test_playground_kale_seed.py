"""kubeflow-demo's Kale 2 and Pod Security picture: the status document and check-notebook flag it.

The seed puts, in alice, an RWO ``raw-data`` claim a Kale 2 notebook mounts on every step,
and a notebook StatefulSet whose pod PodSecurity refused (istio-init's NET_ADMIN/NET_RAW).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from vsphere_kale.cli import main
from vsphere_kale.health.status import collect_status
from vsphere_kale.jupyter.widget import render_pod_security
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.playground.seed_kale import (
    FAILED_CREATE_MESSAGE,
    KALE2_NOTEBOOK,
    build_kale2_notebook,
    write_kale2_notebook,
)
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import PodSecuritySettings, Settings


@pytest.fixture
def demo(sandbox_factory: Callable[..., RunningSandbox]) -> RunningSandbox:
    return sandbox_factory(seed="kubeflow-demo")


def status(running: RunningSandbox, psa_level: str) -> dict:  # type: ignore[type-arg]
    settings = Settings(pod_security=PodSecuritySettings(mode="psa", psa_level=psa_level))
    return collect_status(
        Kube(running.api_client()),
        "alice",
        settings=settings,
        mode=None,
        can_reconcile=True,
        source="admin-api",
    )


def test_the_seed_holds_the_claim_the_statefulset_and_the_servers_event(
    demo: RunningSandbox,
) -> None:
    kube = Kube(demo.api_client())
    claim = kube.get(r.PERSISTENT_VOLUME_CLAIM, "raw-data", namespace="alice")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "vsan-default-storage-policy"
    sts = kube.get(r.STATEFUL_SET, "kale-nb", namespace="alice")
    (init,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    events = kube.list(r.EVENT, namespace="alice", field_selector="reason=FailedCreate")
    (event,) = events["items"]
    assert event["involvedObject"]["kind"] == "StatefulSet"
    assert event["message"] == FAILED_CREATE_MESSAGE
    assert (
        'pods "kale-nb-0" is forbidden: violates PodSecurity "baseline:latest"'
        in (event["message"])
    )


def test_status_shows_the_rejection_the_level_needed_and_why(demo: RunningSandbox) -> None:
    doc = status(demo, "baseline")

    needs = doc["podSecurity"]["needs"]
    assert needs["level"] == "privileged"
    assert needs["configured"] == "baseline"
    assert needs["mismatch"].startswith(
        "notebook pods in alice get istio-init (NET_ADMIN, NET_RAW), which only privileged "
        "admits; psaLevel is baseline"
    )
    assert needs["severity"] == "error"
    (rejection,) = needs["rejections"]
    assert rejection["pod"] == "kale-nb-0"
    assert rejection["source"] == "StatefulSet alice/kale-nb"
    assert rejection["containers"] == ["istio-init"]
    assert needs["istio"]["injected"] and needs["istio"]["istioInit"]
    problem = next(p for p in doc["problems"] if "istio-init" in p["message"])
    assert (problem["component"], problem["severity"]) == ("podSecurity", "error")
    assert problem["message"].startswith("Notebook pods in alice get istio-init")
    assert doc["overall"] == "broken"
    # The panel's pod-security row says it too.
    row = render_pod_security(doc["podSecurity"])
    # a counted "level too low" badge, then the reason in the reader's words
    assert 'data-verdict="level-too-low" data-problem="true"' in row
    text = re.sub(r"<[^>]+>", "", row)
    assert "level too low notebook pods in alice get istio-init (NET_ADMIN, NET_RAW)" in text


def test_status_with_auto_or_privileged_has_no_mismatch(demo: RunningSandbox) -> None:
    for level in ("privileged", "auto"):
        doc = status(demo, level)
        assert doc["podSecurity"]["needs"]["mismatch"] is None, level
        assert doc["podSecurity"]["needs"]["level"] == "privileged"
        assert not any(
            "istio-init" in p["message"] for p in doc["problems"] if p["component"] == "podSecurity"
        )


def test_check_notebook_flags_the_seeds_raw_data_claim(
    demo: RunningSandbox, tmp_path: Path
) -> None:
    notebook = write_kale2_notebook(tmp_path)
    assert notebook.name == KALE2_NOTEBOOK
    assert json.loads(notebook.read_text()) == build_kale2_notebook()

    result = CliRunner().invoke(
        main,
        [
            "check-notebook",
            str(notebook),
            "--kubeconfig",
            str(demo.kubeconfig_path),
            "-n",
            "alice",
            "--rwx-storage-class",
            "nfs-client",
            "-o",
            "json",
        ],
        env={"VSPHERE_KALE_CONFIG": None, "KUBECONFIG": None},
    )

    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    (volume,) = doc["volumes"]
    assert (volume["name"], volume["verdict"], volume["fit"]) == ("raw-data", "rwo", False)
    assert "nfs-client" in volume["hint"]


def test_an_existing_notebook_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / KALE2_NOTEBOOK
    target.write_text("my edits")
    write_kale2_notebook(tmp_path)
    assert target.read_text() == "my edits"
