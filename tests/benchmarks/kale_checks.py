"""What the Kale checks cost: the pure verdicts, and ``check-notebook`` end to end on the sandbox.

Run: ``python tests/benchmarks/kale_checks.py``. Prints microseconds per call for parsing a
recorded kube-apiserver PodSecurity rejection and for building the ``kale`` status section of a
notebook with 10 volumes, and milliseconds for one in-process ``check-notebook`` run against a
sandbox API server (3 claims, the StorageClasses). Not collected by pytest; never a timed assert.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from vsphere_kale.cli import main as cli
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.kale import build_kale_section
from vsphere_kale.policy.podsecurity_evidence import parse_rejection
from vsphere_kale.sandbox.testing import start_sandbox
from vsphere_kale.settings import StorageSettings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_rejections.json"


def per_call_us(fn: Callable[[], object], *, rounds: int) -> float:
    fn()  # warm up
    started = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - started) / rounds * 1e6


def notebook(n: int) -> dict[str, object]:
    volumes = [{"name": f"v{i}", "type": "pvc", "mount_point": f"/m{i}"} for i in range(n)]
    return {"nbformat": 4, "cells": [], "metadata": {"kubeflow_notebook": {"volumes": volumes}}}


def claim(name: str, modes: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"accessModes": modes, "storageClassName": "nfs-client", "volumeName": "pv"},
        "status": {"phase": "Bound", "accessModes": modes},
    }


def main() -> None:
    message = json.loads(FIXTURE.read_text())["cases"]["restricted-istio-init"]["message"]
    us = per_call_us(lambda: parse_rejection(message), rounds=20000)
    print(f"parse_rejection (recorded istio-init): {us:.1f} us")
    claims = [claim(f"v{i}", ["ReadWriteMany" if i % 2 else "ReadWriteOnce"]) for i in range(10)]
    classes = [{"metadata": {"name": "nfs-client"}, "provisioner": "nfs"}]
    settings = StorageSettings(rwx_storage_class="nfs-client")
    doc = notebook(10)
    us = per_call_us(
        lambda: build_kale_section(doc, claims, classes, [], settings, namespace="alice"),
        rounds=5000,
    )
    print(f"build_kale_section (10 volumes): {us:.1f} us")
    with start_sandbox() as running, tempfile.TemporaryDirectory() as tmp:
        kube = Kube(running.api_client())
        kube.create(
            r.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "alice"}}
        )
        for body in claims[:3]:
            kube.create(r.PERSISTENT_VOLUME_CLAIM, body)
        path = Path(tmp) / "nb.ipynb"
        path.write_text(json.dumps(notebook(3)))
        args = [
            "check-notebook",
            str(path),
            "-n",
            "alice",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "-o",
            "json",
        ]
        runner = CliRunner()
        ms = per_call_us(lambda: runner.invoke(cli, args), rounds=30) / 1000
        print(f"check-notebook in-process on the sandbox (3 claims): {ms:.1f} ms")


if __name__ == "__main__":
    main()
