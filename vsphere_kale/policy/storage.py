"""Which PersistentVolumeClaims move to the ReadWriteMany storage class, and the JSON Patch.

Pure: a claim (as decoded JSON), its namespace and the settings in; a
:class:`StorageDecision` out. The first matching rule decides (see :func:`decide_storage_class`).
Anything malformed gives an untouched decision, never an exception: kube-apiserver validates
the object after admission, and a webhook that raises turns into a 500 for the user (the
earlier Java tool did exactly that for claims without a storage request).

``storageClassName`` is immutable once stored, which is why this runs at admission time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from vsphere_kale.settings import Settings

LEGACY_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
"""Pre-1.6 way of naming the class. kube-controller-manager still reads it first, so it
wins over ``spec.storageClassName`` and must be rewritten too."""

OPT_OUT_ANNOTATION = "vsphere-kale.io/rewrite-storage-class"
ORIGINAL_CLASS_ANNOTATION = "vsphere-kale.io/original-storage-class"

Reason = Literal[
    "rewritten",
    "not-a-claim",
    "not-create",
    "not-configured",
    "excluded-namespace",
    "malformed",
    "opted-out",
    "not-requested-mode",
    "pre-bound",
    "static-binding",
    "data-source",
    "block-mode",
    "already-target",
    "rwx-capable",
]

JSONPatchOp = dict[str, Any]

_SUMMARIES: dict[str, str] = {
    "not-a-claim": "not a PersistentVolumeClaim",
    "not-create": "not a CREATE",
    "not-configured": "no rwxStorageClass configured",
    "excluded-namespace": "namespace excluded",
    "malformed": "malformed claim",
    "opted-out": "opted out by annotation",
    "not-requested-mode": "no ReadWriteMany access mode",
    "pre-bound": "pre-bound to a volume",
    # storageClassName "" names no class: the claim binds only to a PersistentVolume an admin
    # created beforehand (KFP v2's CreatePVC default sends exactly this).
    "static-binding": "no class: waits for a pre-provisioned PersistentVolume",
    "data-source": "cloned or restored from a data source",
    "block-mode": "raw block volume",
    "already-target": "already on the RWX class",
    "rwx-capable": "class already supports RWX",
}


@dataclass(frozen=True)
class StorageDecision:
    """What to do with one claim."""

    rewrite: bool
    reason: Reason
    patch: tuple[JSONPatchOp, ...] = ()
    """RFC 6902 operations against the original object (empty unless ``rewrite``)."""
    warnings: tuple[str, ...] = ()
    """Short sentences for the user; kube-apiserver shows them as ``Warning:`` lines."""
    from_class: str | None = None
    """Effective class before the rewrite; ``""`` means the cluster default."""
    to_class: str | None = None
    detail: str = ""
    """For ``malformed``: which field is wrong and how (``spec.accessModes is not a list of
    strings``), so ``review`` and the log can say what to fix."""

    @property
    def summary(self) -> str:
        """A few words for a log or CLI line: ``rewritten a -> b`` or ``unchanged (why)``."""
        if self.rewrite:
            return f"rewritten {self.from_class or '(cluster default)'} -> {self.to_class}"
        why = _SUMMARIES[self.reason] + (f": {self.detail}" if self.detail else "")
        return f"unchanged ({why})"


def _untouched(reason: Reason, *warnings: str) -> StorageDecision:
    return StorageDecision(rewrite=False, reason=reason, warnings=tuple(warnings))


@dataclass(frozen=True)
class _Claim:
    """The fields of a claim the rules read, type-checked."""

    annotations: Mapping[str, str] | None
    has_metadata: bool
    access_modes: tuple[str, ...]
    spec_class: str | None
    spec_class_present: bool
    volume_name: str
    has_data_source: bool
    volume_mode: str


class _Malformed(Exception):
    pass


def _opt_str(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"spec.{key} is not a string")
    return value


def _read_claim(obj: object) -> _Claim:
    if not isinstance(obj, dict):
        raise _Malformed("the claim is not a JSON object")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Malformed("metadata is not an object")
    annotations = (metadata or {}).get("annotations")
    if annotations is not None and (
        not isinstance(annotations, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise _Malformed("metadata.annotations is not a map of strings to strings")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise _Malformed("spec is missing or not an object")
    modes = spec.get("accessModes")
    if modes is not None and (
        not isinstance(modes, list) or not all(isinstance(m, str) for m in modes)
    ):
        raise _Malformed("spec.accessModes is not a list of strings")
    for key in ("dataSource", "dataSourceRef"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise _Malformed(f"spec.{key} is not an object")
    return _Claim(
        annotations=annotations,
        has_metadata=metadata is not None,
        access_modes=tuple(modes or ()),
        spec_class=_opt_str(spec, "storageClassName"),
        spec_class_present="storageClassName" in spec,
        volume_name=_opt_str(spec, "volumeName") or "",
        has_data_source=spec.get("dataSource") is not None or spec.get("dataSourceRef") is not None,
        volume_mode=_opt_str(spec, "volumeMode") or "Filesystem",
    )


def _pointer_token(key: str) -> str:
    """RFC 6901 escaping: annotation keys contain '/' (``vsphere-kale.io/...``)."""
    return key.replace("~", "~0").replace("/", "~1")


def effective_class(annotations: Mapping[str, str] | None, spec_class: str | None) -> str | None:
    """The class the claim asks for; ``None`` means the cluster's default class."""
    if annotations and LEGACY_CLASS_ANNOTATION in annotations:
        return annotations[LEGACY_CLASS_ANNOTATION]
    return spec_class


def build_rewrite_patch(claim: _Claim, *, target: str, previous: str) -> tuple[JSONPatchOp, ...]:
    ops: list[JSONPatchOp] = []
    annotation_path = "/metadata/annotations"
    if not claim.has_metadata:
        ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {}}})
    elif claim.annotations is None:
        # "add" on a missing parent fails, so create the map first (also when it is null).
        ops.append({"op": "add", "path": annotation_path, "value": {}})
    ops.append(
        {
            "op": "add",
            "path": f"{annotation_path}/{_pointer_token(ORIGINAL_CLASS_ANNOTATION)}",
            "value": previous,
        }
    )
    if claim.annotations and LEGACY_CLASS_ANNOTATION in claim.annotations:
        ops.append(
            {
                "op": "replace",
                "path": f"{annotation_path}/{_pointer_token(LEGACY_CLASS_ANNOTATION)}",
                "value": target,
            }
        )
    ops.append(
        {
            "op": "replace" if claim.spec_class_present else "add",
            "path": "/spec/storageClassName",
            "value": target,
        }
    )
    return tuple(ops)


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


MAX_WARNING_LENGTH = 120
"""kube-apiserver truncates long admission warnings; keep ours whole and readable."""


def build_rewrite_warning(previous: str, target: str) -> str:
    """``storageClassName rewritten from A to B (…why…)``, shortened to fit 120 characters."""
    why = " (ReadWriteMany needs an RWX-capable class)"
    text = f"storageClassName rewritten from {previous} to {target}{why}"
    if len(text) <= MAX_WARNING_LENGTH:
        return text
    text = f"storageClassName rewritten from {previous} to {target}"
    if len(text) <= MAX_WARNING_LENGTH:
        return text
    return f"storageClassName rewritten from {_short(previous)} to {_short(target)}"


def decide_storage_class(
    obj: object,
    *,
    namespace: str,
    operation: str,
    group: str,
    version: str,
    kind: str,
    settings: Settings,
) -> StorageDecision:
    """Decide one claim. The first matching rule wins:

    1. not a core/v1 PersistentVolumeClaim, or not a CREATE → untouched;
    2. no ``storage.rwxStorageClass`` configured → untouched;
    3. namespace excluded (settings + the controller's own namespace) → untouched;
    4. malformed object → untouched (kube-apiserver's validation will answer the user);
    5. annotation ``vsphere-kale.io/rewrite-storage-class: "false"`` → untouched (opt-out);
    6. no access mode in ``storage.accessModes`` → untouched;
    7. ``spec.volumeName`` set (``pre-bound``) or class ``""`` (``static-binding``: no class,
       it waits for a pre-provisioned PersistentVolume) → untouched, warning;
    8. ``dataSource``/``dataSourceRef`` (clone, snapshot restore) → untouched, warning;
    9. ``volumeMode: Block`` → untouched, warning (NFS cannot serve raw block);
    10. effective class is the target or in ``rwxCapableClasses`` → untouched;
    11. otherwise rewrite.
    """
    if (group, version, kind) != ("", "v1", "PersistentVolumeClaim"):
        return _untouched("not-a-claim")
    if operation != "CREATE":
        # storageClassName is immutable after creation: nothing to do on UPDATE.
        return _untouched("not-create")
    target = settings.storage.rwx_storage_class
    if not target:
        return _untouched("not-configured")
    if namespace in settings.webhook_excluded_namespaces:
        return _untouched("excluded-namespace")
    try:
        claim = _read_claim(obj)
    except _Malformed as exc:
        return StorageDecision(rewrite=False, reason="malformed", detail=str(exc))
    if claim.annotations and claim.annotations.get(OPT_OUT_ANNOTATION, "").lower() == "false":
        return _untouched("opted-out")
    if not set(claim.access_modes) & set(settings.storage.access_modes):
        return _untouched("not-requested-mode")
    current = effective_class(claim.annotations, claim.spec_class)
    if claim.volume_name or current == "":
        # The warning text is shared with the MutatingAdmissionPolicy: keep it as is.
        what = (
            f"pre-bound to volume {_short(claim.volume_name)}"
            if claim.volume_name
            else ('storageClassName "" (static binding)')
        )
        return _untouched(
            "pre-bound" if claim.volume_name else "static-binding",
            f"claim is {what}; storage class not rewritten",
        )
    if claim.has_data_source:
        return _untouched(
            "data-source",
            "claim has a dataSource (clone/restore stays on its driver); "
            "storage class not rewritten",
        )
    if claim.volume_mode == "Block":
        return _untouched(
            "block-mode", "volumeMode Block cannot be served by NFS; storage class not rewritten"
        )
    if current == target:
        return _untouched("already-target")
    if current is not None and current in settings.storage.rwx_capable_classes:
        return _untouched("rwx-capable")
    previous = current or ""
    return StorageDecision(
        rewrite=True,
        reason="rewritten",
        patch=build_rewrite_patch(claim, target=target, previous=previous),
        warnings=(build_rewrite_warning(previous or "the cluster default", target),),
        from_class=previous,
        to_class=target,
    )
