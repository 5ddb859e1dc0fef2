"""Recreating a stuck claim (``apply_recreate`` and ``vsphere-kale recreate-pvc``) against the
sandbox with the playground's storage provisioners, read back with the real client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kubernetes import client

from vsphere_kale.cli import main
from vsphere_kale.errors import KubeNotFound
from vsphere_kale.kube import Kube
from vsphere_kale.playground.seed import BLOCK_CLASS, MARSHAL_PVC, NFS_CLASS, NFS_PROVISIONER
from vsphere_kale.playground.storage import PODS, StorageProvisioners, start_provisioners
from vsphere_kale.reconcile.recreate import RecreateRefused, apply_recreate
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import settings_from_mapping

Factory = Callable[..., RunningSandbox]
SETTINGS = settings_from_mapping({"storage": {"rwxStorageClass": NFS_CLASS}})


@pytest.fixture
def cluster(sandbox_factory: Factory) -> Iterator[tuple[RunningSandbox, StorageProvisioners]]:
    running = sandbox_factory(seed="kubeflow-demo", authorization=True)
    provisioners = start_provisioners(Kube(running.api_client()))
    yield running, provisioners
    provisioners.stop()


def _core(running: RunningSandbox) -> client.CoreV1Api:
    return client.CoreV1Api(running.api_client())


def _claim(name: str, storage_class: str, modes: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {
            "accessModes": modes,
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": storage_class,
            **spec,
        },
    }


def _bound(core: client.CoreV1Api, name: str, *, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        claim = core.read_namespaced_persistent_volume_claim(name, "alice")
        if claim.status.phase == "Bound":
            return claim
        assert time.monotonic() < deadline, f"claim {name} never became Bound"
        time.sleep(0.02)


def test_the_stuck_marshal_claim_is_recreated_and_bound_on_nfs_client(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    core = _core(running)
    before = core.read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    # When the seeded stuck claim is recreated
    result = apply_recreate(Kube(running.api_client()), "alice", MARSHAL_PVC, settings=SETTINGS)
    # Then a new claim of the same name is on nfs-client, the old class recorded
    assert (result.original_class, result.target_class) == (BLOCK_CLASS, NFS_CLASS)
    after = core.read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    assert after.metadata.uid == result.uid != before.metadata.uid
    assert after.spec.storage_class_name == NFS_CLASS
    assert after.spec.access_modes == ["ReadWriteMany"]
    assert after.spec.resources.requests == {"storage": "1Gi"}
    assert after.metadata.annotations["vsphere-kale.io/original-storage-class"] == BLOCK_CLASS
    # (the old provisioner's annotation is gone; nfs-client's may already be there)
    provisioner = after.metadata.annotations.get("volume.kubernetes.io/storage-provisioner")
    assert provisioner in (None, NFS_PROVISIONER)
    # And an Event on the new claim says what happened
    events = core.list_namespaced_event(
        "alice", field_selector=f"involvedObject.name={MARSHAL_PVC},reason=Recreated"
    ).items
    assert [e.involved_object.uid for e in events] == [result.uid]
    assert f"Recreated on storage class {NFS_CLASS} (was {BLOCK_CLASS})" in events[0].message
    # And nfs-client's provisioner binds it
    bound = _bound(core, MARSHAL_PVC)
    assert core.read_persistent_volume(bound.spec.volume_name).spec.nfs is not None


def test_refuses_a_bound_claim(cluster: tuple[RunningSandbox, StorageProvisioners]) -> None:
    running, _ = cluster
    core = _core(running)
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("home", NFS_CLASS, ["ReadWriteMany"])
    )
    uid = _bound(core, "home").metadata.uid
    with pytest.raises(RecreateRefused) as caught:
        apply_recreate(Kube(running.api_client()), "alice", "home", settings=SETTINGS)
    assert caught.value.status == 409
    assert caught.value.refusal.reason == "bound"
    assert "is Bound to pvc-" in str(caught.value)
    assert core.read_namespaced_persistent_volume_claim("home", "alice").metadata.uid == uid


def test_refuses_a_claim_with_a_data_source(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    core = _core(running)
    core.create_namespaced_persistent_volume_claim(
        "alice",
        _claim(
            "restored",
            BLOCK_CLASS,
            ["ReadWriteMany"],
            dataSource={"kind": "PersistentVolumeClaim", "name": MARSHAL_PVC},
        ),
    )
    with pytest.raises(RecreateRefused) as caught:
        apply_recreate(Kube(running.api_client()), "alice", "restored", settings=SETTINGS)
    assert caught.value.refusal.reason == "data-source"
    assert core.read_namespaced_persistent_volume_claim("restored", "alice")


def test_refuses_a_claim_a_running_pod_mounts(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    # Given a running pod that mounts the stuck claim (pods are read-only through the
    # sandbox's API: the pod is put in its store, as a kubelet would report it)
    running.sandbox.store.create_object(
        PODS,
        "alice",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wf-1-step-0", "namespace": "alice"},
            "spec": {
                "containers": [{"name": "main", "image": "python:3.12"}],
                "volumes": [
                    {"name": "marshal", "persistentVolumeClaim": {"claimName": MARSHAL_PVC}}
                ],
            },
            "status": {"phase": "Running"},
        },
    )
    with pytest.raises(RecreateRefused) as caught:
        apply_recreate(Kube(running.api_client()), "alice", MARSHAL_PVC, settings=SETTINGS)
    assert caught.value.refusal.reason == "in-use"
    assert "mounted by pod wf-1-step-0" in str(caught.value)
    claim = _core(running).read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    assert claim.spec.storage_class_name == BLOCK_CLASS


def test_refuses_a_claim_that_is_not_stuck(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    _core(running).create_namespaced_persistent_volume_claim(
        "alice", _claim("scratch", BLOCK_CLASS, ["ReadWriteOnce"])
    )
    with pytest.raises(RecreateRefused) as caught:
        apply_recreate(Kube(running.api_client()), "alice", "scratch", settings=SETTINGS)
    assert caught.value.refusal.reason == "not-stuck"


def test_a_missing_claim_is_not_found(cluster: tuple[RunningSandbox, StorageProvisioners]) -> None:
    running, _ = cluster
    with pytest.raises(KubeNotFound, match='"nope" not found in namespace "alice"'):
        apply_recreate(Kube(running.api_client()), "alice", "nope", settings=SETTINGS)


# --- the CLI ----------------------------------------------------------------------------------


def _cli(running: RunningSandbox, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        main,
        [
            "recreate-pvc",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "--rwx-storage-class",
            NFS_CLASS,
            *args,
        ],
        input=input,
    )


def test_cli_asks_first_and_changes_nothing_on_no(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    result = _cli(running, MARSHAL_PVC, "-n", "alice", input="n\n")
    assert result.exit_code == 1
    assert f"will be deleted and created again on {NFS_CLASS}" in result.output
    claim = _core(running).read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    assert claim.spec.storage_class_name == BLOCK_CLASS


def test_cli_recreates_after_yes(cluster: tuple[RunningSandbox, StorageProvisioners]) -> None:
    running, _ = cluster
    result = _cli(running, MARSHAL_PVC, "-n", "alice", input="y\n")
    assert result.exit_code == 0, result.output
    assert f"recreated on {NFS_CLASS} (was {BLOCK_CLASS})" in result.output
    _bound(_core(running), MARSHAL_PVC)


def test_cli_refusal_is_one_sentence_and_exit_1(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    _core(running).create_namespaced_persistent_volume_claim(
        "alice", _claim("scratch", BLOCK_CLASS, ["ReadWriteOnce"])
    )
    result = _cli(running, "scratch", "-n", "alice", "--yes")
    assert result.exit_code == 1
    assert result.output.startswith("error: claim alice/scratch does not ask for ReadWriteMany")
    assert "Traceback" not in result.output


def test_cli_without_namespace_is_a_usage_error(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    result = _cli(running, MARSHAL_PVC)
    assert result.exit_code == 2
    assert "--namespace" in result.output


# --- the RWX class from the installation ---------------------------------------------------


def _plain_cli(running: RunningSandbox, *args: str, token: str | None = None) -> Result:
    """``recreate-pvc`` with neither --rwx-storage-class nor --config (nor the env var)."""
    kubeconfig = running.kubeconfig_path if token is None else running.kubeconfig_for(token)
    return CliRunner().invoke(
        main,
        ["recreate-pvc", "--kubeconfig", str(kubeconfig), *args],
        env={"VSPHERE_KALE_CONFIG": ""},
    )


def _install(running: RunningSandbox, *args: str) -> None:
    done = CliRunner().invoke(
        main,
        ["install", "--kubeconfig", str(running.kubeconfig_path), *args],
        env={"VSPHERE_KALE_CONFIG": ""},
    )
    assert done.exit_code == 0, done.output


def _one_sentence_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_cli_takes_the_class_from_the_installed_settings(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    # Given vsphere-kale installed with its RWX class
    _install(running, "--rwx-storage-class", NFS_CLASS)
    # When recreate-pvc is run with no class and no settings file
    result = _plain_cli(running, MARSHAL_PVC, "-n", "alice", "--yes")
    # Then the claim lands on the installed class, as the webhook would have put it
    assert result.exit_code == 0, result.output
    assert f"recreated on {NFS_CLASS} (was {BLOCK_CLASS})" in result.output
    _bound(_core(running), MARSHAL_PVC)


def test_cli_without_an_installation_says_to_pass_the_class(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    line = _one_sentence_error(_plain_cli(running, MARSHAL_PVC, "-n", "alice", "--yes"))
    assert "configmap vsphere-kale/vsphere-kale-config not found" in line
    assert "pass --rwx-storage-class CLASS" in line
    # and nothing was touched
    claim = _core(running).read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    assert claim.spec.storage_class_name == BLOCK_CLASS


def test_cli_with_invalid_installed_settings_names_the_configmap(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    _install(running, "--rwx-storage-class", NFS_CLASS)
    # Given an admin's hand edit that broke the installed settings
    _core(running).patch_namespaced_config_map(
        "vsphere-kale-config", "vsphere-kale", {"data": {"config.yaml": "storage: [oops"}}
    )
    line = _one_sentence_error(_plain_cli(running, MARSHAL_PVC, "-n", "alice", "--yes"))
    assert line.startswith("error: configuration: configmap vsphere-kale/vsphere-kale-config:")
    assert "the installed config.yaml is invalid" in line
    assert "pass --rwx-storage-class CLASS" in line


def test_cli_when_the_caller_may_not_read_the_installed_settings(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    _install(running, "--rwx-storage-class", NFS_CLASS)
    # A profile owner may manage claims in alice, not read vsphere-kale's ConfigMap
    result = _plain_cli(running, MARSHAL_PVC, "-n", "alice", "--yes", token=running.tokens["alice"])
    line = _one_sentence_error(result)
    assert "reading the installed settings (configmap vsphere-kale/vsphere-kale-config) is " in line
    assert "forbidden: pass --rwx-storage-class CLASS" in line


def test_cli_with_a_settings_file_without_a_class_says_so(
    cluster: tuple[RunningSandbox, StorageProvisioners], tmp_path: Any
) -> None:
    running, _ = cluster
    config = tmp_path / "config.yaml"
    config.write_text("podSecurity: {mode: psa}\n", encoding="utf-8")
    result = _plain_cli(running, MARSHAL_PVC, "-n", "alice", "--yes", "--config", str(config))
    line = _one_sentence_error(result)
    assert line == (
        "error: configuration: storage.rwxStorageClass: not set in the settings file: "
        "pass --rwx-storage-class"
    )
