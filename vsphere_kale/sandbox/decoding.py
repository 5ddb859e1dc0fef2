"""What kube-apiserver's decoder refuses before any validation: a JSON value of the wrong type
in a typed field (``data: {enabled: true}`` in a ConfigMap), a Secret value that is not base64.

kube decodes a write into its Go struct first, so such a body never reaches admission. The error
text depends on the path the body came by, and each is kube 1.36's own (recorded from the real
control plane, ``tests/differential``):

- create and update (``sigs.k8s.io/json``, Go's encoding/json): 400 BadRequest,
  ``ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal bool
  into Go struct field ConfigMap.data of type string``; the first error in document order;
- JSON merge patch and JSON patch: the patched object decoded the same way, answered 422 on
  the field ``patch`` (:func:`check_patched`);
- strategic merge patch: the patch converted from unstructured (its own words:
  ``unrecognized type: string``, ``cannot restore map from bool``), 422 on ``patch`` with the
  patch printed as Go's ``%v`` prints a map;
- server-side apply: structured-merge-diff's typed patch (``.data.k: expected string, got
  &value.valueUnstructured{Value:true}``), a 500.

Only the typed fields the sandbox serves are checked: ObjectMeta's name, generateName,
namespace, labels and annotations on every type; ConfigMap ``data``/``binaryData``; Secret
``data``/``stringData``. A custom resource is decoded unstructured, only its metadata into
ObjectMeta (``ObjectMeta.labels`` in the message). :func:`decode` also normalises what Go's
decoder and encoder would: a ``null`` map value becomes ``""``, a ``null`` field or an empty
map goes (``omitempty``), map keys are served sorted, base64 is re-encoded canonically
(newlines dropped). Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Literal

from vsphere_kale.sandbox.statuses import StatusError
from vsphere_kale.sandbox.types import JSONObject

Shape = Literal["string", "string-map", "bytes-map"]

_META_FIELDS: Mapping[str, Shape] = {
    "name": "string",
    "generateName": "string",
    "namespace": "string",
    "labels": "string-map",
    "annotations": "string-map",
}
#: kind -> top-level typed fields, in the Go struct's field order.
_TYPED_FIELDS: Mapping[str, Mapping[str, Shape]] = {
    "ConfigMap": {"data": "string-map", "binaryData": "bytes-map"},
    "Secret": {"data": "bytes-map", "stringData": "string-map"},
}
#: shape -> Go's name of the element type (a map shape is ``map[string]<element>``).
_ELEMENT: Mapping[Shape, str] = {"string": "string", "string-map": "string", "bytes-map": "[]uint8"}


class DecodeError(ValueError):
    """A value Go's decoder refuses; ``str()`` is kube's text after its prefix."""


# --- Go's words for JSON values ---------------------------------------------------------------


def _json_type(value: Any) -> str:
    """encoding/json's name of a JSON value in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _go_kind(value: Any) -> str:
    """reflect.Kind of the value unstructured JSON decodes to (ints beyond int64 are float64)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -(2**63) <= value < 2**63 else "float64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "slice" if isinstance(value, list) else "map"


def _go_float(value: float, *, exponent_from: int) -> str:
    """strconv's shortest %g: exponent form below 1e-4 or from 10**exponent_from on."""
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(str(d) for d in digits)
    point = len(digits) + exponent  # digits before the decimal point
    minus = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= exponent_from:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return minus + text + "0" * (point - len(text))
    return f"{minus}{text[:point]}.{text[point:]}"


def _go_number(value: int | float, *, exponent_from: int) -> str:
    if isinstance(value, int) and _go_kind(value) == "int64":
        return str(value)
    return _go_float(float(value), exponent_from=exponent_from)


def go_v(value: Any) -> str:
    """Go's ``%v`` of an unstructured JSON value (maps print sorted by key)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value, exponent_from=6)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_v(v) for v in value) + "]"
    return "map[" + " ".join(f"{k}:{go_v(value[k])}" for k in sorted(value)) + "]"


def _go_sharp_v(value: Any) -> str:
    """Go's ``%#v`` of an unstructured JSON value held in an ``interface{}``."""
    if value is None:
        return "interface {}(nil)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value, exponent_from=21)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_sharp_v(v) for v in value) + "}"
    inner = ", ".join(f"{json.dumps(k)}:{_go_sharp_v(value[k])}" for k in sorted(value))
    return "map[string]interface {}{" + inner + "}"


# --- Go's base64 (encoding/base64 StdEncoding, not strict) ---------------------------------------

_ALPHABET = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_NEWLINES = (ord("\n"), ord("\r"))


def go_base64_decode(text: str) -> bytes:
    """``base64.StdEncoding.DecodeString`` with its error offsets ("illegal base64 data at
    input byte N"): newlines are skipped, padding is required, trailing bits are ignored."""
    src = text.encode("utf-8")
    out = bytearray()
    si = 0
    while si < len(src):
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == len(src):
                if not quantum:
                    return bytes(out)
                raise DecodeError(f"illegal base64 data at input byte {si - len(quantum)}")
            byte = src[si]
            si += 1
            if byte in _ALPHABET:
                quantum.append(_ALPHABET[byte])
                continue
            if byte in _NEWLINES:
                continue
            if byte != ord("=") or len(quantum) < 2:
                raise DecodeError(f"illegal base64 data at input byte {si - 1}")
            if len(quantum) == 2:  # "==" expected; the first is consumed
                while si < len(src) and src[si] in _NEWLINES:
                    si += 1
                if si == len(src):
                    raise DecodeError(f"illegal base64 data at input byte {len(src)}")
                if src[si] != ord("="):
                    raise DecodeError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < len(src) and src[si] in _NEWLINES:
                si += 1
            if si < len(src):
                raise DecodeError(f"illegal base64 data at input byte {si}")
            break
        value = 0
        for sextet in quantum + [0] * (4 - len(quantum)):
            value = value << 6 | sextet
        out += value.to_bytes(3, "big")[: len(quantum) - 1]
    return bytes(out)


# --- the walk -----------------------------------------------------------------------------------


def _fields(
    kind: str, obj: Mapping[str, Any], *, custom: bool = False
) -> Iterator[tuple[str, str, Shape, Any]]:
    """(Go struct, JSON path, shape, value) of each typed field present, in document order
    (a custom resource's metadata is decoded on its own: paths without ``metadata.``)."""
    typed = _TYPED_FIELDS.get(kind, {})
    for key, value in obj.items():
        if key == "metadata" and isinstance(value, dict):
            for meta_key, meta_value in value.items():
                if meta_key in _META_FIELDS:
                    path = meta_key if custom else f"metadata.{meta_key}"
                    yield "ObjectMeta", path, _META_FIELDS[meta_key], meta_value
        elif key in typed:
            yield kind, key, typed[key], value


def _unmarshal(struct: str, path: str, value: Any, go_type: str) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {_json_type(value)} into Go struct field "
        f"{struct}.{path} of type {go_type}"
    )


def decode(kind: str, obj: JSONObject, *, custom: bool = False) -> None:
    """Refuse, as Go's encoding/json would, the first value of the wrong type in a typed field
    of ``obj`` (document order); then normalise ``obj`` in place as the decoded struct would
    be served. ``custom``: a custom resource (unstructured, metadata decoded on its own).
    Raises :class:`DecodeError`."""
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        if custom:
            raise DecodeError(
                f"json: cannot unmarshal {_json_type(meta)} into Go value of type v1.ObjectMeta"
            )
        raise _unmarshal(kind, "metadata", meta, "v1.ObjectMeta")
    for struct, path, shape, value in _fields(kind, obj, custom=custom):
        if value is None:
            continue
        if shape == "string":
            if not isinstance(value, str):
                raise _unmarshal(struct, path, value, "string")
            continue
        element = _ELEMENT[shape]
        if not isinstance(value, dict):
            raise _unmarshal(struct, path, value, f"map[string]{element}")
        for item in value.values():
            if item is not None and not isinstance(item, str):
                raise _unmarshal(struct, path, item, element)
            if shape == "bytes-map" and item is not None:
                go_base64_decode(item)
    _normalise(kind, obj)


def _normalise(kind: str, obj: JSONObject) -> None:
    for holder, field, shape in _present(kind, obj):
        value = holder[field]
        if value is None or value == {}:  # nil, or an empty map (omitempty)
            del holder[field]
        elif shape == "string-map":
            holder[field] = {k: "" if v is None else v for k, v in sorted(value.items())}
        elif shape == "bytes-map":
            holder[field] = {
                k: base64.b64encode(go_base64_decode(v or "")).decode("ascii")
                for k, v in sorted(value.items())
            }


def _present(kind: str, obj: JSONObject) -> Iterator[tuple[JSONObject, str, Shape]]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for field, shape in _META_FIELDS.items():
            if field in meta:
                yield meta, field, shape
    for field, shape in _TYPED_FIELDS.get(kind, {}).items():
        if field in obj:
            yield obj, field, shape


def strategic_patch_error(kind: str, patch: Mapping[str, Any]) -> str | None:
    """What kube's unstructured converter says of a strategic merge patch whose values do not
    fit the typed fields (``None`` when they do): Go struct order (metadata first)."""
    meta = patch.get("metadata")
    order: list[tuple[Shape, Any]] = []
    if isinstance(meta, dict):
        order += [(_META_FIELDS[f], meta[f]) for f in _META_FIELDS if f in meta]
    order += [(s, patch[f]) for f, s in _TYPED_FIELDS.get(kind, {}).items() if f in patch]
    for shape, value in order:
        if value is None:
            continue
        if shape == "string":
            if not isinstance(value, str):
                return _convert_to_string(value)
            continue
        if not isinstance(value, dict):
            return f"cannot restore map from {_go_kind(value)}"
        for item in value.values():
            if item is None:
                continue
            if shape == "string-map" and not isinstance(item, str):
                return _convert_to_string(item)
            if shape == "bytes-map":
                if not isinstance(item, str):
                    return f"cannot restore slice from {_go_kind(item)}"
                try:
                    go_base64_decode(item)
                except DecodeError as exc:
                    return f"error decoding from json: {exc}"
    return None


def _convert_to_string(value: Any) -> str:
    kind = _go_kind(value)
    return f"cannot convert {kind} to string" if kind == "int64" else "unrecognized type: string"


def apply_type_errors(kind: str, config: Mapping[str, Any]) -> list[str]:
    """structured-merge-diff's complaints about an apply configuration's typed fields."""
    errors: list[str] = []
    for _struct, path, shape, value in _fields(kind, config):
        if value is None:
            continue
        if shape == "string":
            if not isinstance(value, str):
                errors.append(f".{path}: expected string, got {_unstructured(value)}")
            continue
        if not isinstance(value, dict):
            errors.append(f".{path}: expected map, got &{{{go_v(value)}}}")
            continue
        errors += [
            f".{path}.{key}: expected string, got {_unstructured(item)}"
            for key, item in value.items()
            if item is not None and not isinstance(item, str)
        ]
    return errors


def _unstructured(value: Any) -> str:
    return f"&value.valueUnstructured{{Value:{_go_sharp_v(value)}}}"


def bytes_error(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The base64 error of the first bytes-map value that is not base64, if any."""
    for _struct, _path, shape, value in _fields(kind, obj):
        if shape != "bytes-map" or not isinstance(value, dict):
            continue
        for item in value.values():
            if isinstance(item, str):
                try:
                    go_base64_decode(item)
                except DecodeError as exc:
                    return str(exc)
    return None


# --- kube's answers -------------------------------------------------------------------------------


def check_body(kind: str, version: str, obj: JSONObject, *, custom: bool = False) -> None:
    """A create or update body: 400 BadRequest when Go's decoder refuses it."""
    try:
        decode(kind, obj, custom=custom)
    except DecodeError as exc:
        raise StatusError(
            400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {exc}'
        ) from exc


def _go_json(obj: Any) -> str:
    """Go's json.Marshal of an unstructured object: compact, keys sorted, HTML escaped."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _patch_invalid(shown: str, why: str) -> StatusError:
    """kube's 422 for a patch whose result does not decode: field ``patch``, no name or kind."""
    text = f"Invalid value: {json.dumps(shown, ensure_ascii=False)}: {why}"
    return StatusError(
        422,
        "Invalid",
        f' "" is invalid: patch: {text}',
        details={"causes": [{"reason": "FieldValueInvalid", "message": text, "field": "patch"}]},
    )


def check_patched(kind: str, *, strategic: bool, patch: Any, patched: JSONObject) -> None:
    """A merge, JSON or strategic merge patch's result: 422 on ``patch`` when kube refuses it
    (a strategic patch is judged by its own values, printed as Go's ``%v``)."""
    if strategic and isinstance(patch, Mapping):
        why = strategic_patch_error(kind, patch)
        if why is not None:
            raise _patch_invalid(go_v(patch), why)
    try:
        decode(kind, patched)
    except DecodeError as exc:
        raise _patch_invalid(_go_json(patched), str(exc)) from exc


def _object_text(config: Mapping[str, Any], group_version: str, kind: str) -> str:
    meta = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {group_version}, Kind={kind}"


def check_apply_config(kind: str, group_version: str, config: Mapping[str, Any]) -> None:
    """An apply configuration with a value of the wrong type: structured-merge-diff's 500
    (``group_version`` as kube prints it: ``/v1`` for the core group)."""
    errors = apply_type_errors(kind, config)
    if not errors:
        return
    text = errors[0] if len(errors) == 1 else "errors:\n" + "\n".join(f"  {e}" for e in errors)
    where = _object_text(config, group_version, kind)
    raise StatusError(500, "", f"failed to create typed patch object ({where}): {text}")


def check_applied(
    kind: str, group_version: str, config: Mapping[str, Any], applied: JSONObject
) -> None:
    """The object an apply produced: base64 that does not decode is a 500, as in kube."""
    why = bytes_error(kind, applied)
    if why is None:
        try:
            decode(kind, applied)  # normalises; the typed check above leaves nothing to refuse
            return
        except DecodeError as exc:
            why = str(exc)
    raise StatusError(
        500,
        "",
        f"failed to convert new object ({_object_text(config, group_version, kind)}) to "
        f"proper version: unable to convert unstructured object to {group_version}, "
        f"Kind={kind}: error decoding from json: {why}",
    )
