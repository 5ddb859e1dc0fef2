"""Kale 2 notebook volumes and claim binding verdicts, from Kale's and KFP's real shapes.

Shapes written from ../shared/KALE.md: Kale's own test asset ``mount_pvc.ipynb`` (one ``pvc``
volume ``raw-data`` at ``/data``), KFP v2 CreatePVC claims ``<uuid>-my-pvc`` with the hard-coded
class ``standard`` or ``storageClassName: ""``, vSphere CSI block classes and an NFS class.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsphere_kale.policy.kale import (
    NotebookError,
    build_kale_section,
    decide_fit,
    decide_notebook_volumes,
    parse_notebook,
)
from vsphere_kale.policy.kale_claims import (
    build_storage_facts,
    decide_claim_binding,
    parse_quantity,
)
from vsphere_kale.settings import StorageSettings

NS = "kubeflow-user"
SETTINGS = StorageSettings(rwx_storage_class="nfs-client")
KFP_NAME = "3f1c2b9e-8d7a-4c1e-9b2a-6f5e4d3c2b1a-my-pvc"


def notebook(*volumes: dict[str, Any], kale: bool = True) -> dict[str, Any]:
    """Kale's mount_pvc.ipynb metadata, with the volumes given."""
    metadata: dict[str, Any] = {"kernelspec": {"name": "python3"}}
    if kale:
        metadata["kubeflow_notebook"] = {
            "pipeline_name": "mount-pvc-test",
            "base_image": "python:3.12",
            "volumes": list(volumes),
        }
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": []}


RAW_DATA = {"name": "raw-data", "type": "pvc", "mount_point": "/data"}


def claim(
    name: str,
    *,
    modes: tuple[str, ...] = ("ReadWriteMany",),
    klass: str | None = "nfs-client",
    phase: str = "Bound",
    size: str = "1Gi",
    volume_name: str | None = None,
    omit_class: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": list(modes),
        "resources": {"requests": {"storage": size}},
    }
    if not omit_class:
        spec["storageClassName"] = klass
    if volume_name or phase == "Bound":
        spec["volumeName"] = volume_name or f"pvc-{name}"
    status: dict[str, Any] = {"phase": phase}
    if phase == "Bound":
        status["accessModes"] = list(modes)
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec, "status": status}


def storage_class(
    name: str, provisioner: str, *, default: bool = False, wffc: bool = False
) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": provisioner,
        "volumeBindingMode": "WaitForFirstConsumer" if wffc else "Immediate",
    }


TKG_CLASSES = [
    storage_class("vsan-default-storage-policy", "csi.vsphere.vmware.com", default=True),
    storage_class("nfs-client", "cluster.local/nfs-subdir-external-provisioner"),
    storage_class("nfs-wffc", "nfs.csi.k8s.io", wffc=True),
]


def pv(
    name: str,
    *,
    modes: tuple[str, ...] = ("ReadWriteMany",),
    size: str = "5Gi",
    klass: str = "",
    phase: str = "Available",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "accessModes": list(modes),
            "capacity": {"storage": size},
            "storageClassName": klass,
        },
        "status": {"phase": phase},
    }


# --- the notebook ---------------------------------------------------------------------------


def test_mount_pvc_notebook_metadata_is_read() -> None:
    parsed = parse_notebook(notebook(RAW_DATA))
    assert parsed.pipeline_name == "mount-pvc-test"
    assert [(v.name, v.type, v.mount_point) for v in parsed.volumes] == [
        ("raw-data", "pvc", "/data")
    ]


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"cells": []}, "not a Jupyter notebook"),
        (["not", "a", "notebook"], "not a Jupyter notebook"),
        (notebook(kale=False), "no Kale metadata"),
        ({**notebook(), "metadata": {"kubeflow_notebook": {"volumes": "raw-data"}}}, "not a list"),
    ],
)
def test_bad_notebooks_say_why_in_one_sentence(doc: object, words: str) -> None:
    with pytest.raises(NotebookError, match=words):
        parse_notebook(doc)


# --- per volume, table-driven ----------------------------------------------------------------


CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], str, bool, str]] = [
    # id, volume entry, claims in the namespace, verdict, fit, words in message or hint
    ("rwx-bound", RAW_DATA, [claim("raw-data")], "ok", True, "every step can share it"),
    (
        "rwo-block",
        RAW_DATA,
        [claim("raw-data", modes=("ReadWriteOnce",), klass="vsan-default-storage-policy")],
        "rwo",
        False,
        "make an RWX copy on nfs-client and point the notebook at it",
    ),
    (
        "rwop",
        RAW_DATA,
        [claim("raw-data", modes=("ReadWriteOncePod",))],
        "rwop",
        False,
        "parallel steps",
    ),
    (
        "rox",
        RAW_DATA,
        [claim("raw-data", modes=("ReadOnlyMany",))],
        "read-only",
        True,
        "every write fails",
    ),
    ("missing", RAW_DATA, [claim("other")], "missing", False, "does not exist in kubeflow-user"),
    (
        "rwx-on-block-pending",
        RAW_DATA,
        [claim("raw-data", klass="vsan-default-storage-policy", phase="Pending")],
        "rwx-on-block-class",
        False,
        "gives block volumes only",
    ),
    (
        "class-missing",
        RAW_DATA,
        [claim("raw-data", klass="gold", phase="Pending")],
        "class-missing",
        False,
        "StorageClass gold does not exist",
    ),
    (
        "waits-for-consumer",
        RAW_DATA,
        [claim("raw-data", klass="nfs-wffc", phase="Pending")],
        "waits-for-consumer",
        True,
        "first pod",
    ),
    (
        "lost",
        RAW_DATA,
        [claim("raw-data", phase="Lost", volume_name="pv-gone")],
        "lost",
        False,
        "pv-gone",
    ),
    (
        "new_pvc-dropped",
        {"name": "scratch", "type": "new_pvc", "mount_point": "/scratch", "size": 1},
        [],
        "dropped",
        True,
        "Kale 2 does not mount new_pvc volumes: the steps will not see /scratch",
    ),
    (
        "pv-dropped",
        {"name": "x", "type": "pv", "mount_point": "/x"},
        [],
        "dropped",
        True,
        "pv volumes",
    ),
    (
        "clone-dropped",
        {"name": "x", "type": "clone", "mount_point": "/x"},
        [],
        "dropped",
        True,
        "clone",
    ),
    (
        "unknown-type",
        {"name": "x", "type": "nfs", "mount_point": "/x"},
        [],
        "invalid",
        False,
        "unknown volume type",
    ),
    ("no-name", {"type": "pvc", "mount_point": "/x"}, [], "invalid", False, "names no claim"),
    (
        "bad-name",
        {"name": "Raw Data\n", "type": "pvc", "mount_point": "/x"},
        [],
        "invalid",
        False,
        "not a claim name",
    ),
]


@pytest.mark.parametrize(
    ("volume", "claims", "verdict", "fit", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_volume_verdicts(
    volume: dict[str, Any], claims: list[dict[str, Any]], verdict: str, fit: bool, words: str
) -> None:
    facts = build_storage_facts(TKG_CLASSES, [], SETTINGS)
    (check,) = decide_notebook_volumes(
        parse_notebook(notebook(volume)), claims, facts, namespace=NS
    )
    assert (check.verdict, check.fit) == (verdict, fit)
    assert words in check.message + " " + check.hint
    assert check.hint or check.verdict == "ok" or check.verdict == "waits-for-consumer"


def test_copy_hint_names_a_configured_rwx_capable_class_when_no_rwx_storage_class() -> None:
    facts = build_storage_facts(
        TKG_CLASSES, [], StorageSettings(rwx_capable_classes=("vsan-file",))
    )
    (check,) = decide_notebook_volumes(
        parse_notebook(notebook(RAW_DATA)),
        [claim("raw-data", modes=("ReadWriteOnce",))],
        facts,
        namespace=NS,
    )
    assert "RWX copy on vsan-file" in check.hint


def test_one_unfit_volume_makes_the_notebook_unfit_and_dropped_ones_do_not() -> None:
    facts = build_storage_facts(TKG_CLASSES, [], SETTINGS)
    dropped = {"name": "s", "type": "new_pvc", "mount_point": "/s"}
    good = decide_notebook_volumes(
        parse_notebook(notebook(RAW_DATA, dropped)), [claim("raw-data")], facts, namespace=NS
    )
    assert decide_fit(good)
    bad = decide_notebook_volumes(
        parse_notebook(notebook(RAW_DATA, {"name": "rwo", "type": "pvc", "mount_point": "/o"})),
        [claim("raw-data"), claim("rwo", modes=("ReadWriteOnce",))],
        facts,
        namespace=NS,
    )
    assert not decide_fit(bad)


# --- claims: KFP v2 shapes, static binding, classes ----------------------------------------


def test_kfp_create_pvc_without_class_gets_standard_which_tkg_lacks() -> None:
    facts = build_storage_facts(TKG_CLASSES, [], SETTINGS)
    binding = decide_claim_binding(claim(KFP_NAME, klass="standard", phase="Pending"), facts)
    assert binding.verdict == "class-missing"
    assert "KFP v2 writes 'standard'" in binding.message
    assert "storage_class_name='nfs-client'" in binding.hint


def test_empty_class_is_static_binding_and_unbound_without_a_matching_pv() -> None:
    facts = build_storage_facts(
        TKG_CLASSES, [pv("too-small", size="100Mi"), pv("rwo", modes=("ReadWriteOnce",))], SETTINGS
    )
    binding = decide_claim_binding(claim(KFP_NAME, klass="", phase="Pending"), facts)
    assert binding.verdict == "static-unbound"
    assert "no class: waits for a pre-provisioned PersistentVolume" in binding.message
    assert "KFP v2 CreatePVC" in binding.message


def test_empty_class_with_a_matching_available_pv_waits_for_it() -> None:
    facts = build_storage_facts(
        TKG_CLASSES, [pv("bound", phase="Bound"), pv("nfs-static")], SETTINGS
    )
    binding = decide_claim_binding(claim("data", klass="", phase="Pending"), facts)
    assert (binding.verdict, binding.severity) == ("static-waiting", "info")
    assert "nfs-static" in binding.message


def test_pvs_with_a_class_or_reserved_for_another_claim_do_not_match() -> None:
    reserved = pv("reserved")
    reserved["spec"]["claimRef"] = {"name": "someone-else", "namespace": NS}
    facts = build_storage_facts(TKG_CLASSES, [pv("classy", klass="nfs-client"), reserved], SETTINGS)
    assert (
        decide_claim_binding(claim("data", klass="", phase="Pending"), facts).verdict
        == "static-unbound"
    )


def test_unreadable_pvs_are_said_not_guessed() -> None:
    facts = build_storage_facts(TKG_CLASSES, None, SETTINGS)
    binding = decide_claim_binding(claim("data", klass="", phase="Pending"), facts)
    assert (binding.verdict, binding.severity) == ("static-waiting", "warning")
    assert "could not be read" in binding.message


def test_no_class_and_no_default_class() -> None:
    facts = build_storage_facts([storage_class("nfs-client", "nfs")], [], SETTINGS)
    binding = decide_claim_binding(claim("data", omit_class=True, phase="Pending"), facts)
    assert binding.verdict == "no-default-class"


def test_unreadable_classes_never_claim_a_class_is_missing() -> None:
    facts = build_storage_facts(None, [], SETTINGS)
    assert (
        decide_claim_binding(claim("data", klass="gold", phase="Pending"), facts).verdict
        == "pending"
    )


@pytest.mark.parametrize(
    ("text", "size"), [("1Gi", 2**30), ("500M", 5e8), ("10", 10.0), ("x", None), (None, None)]
)
def test_parse_quantity(text: object, size: float | None) -> None:
    assert parse_quantity(text) == size


# --- the status document's kale section -----------------------------------------------------


def test_kale_section_is_json_and_says_fit() -> None:
    section = build_kale_section(
        notebook(RAW_DATA),
        [claim("raw-data", modes=("ReadWriteOnce",), klass="vsan-default-storage-policy")],
        TKG_CLASSES,
        None,
        SETTINGS,
        namespace=NS,
    )
    json.dumps(section)
    assert section["fit"] is False
    assert section["pipelineName"] == "mount-pvc-test"
    assert section["storageReadable"] == {"classes": True, "persistentVolumes": False}
    (volume,) = section["volumes"]
    assert volume["verdict"] == "rwo"
    assert volume["claim"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClass": "vsan-default-storage-policy",
        "phase": "Bound",
    }


def test_kale_section_for_a_notebook_without_kale_metadata() -> None:
    section = build_kale_section(notebook(kale=False), [], [], [], SETTINGS, namespace=NS)
    assert section["fit"] is None and "no Kale metadata" in section["error"]


# --- any JSON: a verdict or a sentence, never an exception -----------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
VOLUME_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON | st.sampled_from(["raw-data", "", "a/b"]),
        "type": JSON | st.sampled_from(["pvc", "new_pvc", "pv", "clone"]),
        "mount_point": JSON,
    },
)


@settings(max_examples=200, deadline=None)
@given(volumes=st.lists(VOLUME_ENTRY | JSON, max_size=4), claims=st.lists(JSON, max_size=3))
def test_any_notebook_volumes_and_claims_give_a_json_section(
    volumes: list[Any], claims: list[Any]
) -> None:
    claim_objects = [c for c in claims if isinstance(c, dict)] + [
        claim("raw-data", modes=("ReadWriteOnce",))
    ]
    section = build_kale_section(
        notebook(*volumes), claim_objects, TKG_CLASSES, [], SETTINGS, namespace=NS
    )
    json.dumps(section)
    assert section["fit"] in (True, False)
    assert len(section["volumes"]) == len(volumes)


@settings(max_examples=200, deadline=None)
@given(doc=JSON)
def test_any_json_is_a_notebook_or_one_sentence(doc: object) -> None:
    try:
        parse_notebook(doc)
    except NotebookError as exc:
        assert str(exc) and "\n" not in str(exc)
