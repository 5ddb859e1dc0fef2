"""`vsphere-kale review` as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vsphere_kale.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_documented_review_example_rewrites_the_marshal_volume() -> None:
    # The command README.md and docs/webhook.md show, with the output docs/webhook.md shows.
    result = run(
        "review", "-f", str(EXAMPLES / "kale-marshal-pvc.yaml"), "--rwx-storage-class", "nfs-client"
    )
    assert result.returncode == 0, result.stderr
    stored = yaml.safe_load(result.stdout)
    assert stored["spec"]["storageClassName"] == "nfs-client"
    assert stored["metadata"]["annotations"]["vsphere-kale.io/original-storage-class"] == (
        "vsan-default-storage-policy"
    )
    assert result.stderr.strip().splitlines() == [
        "alice/wf-1-kale-marshal-pvc: rewritten vsan-default-storage-policy -> nfs-client",
        "1 object, 1 claim, 1 rewritten",
    ]


def test_every_example_and_a_list_with_other_kinds(tmp_path: Path) -> None:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*pvc*.yaml"))]
    docs += [yaml.safe_load((EXAMPLES / "kale-rwm-volume.yaml").read_text())]
    prebound = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "static", "namespace": "bob"},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeName": "pv-7"},
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "b"},
    }
    lst = {"apiVersion": "v1", "kind": "List", "items": [prebound, config_map]}
    source = tmp_path / "all.yaml"
    source.write_text(yaml.safe_dump_all([*docs, lst]))
    result = run("review", "-f", str(source), "--rwx-storage-class", "nfs-client", "-o", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "List"
    # The List document keeps its wrapper: it comes back as a List holding the same items.
    *claims, kept = out["items"]
    assert kept["kind"] == "List" and kept["apiVersion"] == "v1"
    assert [i["kind"] for i in kept["items"]] == ["PersistentVolumeClaim", "ConfigMap"]
    classes = [i["spec"].get("storageClassName") for i in [*claims, kept["items"][0]]]
    assert classes == ["nfs-client", "nfs-client", "nfs-client", None]
    assert config_map in kept["items"]  # non-claims pass through unchanged
    lines = result.stderr.strip().splitlines()
    # one line for every object, claim or not, then the total
    assert "default/c: ConfigMap, not a claim: unchanged" in lines
    assert lines[-1] == f"{len(claims) + 2} objects, {len(claims) + 1} claims, 3 rewritten"
    assert "default/example-pvc: rewritten (cluster default) -> nfs-client" in lines
    assert "alice/create-volume-1: rewritten vsan-default-storage-policy -> nfs-client" in lines
    assert "bob/static: unchanged (pre-bound to a volume)" in lines


def test_stdin_and_namespace_flag() -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "p"},
        "spec": {"accessModes": ["ReadWriteMany"]},
    }
    result = run(
        "review",
        "-f",
        "-",
        "-n",
        "kube-system",
        "--rwx-storage-class",
        "nfs-client",
        stdin=json.dumps(pvc),
    )
    assert result.returncode == 0
    assert result.stderr.strip().splitlines()[0] == "kube-system/p: unchanged (namespace excluded)"


def test_a_malformed_claim_names_the_field(tmp_path: Path) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "p", "namespace": "alice"},
        "spec": {"accessModes": "ReadWriteMany"},
    }
    result = run("review", "-f", "-", "--rwx-storage-class", "nfs-client", stdin=json.dumps(pvc))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "alice/p: unchanged (malformed claim: spec.accessModes is not a list of strings)"
    )


def test_config_file_is_used(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "storage:\n  rwxStorageClass: nfs-b\n  rwxCapableClasses: [vsan-default-storage-policy]\n"
    )
    result = run("review", "-f", str(EXAMPLES / "kale-marshal-pvc.yaml"), "--config", str(config))
    assert result.returncode == 0
    assert "unchanged (class already supports RWX)" in result.stderr


def test_bad_inputs_exit_2_with_file_and_document(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [\n")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("apiVersion: v1\nkind: ConfigMap\n---\njust a string\n")
    no_kind = tmp_path / "nokind.yaml"
    no_kind.write_text("apiVersion: v1\nmetadata: {name: x}\n")
    config = tmp_path / "c.yaml"
    config.write_text("storage:\n  accessModes: [ReadWriteMany, ReadWriteLots]\n")
    cases = [
        (["-f", str(bad_yaml)], f"{bad_yaml}: not valid YAML or JSON"),
        (["-f", str(scalar)], f"{scalar}: document 1: expected a Kubernetes object"),
        (["-f", str(no_kind)], f"{no_kind}: document 0: missing kind"),
        (["-f", str(tmp_path / "missing.yaml")], "cannot read: No such file or directory"),
        (
            ["-f", str(no_kind), "--config", str(config)],
            "storage.accessModes[1]: 'ReadWriteLots' is not an access mode",
        ),
    ]
    for args, message in cases:
        extra = [] if "--config" in args else ["--rwx-storage-class", "nfs-client"]
        result = run("review", *args, *extra)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_class_says_what_to_do() -> None:
    result = run("review", "-f", str(EXAMPLES / "example-pvc.yaml"))
    assert result.returncode == 2
    assert "pass --rwx-storage-class" in result.stderr


def test_empty_class_is_explained_as_static_binding_and_stays_unrewritten() -> None:
    # KFP v2's CreatePVC default (storage_class_name='') reaches the API as "".
    kfp_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "3f1c2b9e-8d7a-4c1e-9b2a-6f5e4d3c2b1a-my-pvc", "namespace": "bob"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    result = run(
        "review", "-f", "-", "--rwx-storage-class", "nfs-client", stdin=json.dumps(kfp_claim)
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["spec"]["storageClassName"] == ""
    assert result.stderr.strip().splitlines()[0] == (
        "bob/3f1c2b9e-8d7a-4c1e-9b2a-6f5e4d3c2b1a-my-pvc: unchanged "
        "(no class: waits for a pre-provisioned PersistentVolume)"
    )
    assert "pre-bound" not in result.stderr
