"""Server-side Tables for kubectl get: Accept negotiation, kube's durations, columns."""

from __future__ import annotations

import pytest

from vsphere_kale.sandbox.resources import Registry
from vsphere_kale.sandbox.tables import build_table, human_duration, wants_table
from vsphere_kale.sandbox.types import ResourceRef

KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (KUBECTL_ACCEPT, "v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/json", None),
        ("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io", None),
        ("", None),
    ],
)
def test_wants_table(accept: str, version: str | None) -> None:
    assert wants_table(accept) == version


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (185, "3m5s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 7, "3h7m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kube(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_pvc_table_rows_carry_partial_metadata() -> None:
    rt = Registry("psa").by_ref(ResourceRef("", "persistentvolumeclaims"))
    pvc = {
        "metadata": {
            "name": "m",
            "namespace": "alice",
            "creationTimestamp": "2020-01-01T00:00:00Z",
        },
        "spec": {"storageClassName": "nfs-client", "accessModes": ["ReadWriteMany"]},
        "status": {
            "phase": "Bound",
            "accessModes": ["ReadWriteMany"],
            "capacity": {"storage": "1Gi"},
        },
    }
    table = build_table(rt, [pvc], table_version="v1", resource_version="7")
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Status",
        "Volume",
        "Capacity",
        "Access Modes",
        "StorageClass",
        "Age",
    ]
    row = table["rows"][0]
    assert row["cells"][:6] == ["m", "Bound", "", "1Gi", "RWX", "nfs-client"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "alice"
    assert table["metadata"] == {"resourceVersion": "7"}
    bare = build_table(rt, [pvc], table_version="v1", resource_version=None, include_object="None")
    assert "object" not in bare["rows"][0]


def test_types_without_columns_get_name_and_age() -> None:
    rt = Registry("psa").by_ref(ResourceRef("kubeflow.org", "profiles"))
    table = build_table(
        rt, [{"metadata": {"name": "alice"}}], table_version="v1", resource_version=None
    )
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["alice", "<unknown>"]
