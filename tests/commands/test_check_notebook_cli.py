"""`vsphere-kale check-notebook` against the sandbox API server: each exit code, as users see it.

Claims are created through the real API (the sandbox keeps ``status`` on create, so a claim
can be stored Bound or Pending as a provisioner would have left it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from vsphere_kale.cli import main
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.kube.namespace import default_namespace
from vsphere_kale.sandbox.testing import RunningSandbox

NS = "kubeflow-user"
MOUNT_PVC = Path(__file__).resolve().parents[1] / "fixtures" / "kale" / "mount_pvc.ipynb"
KFP_NAME = "3f1c2b9e-8d7a-4c1e-9b2a-6f5e4d3c2b1a-my-pvc"


def write_notebook(path: Path, *volumes: dict[str, Any], kale: bool = True) -> Path:
    metadata: dict[str, Any] = {}
    if kale:
        metadata["kubeflow_notebook"] = {
            "pipeline_name": "mount-pvc-test",
            "base_image": "python:3.12",
            "volumes": list(volumes),
        }
    path.write_text(
        json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": []})
    )
    return path


def vol(name: str, mount: str = "/data") -> dict[str, str]:
    return {"name": name, "type": "pvc", "mount_point": mount}


def seed(running: RunningSandbox, *objects: tuple[r.Resource, dict[str, Any]]) -> None:
    kube = Kube(running.api_client())
    kube.create(r.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for resource, body in objects:
        kube.create(resource, {"apiVersion": resource.api_version, "kind": resource.kind, **body})


def pvc(name: str, modes: list[str], klass: str, phase: str) -> tuple[r.Resource, dict[str, Any]]:
    spec: dict[str, Any] = {
        "accessModes": modes,
        "storageClassName": klass,
        "resources": {"requests": {"storage": "1Gi"}},
    }
    status: dict[str, Any] = {"phase": phase}
    if phase == "Bound":
        spec["volumeName"] = f"pvc-{name}"
        status["accessModes"] = modes
    return r.PERSISTENT_VOLUME_CLAIM, {
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
        "status": status,
    }


def sc(name: str, provisioner: str) -> tuple[r.Resource, dict[str, Any]]:
    return r.STORAGE_CLASS, {"metadata": {"name": name}, "provisioner": provisioner}


CLASSES = (
    sc("vsan-default-storage-policy", "csi.vsphere.vmware.com"),
    sc("nfs-client", "cluster.local/nfs-subdir-external-provisioner"),
)


def check(
    running: RunningSandbox, notebook: Path, *extra: str, kubeconfig: Path | None = None
) -> Result:
    return CliRunner().invoke(
        main,
        [
            "check-notebook",
            str(notebook),
            "--kubeconfig",
            str(kubeconfig or running.kubeconfig_path),
            "--rwx-storage-class",
            "nfs-client",
            *extra,
        ],
        env={"VSPHERE_KALE_CONFIG": None, "KUBECONFIG": None, "COLUMNS": "200"},
    )


def test_exit_0_when_every_mounted_claim_is_rwx_and_bound(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    seed(sandbox, *CLASSES, pvc("raw-data", ["ReadWriteMany"], "nfs-client", "Bound"))
    dropped = {"name": "scratch", "type": "new_pvc", "mount_point": "/scratch"}
    notebook = write_notebook(tmp_path / "mount_pvc.ipynb", vol("raw-data"), dropped)

    result = check(sandbox, notebook, "-n", NS)

    assert result.exit_code == 0, result.output
    assert "every step can share it" in result.output
    assert "Kale 2 does not mount new_pvc volumes" in result.output
    assert "Every claim Kale mounts can be shared by all steps." in result.output


def test_exit_1_for_an_rwo_claim_with_the_copy_hint(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    seed(
        sandbox,
        *CLASSES,
        pvc("raw-data", ["ReadWriteOnce"], "vsan-default-storage-policy", "Bound"),
    )
    notebook = write_notebook(tmp_path / "nb.ipynb", vol("raw-data"))

    result = check(sandbox, notebook, "-n", NS)

    assert result.exit_code == 1, result.output
    assert "Multi-Attach" in result.output
    assert (
        "  raw-data: make an RWX copy on nfs-client and point the notebook at it" in result.output
    )


def test_exit_1_json_for_missing_kfp_standard_and_static_claims(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    seed(
        sandbox,
        *CLASSES,
        pvc(KFP_NAME, ["ReadWriteMany"], "standard", "Pending"),
        pvc("static", ["ReadWriteMany"], "", "Pending"),
    )
    notebook = write_notebook(
        tmp_path / "nb.ipynb", vol("gone", "/a"), vol(KFP_NAME, "/b"), vol("static", "/c")
    )

    result = check(sandbox, notebook, "-n", NS, "-o", "json")

    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["fit"] is False and doc["namespace"] == NS
    assert [v["verdict"] for v in doc["volumes"]] == ["missing", "class-missing", "static-unbound"]
    assert "KFP v2 writes 'standard'" in doc["volumes"][1]["message"]
    assert "no class: waits for a pre-provisioned PersistentVolume" in doc["volumes"][2]["message"]
    assert doc["storageReadable"] == {"classes": True, "persistentVolumes": True}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "absent.ipynb", "no such file"),
        (lambda p: p, "is a directory"),
        (
            lambda p: (p / "x.ipynb").write_text("{not json") and p / "x.ipynb",
            "not valid JSON (line 1)",
        ),
        (
            lambda p: (p / "x.ipynb").write_text('{"kind": "Pod"}') and p / "x.ipynb",
            "not a Jupyter notebook",
        ),
        (lambda p: write_notebook(p / "plain.ipynb", kale=False), "has no Kale metadata"),
        (
            lambda p: (p / "b.ipynb").write_bytes(b"\xff\xfe\x00") and p / "b.ipynb",
            "not a UTF-8 text file",
        ),
    ],
)
def test_exit_2_on_bad_input_with_one_sentence(
    sandbox: RunningSandbox, tmp_path: Path, make: Callable[[Path], Path], words: str
) -> None:
    result = check(sandbox, make(tmp_path), "-n", NS)

    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_namespace_defaults_to_the_kubeconfig_contexts(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    seed(sandbox, *CLASSES, pvc("raw-data", ["ReadWriteMany"], "nfs-client", "Bound"))
    config = yaml.safe_load(Path(sandbox.kubeconfig_path).read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = NS
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    notebook = write_notebook(tmp_path / "nb.ipynb", vol("raw-data"))

    result = check(sandbox, notebook, "-o", "json", kubeconfig=kubeconfig)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["namespace"] == NS


def test_in_cluster_namespace_file_then_default(tmp_path: Path) -> None:
    no_kubeconfig = str(tmp_path / "none")
    ns_file = tmp_path / "namespace"
    ns_file.write_text("alice\n")
    assert default_namespace(no_kubeconfig, in_cluster_file=ns_file) == "alice"
    assert default_namespace(no_kubeconfig, in_cluster_file=tmp_path / "absent") == "default"


def test_a_user_who_may_not_read_classes_still_gets_verdicts(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    # The seed's alice has the RWO claim raw-data (the Kale 2 notebook's volume).
    running = sandbox_factory(flavor="psa", seed="kubeflow-demo", authorization=True)
    notebook = write_notebook(tmp_path / "nb.ipynb", vol("raw-data"))
    alice = running.kubeconfig_for(running.tokens["alice"], user="alice")

    result = check(running, notebook, "-n", "alice", kubeconfig=alice)

    assert result.exit_code == 1, result.output
    assert "could not read StorageClasses" in result.output
    assert "ReadWriteOnce" in result.output


def test_an_unreachable_cluster_is_a_sentence_not_a_traceback(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(sandbox.kubeconfig_path).read_text())
    config["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    notebook = write_notebook(tmp_path / "nb.ipynb", vol("raw-data"))

    result = check(sandbox, notebook, "-n", NS, kubeconfig=kubeconfig)

    assert result.exit_code == 1
    assert result.stderr.startswith("error: get persistentvolumeclaims")
    assert "Traceback" not in result.output


def test_kales_mount_pvc_notebook_on_an_rwo_block_claim(sandbox: RunningSandbox) -> None:
    # The "done when": a Kale 2 user whose notebook mounts an RWO claim sees it flagged.
    seed(
        sandbox,
        *CLASSES,
        pvc("raw-data", ["ReadWriteOnce"], "vsan-default-storage-policy", "Bound"),
    )

    result = check(sandbox, MOUNT_PVC, "-n", NS, "-o", "json")

    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["pipelineName"] == "mount-pvc-test"
    (volume,) = doc["volumes"]
    assert (volume["name"], volume["mountPoint"], volume["verdict"]) == ("raw-data", "/data", "rwo")
    assert volume["hint"].startswith("make an RWX copy on nfs-client and point the notebook at it")


def test_the_console_script_is_registered() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vsphere_kale.cli", "check-notebook", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Kale 2" in result.stdout
