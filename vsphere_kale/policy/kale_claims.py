"""Why a claim is not (yet) bound: a class that does not exist, ``""`` static binding, no default.

Pure: a claim, the StorageClasses and PersistentVolumes (decoded JSON; ``None`` where the
caller could not read them) in; a :class:`ClaimBinding` out. Used by the Kale volume verdicts
(:mod:`vsphere_kale.policy.kale`) and usable for any claim.

The shapes this knows (``../shared/KALE.md``):

* KFP v2 ``kfp.kubernetes.CreatePVC`` claims are named ``<uuid><suffix>`` (``<uuid>-my-pvc``).
  When the pipeline passes no class, the backend driver writes the hard-coded class
  ``standard``; TKG has no such class, so the claim is Pending for ever (``class-missing``).
  ``storage_class_name=''`` (the kfp-kubernetes default) reaches the API as
  ``storageClassName: ""``: no class, static binding only (``static-unbound`` when no
  Available PersistentVolume matches).
* A claim without ``storageClassName`` gets the default class at admission
  (DefaultStorageClass runs before webhooks); with no default class it waits
  (``no-default-class``; Kubernetes >= 1.28 assigns a default created later).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vsphere_kale.policy.health import BLOCK_PROVISIONERS, default_class
from vsphere_kale.policy.storage import effective_class
from vsphere_kale.settings import StorageSettings

KFP_CLAIM_NAME = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
"""KFP v2's driver names CreatePVC claims ``<uuid><suffix>`` (backend/src/v2/driver/k8s.go)."""

KFP_DEFAULT_CLASS = "standard"
"""The class KFP v2's driver writes when a CreatePVC has no class input."""

BindingVerdict = Literal[
    "bound",
    "lost",
    "class-missing",
    "static-unbound",
    "static-waiting",
    "no-default-class",
    "rwx-on-block-class",
    "waits-for-consumer",
    "pending",
    "unknown",
]
Severity = Literal["ok", "info", "warning", "error"]

_UNITS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kMGTPE]i?|)$")


def parse_quantity(value: object) -> float | None:
    """Bytes in a storage quantity (``1Gi``, ``500M``); ``None`` when unreadable."""
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class StorageFacts:
    """What the rules need about the cluster's storage, decided once per check."""

    classes: Mapping[str, Mapping[str, Any]] | None
    """Class name -> StorageClass JSON; ``None`` when classes could not be read."""
    default_class: str | None
    pvs: tuple[Mapping[str, Any], ...] | None
    """Every PersistentVolume; ``None`` when they could not be read (cluster scope)."""
    rwx_classes: frozenset[str]
    """``storage.rwxStorageClass`` and every ``storage.rwxCapableClasses``."""
    rwx_target: str | None
    """Where an RWX copy should go: ``rwxStorageClass``, else the first rwx-capable class."""

    @property
    def target_words(self) -> str:
        return self.rwx_target or (
            "an RWX-capable class (an NFS provisioner such as nfs-client, or vSAN File Services)"
        )


def build_storage_facts(
    classes: Sequence[Mapping[str, Any]] | None,
    pvs: Sequence[Mapping[str, Any]] | None,
    storage: StorageSettings,
) -> StorageFacts:
    rwx = set(storage.rwx_capable_classes)
    if storage.rwx_storage_class:
        rwx.add(storage.rwx_storage_class)
    target = storage.rwx_storage_class or (
        storage.rwx_capable_classes[0] if storage.rwx_capable_classes else None
    )
    by_name = (
        None if classes is None else {(c.get("metadata") or {}).get("name", ""): c for c in classes}
    )
    return StorageFacts(
        classes=by_name,
        default_class=None if classes is None else default_class(classes),  # type: ignore[arg-type]
        pvs=None if pvs is None else tuple(pvs),
        rwx_classes=frozenset(rwx),
        rwx_target=target,
    )


@dataclass(frozen=True)
class ClaimBinding:
    """Whether a claim is bound, and if not, why and what to do."""

    verdict: BindingVerdict
    severity: Severity
    message: str
    hint: str
    storage_class: str | None
    """The class the claim is on: ``None`` for the (missing) default, ``""`` for no class."""


def is_kfp_claim(name: str) -> bool:
    return bool(KFP_CLAIM_NAME.match(name))


def class_rwx_capable(name: str | None, facts: StorageFacts) -> bool | None:
    """True for configured RWX classes, False for vSphere block classes, else unknown."""
    if name is None or name == "":
        return None
    if name in facts.rwx_classes:
        return True
    if (
        facts.classes is not None
        and name in facts.classes
        and facts.classes[name].get("provisioner") in BLOCK_PROVISIONERS
    ):
        return False
    return None


def _claim_fields(claim: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    status = claim.get("status") or {}
    return str(meta.get("name") or ""), str(meta.get("namespace") or ""), spec, status


def _matching_pvs(
    claim_name: str, namespace: str, spec: Mapping[str, Any], facts: StorageFacts
) -> list[str]:
    """Available (or reserved-for-this-claim) PVs with no class that could bind the claim."""
    want_modes = set(spec.get("accessModes") or ())
    want_size = parse_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
    want_mode = spec.get("volumeMode") or "Filesystem"
    found: list[str] = []
    for pv in facts.pvs or ():
        pv_spec = pv.get("spec") or {}
        name = (pv.get("metadata") or {}).get("name", "")
        if spec.get("volumeName") and name != spec["volumeName"]:
            continue
        if pv_spec.get("storageClassName") or (pv.get("status") or {}).get("phase") not in (
            None,
            "Available",
        ):
            continue
        ref = pv_spec.get("claimRef") or {}
        if ref and (ref.get("name"), ref.get("namespace")) != (claim_name, namespace):
            continue
        if not want_modes <= set(pv_spec.get("accessModes") or ()):
            continue
        if (pv_spec.get("volumeMode") or "Filesystem") != want_mode:
            continue
        size = parse_quantity((pv_spec.get("capacity") or {}).get("storage"))
        if want_size is not None and (size is None or size < want_size):
            continue
        found.append(name)
    return found


def decide_claim_binding(claim: Mapping[str, Any], facts: StorageFacts) -> ClaimBinding:
    """One claim's binding. The first rule that matches decides:

    1. ``bound`` (ok) / ``lost`` (error) by ``status.phase``;
    2. ``storageClassName: ""`` (or a pre-bound ``volumeName``): static binding. With PVs
       readable: ``static-waiting`` (info) when an Available PV with no class matches the
       access modes, size and volume mode, else ``static-unbound`` (error);
    3. no class and no default class (classes readable) → ``no-default-class`` (error);
    4. a class that does not exist → ``class-missing`` (error; KFP's ``standard`` named);
    5. an RWX mode on a vSphere block class → ``rwx-on-block-class`` (error);
    6. a ``WaitForFirstConsumer`` class → ``waits-for-consumer`` (info: the first pod binds it);
    7. otherwise ``pending`` (warning: ``kubectl describe pvc`` says why).
    """
    name, namespace, spec, status = _claim_fields(claim)
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    requested = effective_class(annotations, spec.get("storageClassName"))
    phase = status.get("phase") or "Pending"
    target = facts.target_words

    def result(
        verdict: BindingVerdict, severity: Severity, message: str, hint: str = ""
    ) -> ClaimBinding:
        return ClaimBinding(verdict, severity, message, hint, requested)

    if phase == "Bound":
        return result("bound", "ok", f"Bound to {spec.get('volumeName') or 'a volume'}")
    if phase == "Lost":
        return result(
            "lost",
            "error",
            f"lost its volume {spec.get('volumeName') or '(unknown)'}: the data cannot be reached",
            "restore the PersistentVolume, or delete and recreate the claim",
        )
    if requested == "" or (requested is None and spec.get("volumeName")):
        what = (
            f"pre-bound to PersistentVolume {spec['volumeName']}"
            if spec.get("volumeName")
            else "no class: waits for a pre-provisioned PersistentVolume"
        )
        kfp = (
            " (KFP v2 CreatePVC's default storage_class_name='' arrives as \"\")"
            if is_kfp_claim(name)
            else ""
        )
        if facts.pvs is None:
            return result(
                "static-waiting",
                "warning",
                f"{what}{kfp}; PersistentVolumes could not be read to check for one",
                f"ask an admin whether a matching PersistentVolume exists, or recreate the "
                f"claim with storageClassName {target}",
            )
        matches = _matching_pvs(name, namespace, spec, facts)
        if matches:
            return result(
                "static-waiting", "info", f"{what}; PersistentVolume {matches[0]} can bind it"
            )
        modes = ",".join(spec.get("accessModes") or ()) or "no access mode"
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage") or "any size"
        return result(
            "static-unbound",
            "error",
            f"{what}{kfp}, and no Available PersistentVolume without a class offers "
            f"{modes}, {size}",
            f"recreate the claim with storageClassName {target}"
            + (" (in KFP: CreatePVC(storage_class_name=...))" if kfp else "")
            + ", or ask an admin for a matching PersistentVolume",
        )
    if requested is None:
        if facts.classes is not None and facts.default_class is None:
            return result(
                "no-default-class",
                "error",
                "names no class and the cluster has no default StorageClass",
                f"recreate the claim with storageClassName {target}",
            )
        requested_or_default = facts.default_class
    else:
        requested_or_default = requested
    if (
        facts.classes is not None
        and requested_or_default
        and requested_or_default not in facts.classes
    ):
        kfp = (
            f" (KFP v2 writes {KFP_DEFAULT_CLASS!r} when CreatePVC names no class)"
            if requested_or_default == KFP_DEFAULT_CLASS
            else ""
        )
        return result(
            "class-missing",
            "error",
            f"StorageClass {requested_or_default} does not exist{kfp}: the claim stays Pending",
            f"recreate the claim on {target}"
            + (
                f" (CreatePVC(storage_class_name={facts.rwx_target!r}))"
                if kfp and facts.rwx_target
                else ""
            )
            + f", or ask an admin to create class {requested_or_default}",
        )
    rwx_modes = {"ReadWriteMany"} & set(spec.get("accessModes") or ())
    if rwx_modes and class_rwx_capable(requested_or_default, facts) is False:
        return result(
            "rwx-on-block-class",
            "error",
            f"asks ReadWriteMany on {requested_or_default}, which gives block volumes only",
            f"delete and recreate the claim on {target} (the webhook places new RWX claims there)",
        )
    klass = facts.classes.get(requested_or_default or "") if facts.classes else None
    if klass is not None and klass.get("volumeBindingMode") == "WaitForFirstConsumer":
        return result(
            "waits-for-consumer",
            "info",
            "Pending until its first pod is scheduled (WaitForFirstConsumer)",
        )
    return result(
        "pending",
        "warning",
        f"Pending on class {requested_or_default or '(default)'}",
        f"kubectl describe pvc {name} -n {namespace or '<namespace>'} shows why",
    )
