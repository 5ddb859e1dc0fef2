"""Type validation and built-in admission the sandbox shares with kube-apiserver.

Only what a claim's life depends on, with kube's field paths and messages (the validation in
``k8s.io/kubernetes/pkg/apis/core/validation``, 1.36):

- PersistentVolumeClaim create: ``spec.accessModes`` required and supported,
  ``spec.resources[storage]`` required and greater than zero, quantities parseable;
- PersistentVolumeClaim update (``ValidatePersistentVolumeClaimUpdate``): the spec is immutable
  except ``resources.requests`` and ``volumeAttributesClassName`` of a bound claim, a
  ``volumeName`` may be set once, a nil ``storageClassName`` may be set once (retroactive
  default class), a bound claim's request may not shrink to its capacity;
- the DefaultStorageClass admission plugin: a claim created with no ``storageClassName`` gets
  the default class (newest wins when several are marked, ties by name);
- DeleteOptions: ``propagationPolicy`` is Orphan, Background or Foreground.

Pure: no I/O; the server maps the causes to a 422 Invalid Status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.types import JSONObject

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
FORBIDDEN = "FieldValueForbidden"
NOT_SUPPORTED = "FieldValueNotSupported"

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
VOLUME_MODES = ("Block", "Filesystem")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan", "nil")

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_QUANTITY_MESSAGE = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


@dataclass(frozen=True)
class Cause:
    """One field.Error: its type (kube's cause reason), path and body (message)."""

    type: str
    field: str
    body: str

    @property
    def text(self) -> str:
        return f"{self.field}: {self.body}"

    def with_value(self, printed: str) -> Cause:
        """The same cause with the value printed as given (a list: ``["Some"]``)."""
        return Cause(self.type, self.field, self.body.replace('""', printed, 1))


def required(path: str, detail: str = "") -> Cause:
    return Cause(REQUIRED, path, "Required value" + (f": {detail}" if detail else ""))


def invalid_value(path: str, value: str, detail: str) -> Cause:
    return Cause(INVALID, path, f'Invalid value: "{value}": {detail}')


def forbidden(path: str, detail: str) -> Cause:
    return Cause(FORBIDDEN, path, f"Forbidden: {detail}")


def not_supported(path: str, value: str, supported: Iterable[str]) -> Cause:
    values = ", ".join(f'"{v}"' for v in supported)
    return Cause(NOT_SUPPORTED, path, f'Unsupported value: "{value}": supported values: {values}')


def invalid_error(kind: str, group: str, name: str, causes: list[Cause]) -> StatusError:
    """kube's ``apierrors.NewInvalid``: 422 with the causes in ``details``."""
    text = ", ".join(c.text for c in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details: JSONObject = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": c.type, "message": c.body, "field": c.field} for c in causes]
    qualified = f"{kind}.{group}" if group else kind
    return StatusError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details=details)


def parse_quantity(value: Any) -> Decimal:
    """A resource.Quantity's value; ValueError with kube's decode message if malformed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    text = str(value) if isinstance(value, str) else ""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(_QUANTITY_MESSAGE)
    number, suffix = match.groups()
    try:
        if suffix in _SUFFIXES:
            return Decimal(number) * _SUFFIXES[suffix]
        if suffix[:1] in "eE":
            return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
    except (InvalidOperation, ValueError):
        pass
    raise ValueError(_QUANTITY_MESSAGE)


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _requests(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    resources = spec.get("resources")
    requests = resources.get("requests") if isinstance(resources, Mapping) else None
    return requests if isinstance(requests, Mapping) else {}


def check_pvc_decodes(obj: Mapping[str, Any]) -> None:
    """400 BadRequest for quantities kube could not even decode (before any validation)."""
    spec = _spec(obj)
    quantities = [
        *_requests(spec).values(),
        *((spec.get("resources") or {}).get("limits") or {}).values(),
    ]
    for quantity in quantities:
        try:
            parse_quantity(quantity)
        except ValueError as exc:
            raise StatusError(
                400,
                "BadRequest",
                'PersistentVolumeClaim in version "v1" cannot be handled as a '
                f"PersistentVolumeClaim: {exc}",
            ) from exc


def validate_pvc(obj: Mapping[str, Any]) -> list[Cause]:
    """``ValidatePersistentVolumeClaimSpec`` for what the sandbox stores."""
    spec = _spec(obj)
    causes: list[Cause] = []
    modes = spec.get("accessModes") or []
    if not modes:
        causes.append(required("spec.accessModes", "at least 1 access mode is required"))
    for mode in modes:
        if mode not in ACCESS_MODES:
            causes.append(not_supported("spec.accessModes", str(mode), ACCESS_MODES))
    if "ReadWriteOncePod" in modes and any(
        m in ACCESS_MODES for m in modes if m != "ReadWriteOncePod"
    ):
        causes.append(
            forbidden("spec.accessModes", "may not use ReadWriteOncePod with other access modes")
        )
    requests = _requests(spec)
    if "storage" not in requests:
        causes.append(required("spec.resources[storage]"))
    elif parse_quantity(requests["storage"]) <= 0:
        causes.append(
            invalid_value(
                "spec.resources[storage]", str(requests["storage"]), "must be greater than zero"
            )
        )
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        causes.append(not_supported("spec.volumeMode", str(mode), VOLUME_MODES))
    return causes


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    return meta.get("annotations") or {}


def _go_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A go-cmp style diff of two specs (kube appends one to the immutability message)."""
    lines = ["  core.PersistentVolumeClaimSpec{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            go_name = key[:1].upper() + key[1:]
            if key in old:
                lines.append(f"- \t{go_name}: {_go_value(old[key])},")
            if key in new:
                lines.append(f"+ \t{go_name}: {_go_value(new[key])},")
    lines.append("  }")
    return "\n".join(lines)


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return f'&"{value}"'
    return str(value)


def validate_pvc_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[Cause]:
    """``ValidatePersistentVolumeClaimUpdate``: the immutability rules, kube's messages."""
    causes = validate_pvc(new)
    new_spec = dict(_spec(new))
    old_spec = dict(_spec(old))
    # kube keeps the stored status on a spec update, so "bound" is the old claim's phase.
    bound = ((old.get("status") or {}).get("phase")) == "Bound"
    if not old_spec.get("volumeName"):
        old_spec["volumeName"] = new_spec.get("volumeName")  # volumeName may be set once
    old_class = old_spec.get("storageClassName")
    new_class = new_spec.get("storageClassName")
    old_beta = _annotations(old).get(BETA_CLASS_ANNOTATION)
    if old_class is None and new_class is not None and (old_beta is None or new_class == old_beta):
        # Retroactive default StorageClass (GA in 1.28): a nil class may be set once.
        new_spec.pop("storageClassName", None)
    if bound:
        for key in ("resources", "volumeAttributesClassName"):
            if key in old_spec:
                new_spec[key] = old_spec[key]
            else:
                new_spec.pop(key, None)
    compared_new = {k: v for k, v in new_spec.items() if v is not None}
    compared_old = {k: v for k, v in old_spec.items() if v is not None}
    if compared_new != compared_old:
        causes.append(
            forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims\n"
                + _go_diff(compared_old, compared_new),
            )
        )
    old_size = _size(_requests(_spec(old)).get("storage"))
    new_size = _size(_requests(_spec(new)).get("storage"))
    capacity = _size(((old.get("status") or {}).get("capacity") or {}).get("storage"))
    if new_size < old_size and new_size <= capacity:
        # RecoverVolumeExpansionFailure (GA): shrinking is allowed only above status.capacity.
        causes.append(
            forbidden(
                "spec.resources.requests.storage", "field can not be less than status.capacity"
            )
        )
    return causes


def _size(value: Any) -> Decimal:
    try:
        return parse_quantity(value) if value is not None else Decimal(0)
    except ValueError:
        return Decimal(0)


def pick_default_storage_class(classes: Iterable[Mapping[str, Any]]) -> str | None:
    """The DefaultStorageClass plugin's choice: newest marked class, ties by name."""
    marked = []
    for sc in classes:
        annotations = _annotations(sc)
        if "true" in (
            annotations.get(DEFAULT_CLASS_ANNOTATION),
            annotations.get(BETA_DEFAULT_CLASS_ANNOTATION),
        ):
            meta = sc.get("metadata") or {}
            marked.append((str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")))
    if not marked:
        return None
    # creationTimestamp is RFC 3339 UTC, so string order is time order.
    marked.sort(key=lambda t: (_neg(t[0]), t[1]))
    return marked[0][1]


def _neg(timestamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in timestamp)


def needs_default_class(pvc: Mapping[str, Any]) -> bool:
    """True when DefaultStorageClass admission would set the class (none given at all)."""
    spec = _spec(pvc)
    return spec.get("storageClassName") is None and BETA_CLASS_ANNOTATION not in _annotations(pvc)


def validate_delete_options(options: Mapping[str, Any]) -> list[Cause]:
    """``ValidateDeleteOptions``: the propagation policy and its conflict with orphanDependents."""
    causes: list[Cause] = []
    policy = options.get("propagationPolicy")
    if options.get("orphanDependents") is not None and policy is not None:
        causes.append(
            invalid_value(
                "propagationPolicy",
                str(policy),
                "orphanDependents and deletionPropagation cannot be both set",
            )
        )
    if policy is not None and policy not in PROPAGATION_POLICIES[:3]:
        causes.append(not_supported("propagationPolicy", str(policy), PROPAGATION_POLICIES))
    return causes
