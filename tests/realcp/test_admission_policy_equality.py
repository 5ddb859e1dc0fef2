"""The rendered admission policies give the claims and warnings the webhook gives.

Proof by property: hypothesis generates claims (access modes, classes, the legacy class
annotation, opt-out, volumeName, data sources, volumeMode, other annotations) in excluded and
ordinary namespaces; each goes through :func:`vsphere_kale.policy.storage.decide_storage_class`
(the webhook's whole decision) and, as a dry-run create, through the real kube-apiserver 1.36
evaluating the policies ``install --admission policy`` renders. The stored class, the
annotations and our warnings must be the same.

The policies carry the settings as CEL literals (no params object): non-default settings here
(two access modes, two RWX-capable classes, a custom excluded namespace) make every literal
matter.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest
from admission_policy_helpers import (
    WARNING_PREFIX,
    apply_objects,
    create_claim,
    delete_objects,
    unique,
    wait_until_policy_active,
)
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from kubernetes import client
from realcp_helpers import wait_for

from vsphere_kale.install.admission_policy import build_policy_objects
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.storage import (
    LEGACY_CLASS_ANNOTATION,
    OPT_OUT_ANNOTATION,
    ORIGINAL_CLASS_ANNOTATION,
    StorageDecision,
    decide_storage_class,
)
from vsphere_kale.settings import Settings, settings_from_mapping

TARGET = "nfs-client"
RWX_CAPABLE = "vsan-file-services"
BLOCK = "vsan-default-storage-policy"
LONG_CLASS = "c" * 60 + ".storage.example.com"
"""Long enough that the rewrite warning is shortened (policy.storage.build_rewrite_warning)."""
ABSENT = None

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
DEPRECATED_LEGACY_WARNING = (
    f"metadata.annotations[{LEGACY_CLASS_ANNOTATION}]: deprecated since v1.8; "
    'use "storageClassName" attribute instead'
)
"""kube-apiserver's own warning for the legacy annotation: given with either admission."""


@dataclass(frozen=True)
class Installed:
    kube: Kube
    settings: Settings
    namespaces: tuple[str, ...]
    default_class: str | None
    """What the DefaultStorageClass plugin (before every mutating policy and webhook) sets."""


@pytest.fixture(scope="module")
def installed(admin_api: client.ApiClient, storage_classes: tuple[str, str]) -> Iterator[Installed]:
    """The rendered policies applied as they are, with the TKG picture of storage classes (a
    default block class, so DefaultStorageClass names it on claims that name none)."""
    kube = Kube(admin_api)
    install_ns, team, team2 = unique("kale-ap"), unique("team"), unique("team")
    chosen = settings_from_mapping(
        {
            "namespace": install_ns,
            "storage": {
                "rwxStorageClass": TARGET,
                # Two modes and two capable classes: every list literal has more than one entry.
                "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                "rwxCapableClasses": [RWX_CAPABLE, "cephfs"],
                "excludedNamespaces": ["kube-system", "kube-public", team2],
            },
        }
    )
    spaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in (install_ns, team, team2)
    ]
    apply_objects(kube, spaces)
    objects = build_policy_objects(chosen, api_version="v1")
    apply_objects(kube, objects)
    try:
        classes = kube.list(r.STORAGE_CLASS)
        defaults = [
            c["metadata"]["name"]
            for c in classes.get("items", [])
            if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
        ]
        wait_until_policy_active(kube, team, TARGET)
        yield Installed(
            kube,
            chosen,
            (install_ns, "kube-public", team, team2),
            defaults[0] if defaults else None,
        )
    finally:
        delete_objects(kube, objects)
        delete_objects(kube, spaces)


def _modes() -> st.SearchStrategy[list[str]]:
    # ReadWriteOncePod may not be combined with another mode (API validation).
    combinable = st.lists(
        st.sampled_from(["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]),
        min_size=1,
        max_size=3,
        unique=True,
    )
    return st.one_of(combinable, st.just(["ReadWriteOncePod"]))


_CLASSES = st.sampled_from([ABSENT, "", TARGET, RWX_CAPABLE, BLOCK, LONG_CLASS])


@st.composite
def claims(draw: st.DrawFn) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    legacy = draw(st.one_of(st.just(ABSENT), _CLASSES))  # absent in most real claims
    if legacy is not ABSENT:
        annotations[LEGACY_CLASS_ANNOTATION] = legacy
    opt_out = draw(st.sampled_from([ABSENT] * 3 + ["false", "FALSE", "False", "true", "no", ""]))
    if opt_out is not ABSENT:
        annotations[OPT_OUT_ANNOTATION] = opt_out
    if draw(st.booleans()):
        annotations["team.example.com/owner"] = "data-science"
    # A claim carrying our own annotation already (e.g. re-created from a backup).
    preset = draw(st.sampled_from([ABSENT, ABSENT, ABSENT, BLOCK, ""]))
    if preset is not ABSENT:
        annotations[ORIGINAL_CLASS_ANNOTATION] = preset
    metadata: dict[str, Any] = {"generateName": "claim-"}
    if annotations or draw(st.booleans()):
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {
        "accessModes": draw(_modes()),
        "resources": {"requests": {"storage": "1Gi"}},
    }
    storage_class = draw(_CLASSES)
    if storage_class is not ABSENT:
        spec["storageClassName"] = storage_class
    volume = draw(st.sampled_from([ABSENT] * 4 + ["pv-static", "pv-" + "v" * 70]))
    if volume is not ABSENT:
        spec["volumeName"] = volume
    source = draw(st.sampled_from([ABSENT] * 4 + ["dataSource", "dataSourceRef"]))
    if source is not ABSENT:
        spec[source] = {"kind": "PersistentVolumeClaim", "name": "golden-data"}
    mode = draw(st.sampled_from([ABSENT, ABSENT, "Filesystem", "Block"]))
    if mode is not ABSENT:
        spec["volumeMode"] = mode
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def as_admitted(claim: dict[str, Any], default_class: str | None) -> dict[str, Any]:
    """The claim as the mutating phase receives it: DefaultStorageClass runs first and names
    the default class when the claim names none (no field, no legacy annotation)."""
    admitted = copy.deepcopy(claim)
    has_class = "storageClassName" in admitted["spec"] or LEGACY_CLASS_ANNOTATION in (
        admitted["metadata"].get("annotations") or {}
    )
    if default_class is not None and not has_class:
        admitted["spec"]["storageClassName"] = default_class
    return admitted


def webhook_result(
    claim: dict[str, Any], namespace: str, installed: Installed
) -> tuple[dict[str, Any], StorageDecision]:
    admitted = as_admitted(claim, installed.default_class)
    decision = decide_storage_class(
        admitted,
        namespace=namespace,
        operation="CREATE",
        group="",
        version="v1",
        kind="PersistentVolumeClaim",
        settings=installed.settings,
    )
    return jsonpatch.apply_patch(admitted, list(decision.patch)), decision


def accepted_difference(claim: dict[str, Any], decision: StorageDecision) -> bool:
    """The one claim the validating policy cannot tell from a rewrite (docstring of
    install/admission_policy.py): created already on the target AND already carrying our
    annotation, e.g. re-created from a backup. The webhook says nothing; the policy warns."""
    annotations = claim["metadata"].get("annotations") or {}
    return decision.reason == "already-target" and ORIGINAL_CLASS_ANNOTATION in annotations


def claim_of(*, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """One hand-written claim for ``@example`` (RWX, 1Gi, plus ``spec``)."""
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        **spec,
    }
    metadata: dict[str, Any] = {"generateName": "claim-"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": body}


TEAM = 2
"""Index of the one namespace in ``Installed.namespaces`` that is not excluded."""


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(claim=claims(), namespace_index=st.sampled_from([0, 1, TEAM, TEAM, TEAM, TEAM, TEAM, 3]))
# Every rule at least once, whatever hypothesis draws:
@example(claim_of(storageClassName=BLOCK), TEAM)
@example(claim_of(), TEAM)
@example(claim_of(annotations={LEGACY_CLASS_ANNOTATION: BLOCK}), TEAM)
@example(claim_of(annotations={LEGACY_CLASS_ANNOTATION: LONG_CLASS}, storageClassName=BLOCK), TEAM)
@example(claim_of(storageClassName=BLOCK, volumeMode="Block"), TEAM)
@example(claim_of(storageClassName=RWX_CAPABLE), TEAM)
@example(claim_of(annotations={LEGACY_CLASS_ANNOTATION: RWX_CAPABLE}, storageClassName=BLOCK), TEAM)
@example(claim_of(storageClassName=TARGET), TEAM)
@example(claim_of(storageClassName=TARGET, annotations={ORIGINAL_CLASS_ANNOTATION: BLOCK}), TEAM)
@example(claim_of(storageClassName=BLOCK, annotations={ORIGINAL_CLASS_ANNOTATION: "x"}), TEAM)
@example(claim_of(storageClassName=BLOCK, volumeName="pv-" + "v" * 70), TEAM)
@example(claim_of(storageClassName=""), TEAM)
@example(
    claim_of(
        storageClassName=BLOCK, dataSourceRef={"kind": "PersistentVolumeClaim", "name": "golden"}
    ),
    TEAM,
)
@example(claim_of(storageClassName=BLOCK, annotations={OPT_OUT_ANNOTATION: "FALSE"}), TEAM)
@example(claim_of(storageClassName=BLOCK, accessModes=["ReadWriteOnce"]), TEAM)
@example(claim_of(storageClassName=BLOCK), 0)
def test_the_policies_store_what_the_webhook_stores_and_warn_alike(
    installed: Installed, claim: dict[str, Any], namespace_index: int
) -> None:
    namespace = installed.namespaces[namespace_index]
    # Given what the webhook would make of the claim
    expected, decision = webhook_result(claim, namespace, installed)
    event(decision.reason)  # --hypothesis-show-statistics: every rule is reached
    # When the real API server admits it with only the policies in place
    stored, warnings = create_claim(installed.kube, namespace, claim)
    # Then the stored class and annotations are the webhook's, field for field
    assert stored["spec"].get("storageClassName") == expected["spec"].get("storageClassName")
    assert (stored["metadata"].get("annotations") or {}) == (
        expected["metadata"].get("annotations") or {}
    ), decision.summary
    # and so are the warnings (kube-apiserver prefixes a policy's; the webhook's come bare)
    ours = [w.removeprefix(WARNING_PREFIX) for w in warnings if w.startswith(WARNING_PREFIX)]
    others = [w for w in warnings if not w.startswith(WARNING_PREFIX)]
    expected_warnings = list(decision.warnings)
    if accepted_difference(claim, decision):
        # The one accepted difference (docs/admission-policy.md): an extra rewrite warning.
        assert len(ours) == 1 and ours[0].startswith("storageClassName rewritten from "), ours
        return
    assert ours == expected_warnings, decision.summary
    legacy = LEGACY_CLASS_ANNOTATION in (claim["metadata"].get("annotations") or {})
    assert others == ([DEPRECATED_LEGACY_WARNING] if legacy else [])


def test_an_excluded_namespace_and_the_opt_out_are_left_alone(installed: Installed) -> None:
    """Two rules by name, so a failure here reads as a sentence."""
    team = installed.namespaces[2]
    excluded = installed.namespaces[3]
    rwx = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"generateName": "claim-"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": BLOCK,
        },
    }
    stored, warnings = create_claim(installed.kube, excluded, rwx)
    assert stored["spec"]["storageClassName"] == BLOCK and not warnings
    opted_out = copy.deepcopy(rwx)
    opted_out["metadata"]["annotations"] = {OPT_OUT_ANNOTATION: "false"}
    stored, warnings = create_claim(installed.kube, team, opted_out)
    assert stored["spec"]["storageClassName"] == BLOCK and not warnings
    stored, warnings = create_claim(installed.kube, team, rwx)
    assert stored["spec"]["storageClassName"] == TARGET
    assert stored["metadata"]["annotations"] == {ORIGINAL_CLASS_ANNOTATION: BLOCK}
    assert warnings == [
        WARNING_PREFIX + f"storageClassName rewritten from {BLOCK} to {TARGET} "
        "(ReadWriteMany needs an RWX-capable class)"
    ]


def test_a_real_create_stores_the_rewritten_claim(installed: Installed) -> None:
    """Not only dry-run: the object read back from etcd carries the rewrite."""
    team = installed.namespaces[2]
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "marshal"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    create_claim(installed.kube, team, claim, dry_run=False)
    read = installed.kube.get(r.PERSISTENT_VOLUME_CLAIM, "marshal", namespace=team)
    assert read["spec"]["storageClassName"] == TARGET
    assert read["metadata"]["annotations"][ORIGINAL_CLASS_ANNOTATION] == (
        installed.default_class or ""
    )


def test_the_v1beta1_rendering_acts_the_same(installed: Installed) -> None:
    """What 1.34/1.35 get (``--admission-policy-version v1beta1``), accepted and evaluated by
    this API server (it serves v1beta1 too). Renamed copies, bound to the one namespace the v1
    policies exclude, so only these act there."""
    beta_ns = installed.namespaces[3]
    name = "vsphere-kale-beta"
    objects = build_policy_objects(
        settings_from_mapping(
            {"namespace": installed.namespaces[0], "storage": {"rwxStorageClass": TARGET}}
        ),
        api_version="v1beta1",
    )
    only_there = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": beta_ns}}}
    for obj in objects:
        obj["metadata"]["name"] = name
        if obj["kind"].endswith("Binding"):
            obj["spec"]["policyName"] = name
            obj["spec"]["matchResources"] = only_there
    assert [o["apiVersion"].rsplit("/", 1)[1] for o in objects] == [
        "v1beta1",
        "v1beta1",
        "v1",
        "v1",
    ]
    apply_objects(installed.kube, objects)
    try:
        prefix = f"Validation failed for ValidatingAdmissionPolicy '{name}' with binding '{name}': "

        def rewritten() -> list[str] | None:
            stored, warnings = create_claim(
                installed.kube, beta_ns, claim_of(storageClassName=BLOCK)
            )
            return warnings if stored["spec"]["storageClassName"] == TARGET and warnings else None

        warnings = wait_for("the v1beta1 policies to act", rewritten)
        assert warnings == [
            prefix + f"storageClassName rewritten from {BLOCK} to {TARGET} "
            "(ReadWriteMany needs an RWX-capable class)"
        ]
    finally:
        delete_objects(installed.kube, objects)
