"""Fixtures for tests on the real control plane (kube-apiserver + etcd: ``real_control_plane``).

Every test in this folder carries the ``realcp`` marker (``pytest -m realcp`` runs just
these, ``-m "not realcp"`` skips them). The control plane is one per session, so each test
works in namespaces of its own (``namespace``/``namespace_factory``) and removes what it
creates cluster-wide.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from realcp_helpers import BLOCK_CLASS, NFS_CLASS, api_client_for, default_service_account
from reconcile_helpers import create_profile_namespace, ensure_profile_crd

from vsphere_kale.controlplane import RunningControlPlane

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.realcp)


@pytest.fixture(scope="session")
def admin_api(real_control_plane: RunningControlPlane) -> Iterator[client.ApiClient]:
    api = api_client_for(real_control_plane)
    yield api
    api.close()


@pytest.fixture(scope="session")
def storage_classes(admin_api: client.ApiClient) -> tuple[str, str]:
    """The TKG picture: the vSphere CSI block class (the default) and an admin's NFS class."""
    storage = client.StorageV1Api(admin_api)
    for name, provisioner, default in (
        (BLOCK_CLASS, "csi.vsphere.vmware.com", "true"),
        (NFS_CLASS, "cluster.local/nfs-subdir-external-provisioner", "false"),
    ):
        body = client.V1StorageClass(
            metadata=client.V1ObjectMeta(
                name=name,
                annotations={"storageclass.kubernetes.io/is-default-class": default},
            ),
            provisioner=provisioner,
        )
        try:
            storage.create_storage_class(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    return BLOCK_CLASS, NFS_CLASS


@pytest.fixture
def namespace_factory(admin_api: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Create namespaces with a unique name (and labels); all deleted after the test."""
    core = client.CoreV1Api(admin_api)
    made: list[str] = []

    def make(prefix: str = "rcp", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(namespace_factory: Callable[..., str]) -> str:
    return namespace_factory()


@pytest.fixture(scope="session")
def profile_crd(admin_api: client.ApiClient) -> str:
    """``profiles.kubeflow.org``, established (:func:`reconcile_helpers.ensure_profile_crd`)."""
    return ensure_profile_crd(admin_api)


@pytest.fixture
def profile_namespace_factory(
    admin_api: client.ApiClient, profile_crd: str
) -> Iterator[Callable[..., str]]:
    """Kubeflow profile namespaces as the profile controller makes them: the Profile, then the
    Namespace it controls (the controller reference the reconciler requires) with ``labels``,
    its ``default`` ServiceAccount (from the controller manager) and ``service_accounts``.
    Deleted, Profile included, at the end of the test."""
    custom = client.CustomObjectsApi(admin_api)
    core = client.CoreV1Api(admin_api)
    made: list[str] = []

    def make(prefix: str, labels: dict[str, str], *, service_accounts: tuple[str, ...] = ()) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        made.append(name)
        create_profile_namespace(admin_api, name, labels)
        default_service_account(admin_api, name)
        for account in service_accounts:
            core.create_namespaced_service_account(name, {"metadata": {"name": account}})
        return name

    yield make
    for name in made:
        for delete in (
            lambda name=name: core.delete_namespace(name),
            lambda name=name: custom.delete_cluster_custom_object(
                "kubeflow.org", "v1", "profiles", name
            ),
        ):
            try:
                delete()
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
