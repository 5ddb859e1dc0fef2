"""Kale 2 notebook volumes: is every claim Kale mounts fit to be shared by all the steps?

Pure: a notebook (decoded JSON), the namespace's claims, the StorageClasses and
PersistentVolumes (``None`` where unreadable) and the storage settings in; frozen verdicts, and
the JSON ``kale`` section (:func:`build_kale_section`) the status document can embed, out.

How Kale 2 uses volumes (kubeflow-kale 2.3.0; ``../shared/KALE.md``): the notebook's
``metadata.kubeflow_notebook.volumes`` lists ``{name, type, mount_point}``; only ``type:
"pvc"`` entries are mounted, and each is mounted on **every** step with
``kfp.kubernetes.mount_pvc``. Steps may run on different nodes and in parallel, beside the
notebook pod that already mounts the same claim. So a claim is fit when it exists, is (or will
be) bound, and is ReadWriteMany. ReadWriteOnce risks Multi-Attach errors as soon as a step lands
on another node; ReadWriteOncePod admits one pod cluster-wide, so parallel steps (or any step
while the notebook runs) fail; ReadOnlyMany mounts but every write fails. ``new_pvc``, ``pv``
and ``clone`` entries pass Kale's validation and are then silently dropped: the steps do not
get those mounts. Kale itself only logs a compile-time warning for RWO claims, and only when it
runs in a pod.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vsphere_kale.policy.kale_claims import (
    ClaimBinding,
    Severity,
    StorageFacts,
    build_storage_facts,
    class_rwx_capable,
    decide_claim_binding,
)
from vsphere_kale.settings import StorageSettings

KALE_METADATA_KEY = "kubeflow_notebook"
MOUNTED_TYPE = "pvc"
DROPPED_TYPES = frozenset({"new_pvc", "pv", "clone"})
"""Valid in Kale 2's volume schema, but its templates mount only ``pvc`` entries."""

CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A claim name is an RFC 1123 subdomain (at most 253 characters)."""

RWX, RWO, RWOP, ROX = "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"

VolumeVerdict = Literal[
    "ok",
    "read-only",
    "dropped",
    "invalid",
    "missing",
    "rwo",
    "rwop",
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


class NotebookError(ValueError):
    """The input is not a Kale notebook; the message is one sentence saying why."""


@dataclass(frozen=True)
class NotebookVolume:
    index: int
    name: str
    type: str
    mount_point: str


@dataclass(frozen=True)
class KaleNotebook:
    pipeline_name: str | None
    volumes: tuple[NotebookVolume, ...]


def parse_notebook(doc: object, *, source: str = "the notebook") -> KaleNotebook:
    """The Kale metadata of a decoded ``.ipynb``; :class:`NotebookError` when there is none."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list) or "nbformat" not in doc:
        raise NotebookError(f"{source} is not a Jupyter notebook (no nbformat and cells)")
    metadata = doc.get("metadata")
    kale = metadata.get(KALE_METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(kale, dict):
        raise NotebookError(
            f"{source} has no Kale metadata (metadata.{KALE_METADATA_KEY}): enable Kale in "
            "JupyterLab's Kale panel and save the notebook"
        )
    raw = kale.get("volumes", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise NotebookError(f"{source}: metadata.{KALE_METADATA_KEY}.volumes is not a list")
    volumes = []
    for index, entry in enumerate(raw):
        entry = entry if isinstance(entry, dict) else {}
        volumes.append(
            NotebookVolume(
                index=index,
                name=entry["name"] if isinstance(entry.get("name"), str) else "",
                type=entry["type"] if isinstance(entry.get("type"), str) else "",
                mount_point=entry["mount_point"]
                if isinstance(entry.get("mount_point"), str)
                else "",
            )
        )
    name = kale.get("pipeline_name")
    return KaleNotebook(
        pipeline_name=name if isinstance(name, str) and name else None, volumes=tuple(volumes)
    )


@dataclass(frozen=True)
class VolumeCheck:
    """The verdict on one entry of the notebook's Kale volumes."""

    volume: NotebookVolume
    verdict: VolumeVerdict
    fit: bool
    """True when Kale will not mount it, or when every step can share it."""
    severity: Severity
    message: str
    hint: str
    access_modes: tuple[str, ...] = ()
    storage_class: str | None = None
    phase: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.volume.name,
            "type": self.volume.type,
            "mountPoint": self.volume.mount_point,
            "verdict": self.verdict,
            "fit": self.fit,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "claim": None
            if self.phase is None
            else {
                "accessModes": list(self.access_modes),
                "storageClass": self.storage_class,
                "phase": self.phase,
            },
        }


def _copy_hint(name: str, facts: StorageFacts, *, namespace: str) -> str:
    target = facts.rwx_target
    where = f"on {target}" if target else f"on {facts.target_words}"
    return (
        f"make an RWX copy {where} and point the notebook at it: create claim {name}-rwx "
        f"(ReadWriteMany{', storageClassName ' + target if target else ''}) in {namespace}, "
        f"copy the data, and set the volume's name to {name}-rwx in the Kale panel"
    )


def decide_volume(
    volume: NotebookVolume,
    claim: Mapping[str, Any] | None,
    facts: StorageFacts,
    *,
    namespace: str,
) -> VolumeCheck:
    """One Kale volume. The first rule that matches decides:

    1. ``type`` other than ``pvc``: ``dropped`` (warning, fit: Kale 2 does not mount it) for
       ``new_pvc``/``pv``/``clone``, ``invalid`` (error) for anything else or a ``pvc`` with no
       name (Kale's validation refuses the notebook);
    2. no such claim in the namespace → ``missing``;
    3. ``lost``;
    4. access modes (``status.accessModes`` once bound, else ``spec``): ReadWriteMany passes;
       else ReadWriteOncePod → ``rwop``, ReadWriteOnce → ``rwo`` (both unfit), ReadOnlyMany
       only → ``read-only`` (warning, fit: reads work on every node);
    5. a claim not yet bound: :func:`~vsphere_kale.policy.kale_claims.decide_claim_binding`
       (``class-missing``, ``static-unbound``, ``no-default-class``, ``rwx-on-block-class``,
       ``pending`` are unfit; ``waits-for-consumer`` and ``static-waiting`` with a matching PV
       are fit);
    6. ``ok``.
    """
    label = volume.mount_point or "its mount point"
    if volume.type != MOUNTED_TYPE:
        if volume.type in DROPPED_TYPES:
            return VolumeCheck(
                volume,
                "dropped",
                True,
                "warning",
                f"Kale 2 does not mount {volume.type} volumes: the steps will not see {label}",
                "create the claim yourself (RWX) and list it with type pvc",
            )
        return VolumeCheck(
            volume,
            "invalid",
            False,
            "error",
            f"unknown volume type {volume.type or '(none)'}: Kale refuses the notebook",
            "set the volume's type to pvc in the Kale panel",
        )
    if not volume.name:
        return VolumeCheck(
            volume,
            "invalid",
            False,
            "error",
            f"volume {volume.index} (type pvc) names no claim",
            "choose the claim in the Kale panel's volume settings",
        )
    if len(volume.name) > 253 or not CLAIM_NAME.match(volume.name):
        return VolumeCheck(
            volume,
            "invalid",
            False,
            "error",
            f"volume {volume.index} names {volume.name[:60]!r}, which is not a claim name",
            "choose the claim in the Kale panel's volume settings",
        )
    if claim is None:
        return VolumeCheck(
            volume,
            "missing",
            False,
            "error",
            f"claim {volume.name} does not exist in {namespace}: every step fails to start",
            f"create claim {volume.name} in {namespace} as ReadWriteMany on "
            f"{facts.target_words} (Kubeflow's Volumes UI or kubectl), or fix the name",
        )
    spec = claim.get("spec") or {}
    status = claim.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    modes = tuple(status.get("accessModes") or spec.get("accessModes") or ())
    binding: ClaimBinding = decide_claim_binding(claim, facts)

    def result(
        verdict: VolumeVerdict, fit: bool, severity: Severity, message: str, hint: str
    ) -> VolumeCheck:
        return VolumeCheck(
            volume, verdict, fit, severity, message, hint, modes, binding.storage_class, phase
        )

    if binding.verdict == "lost":
        return result(
            "lost", False, "error", f"claim {volume.name} {binding.message}", binding.hint
        )
    if RWX not in modes:
        if RWOP in modes:
            return result(
                "rwop",
                False,
                "error",
                f"claim {volume.name} is ReadWriteOncePod: one pod at a time, so parallel steps "
                "and any step while the notebook pod mounts it fail",
                _copy_hint(volume.name, facts, namespace=namespace),
            )
        if RWO in modes:
            return result(
                "rwo",
                False,
                "error",
                f"claim {volume.name} is ReadWriteOnce: a step scheduled on another node than "
                "the notebook or another step fails with Multi-Attach",
                _copy_hint(volume.name, facts, namespace=namespace),
            )
        if ROX in modes:
            return result(
                "read-only",
                True,
                "warning",
                f"claim {volume.name} is ReadOnlyMany: steps can read {label} but every "
                "write fails",
                "fine for input data; write outputs elsewhere (KFP artifacts)",
            )
        return result(
            "invalid",
            False,
            "error",
            f"claim {volume.name} has no access mode",
            f"recreate it as ReadWriteMany on {facts.target_words}",
        )
    if binding.verdict in ("bound",):
        capable = class_rwx_capable(binding.storage_class, facts)
        note = "" if capable is not False else " (Bound although its class gives block volumes)"
        return result(
            "ok", True, "ok", f"ReadWriteMany and Bound: every step can share it{note}", ""
        )
    fit = binding.verdict in ("waits-for-consumer",) or (
        binding.verdict == "static-waiting" and binding.severity == "info"
    )
    verdict: VolumeVerdict = binding.verdict  # type: ignore[assignment]
    return result(
        verdict, fit, binding.severity, f"claim {volume.name}: {binding.message}", binding.hint
    )


def _claims_by_name(claims: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {(c.get("metadata") or {}).get("name", ""): c for c in claims}


def decide_notebook_volumes(
    notebook: KaleNotebook,
    claims: Sequence[Mapping[str, Any]],
    facts: StorageFacts,
    *,
    namespace: str,
) -> tuple[VolumeCheck, ...]:
    by_name = _claims_by_name(claims)
    return tuple(
        decide_volume(v, by_name.get(v.name), facts, namespace=namespace) for v in notebook.volumes
    )


def decide_fit(checks: Sequence[VolumeCheck]) -> bool:
    """True when every claim Kale will mount is fit to be shared by its steps."""
    return all(c.fit for c in checks)


def build_kale_section(
    notebook_json: object,
    claims: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]] | None,
    pvs: Sequence[Mapping[str, Any]] | None,
    settings: StorageSettings,
    *,
    namespace: str,
    source: str = "the notebook",
) -> dict[str, Any]:
    """The ``kale`` section of the status document (schema in docs/kale.md).

    ``classes``/``pvs`` ``None`` means "could not be read"; verdicts then say so instead of
    guessing. A notebook without Kale metadata gives ``fit: null`` and ``error``.
    """
    try:
        notebook = parse_notebook(notebook_json, source=source)
    except NotebookError as exc:
        return {
            "generation": "kale2",
            "namespace": namespace,
            "pipelineName": None,
            "fit": None,
            "error": str(exc),
            "volumes": [],
            "storageReadable": {
                "classes": classes is not None,
                "persistentVolumes": pvs is not None,
            },
        }
    facts = build_storage_facts(classes, pvs, settings)
    checks = decide_notebook_volumes(notebook, claims, facts, namespace=namespace)
    return {
        "generation": "kale2",
        "namespace": namespace,
        "pipelineName": notebook.pipeline_name,
        "fit": decide_fit(checks),
        "error": None,
        "volumes": [c.to_json() for c in checks],
        "storageReadable": {"classes": classes is not None, "persistentVolumes": pvs is not None},
    }
