"""Decode the few protobuf request bodies kubectl sends, into the JSON the server works on.

kubectl's built-in generators (``kubectl create namespace``, ``create rolebinding``,
``create configmap/secret/serviceaccount``, ``auth can-i``) post with
``Content-Type: application/vnd.kubernetes.protobuf`` and client-go does not fall back to
JSON on a 415. Kubernetes wraps the message in a ``runtime.Unknown`` envelope after the
magic ``k8s\\0`` (https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding).
We decode the envelope and then the message with a small field table per kind, covering
the fields those generators set. A kind we do not know fails with a clear 415.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.types import JSONObject

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A schema maps field number -> (json name, type). A type is "string", "bytes", "int",
# "bool", a nested schema, ("map", value type) or ("list", item type).
FieldType = Union[str, "Schema", tuple[str, Any]]
Schema = Mapping[int, tuple[str, Any]]

_OWNER_REF: Schema = {
    5: ("apiVersion", "string"),
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("list", _OWNER_REF)),
    14: ("finalizers", ("list", "string")),
}
_SUBJECT: Schema = {
    1: ("kind", "string"),
    2: ("apiGroup", "string"),
    3: ("name", "string"),
    4: ("namespace", "string"),
}
_ROLE_REF: Schema = {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")}
_POLICY_RULE: Schema = {
    1: ("verbs", ("list", "string")),
    2: ("apiGroups", ("list", "string")),
    3: ("resources", ("list", "string")),
    4: ("resourceNames", ("list", "string")),
    5: ("nonResourceURLs", ("list", "string")),
}
_LABEL_SELECTOR: Schema = {1: ("matchLabels", ("map", "string"))}
_RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "string"),
    2: ("verb", "string"),
    3: ("group", "string"),
    4: ("version", "string"),
    5: ("resource", "string"),
    6: ("subresource", "string"),
    7: ("name", "string"),
}
_NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "string"), 2: ("verb", "string")}
_LOCAL_OBJECT_REF: Schema = {1: ("name", "string")}
_OBJECT_REF: Schema = {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string")}

SCHEMAS: Mapping[str, Schema] = {
    "Namespace": {
        1: ("metadata", _OBJECT_META),
        2: ("spec", {1: ("finalizers", ("list", "string"))}),
    },
    "ConfigMap": {
        1: ("metadata", _OBJECT_META),
        2: ("data", ("map", "string")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", _OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("stringData", ("map", "string")),
        5: ("immutable", "bool"),
    },
    "ServiceAccount": {
        1: ("metadata", _OBJECT_META),
        2: ("secrets", ("list", _OBJECT_REF)),
        3: ("imagePullSecrets", ("list", _LOCAL_OBJECT_REF)),
        4: ("automountServiceAccountToken", "bool"),
    },
    "Role": {1: ("metadata", _OBJECT_META), 2: ("rules", ("list", _POLICY_RULE))},
    "ClusterRole": {
        1: ("metadata", _OBJECT_META),
        2: ("rules", ("list", _POLICY_RULE)),
        3: ("aggregationRule", {1: ("clusterRoleSelectors", ("list", _LABEL_SELECTOR))}),
    },
    "RoleBinding": {
        1: ("metadata", _OBJECT_META),
        2: ("subjects", ("list", _SUBJECT)),
        3: ("roleRef", _ROLE_REF),
    },
    "ClusterRoleBinding": {
        1: ("metadata", _OBJECT_META),
        2: ("subjects", ("list", _SUBJECT)),
        3: ("roleRef", _ROLE_REF),
    },
    # kubectl auth can-i --list / kubectl auth whoami
    "SelfSubjectRulesReview": {
        1: ("metadata", _OBJECT_META),
        2: ("spec", {1: ("namespace", "string")}),
    },
    "SelfSubjectReview": {1: ("metadata", _OBJECT_META)},
    "SelfSubjectAccessReview": {
        1: ("metadata", _OBJECT_META),
        2: (
            "spec",
            {
                1: ("resourceAttributes", _RESOURCE_ATTRIBUTES),
                2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES),
            },
        ),
    },
}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= len(self.data):
                raise ValueError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def fields(self) -> list[tuple[int, int, Any]]:
        out: list[tuple[int, int, Any]] = []
        while self.pos < len(self.data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            value: Any
            if wire == 0:
                value = self.varint()
            elif wire == 2:
                length = self.varint()
                value = self.data[self.pos : self.pos + length]
                if len(value) != length:
                    raise ValueError("truncated field")
                self.pos += length
            elif wire == 1:
                value, self.pos = self.data[self.pos : self.pos + 8], self.pos + 8
            elif wire == 5:
                value, self.pos = self.data[self.pos : self.pos + 4], self.pos + 4
            else:
                raise ValueError(f"unsupported wire type {wire}")
            out.append((number, wire, value))
        return out


def _scalar(kind: Any, value: Any) -> Any:
    if kind == "string":
        return bytes(value).decode("utf-8")
    if kind == "bytes":
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    if isinstance(kind, Mapping):
        return decode_message(bytes(value), kind)
    raise ValueError(f"unknown field type {kind!r}")


def decode_message(data: bytes, schema: Schema) -> JSONObject:
    out: JSONObject = {}
    for number, _wire, value in _Reader(data).fields():
        if number not in schema:
            continue  # status and fields no generator sets
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = {n: v for n, _, v in _Reader(bytes(value)).fields()}
            key = bytes(entry.get(1, b"")).decode("utf-8")
            out.setdefault(name, {})[key] = _scalar(kind[1], entry.get(2, b""))
        elif isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_scalar(kind[1], value))
        else:
            decoded = _scalar(kind, value)
            # gogo-protobuf writes every non-pointer string/int, empty or not; JSON omits them.
            if decoded == "" or (kind == "int" and decoded == 0):
                continue
            out[name] = decoded
    return out


def decode_body(body: bytes) -> JSONObject:
    """A ``k8s\\0``-prefixed protobuf body as a JSON object; StatusError 415 if unsupported."""
    if not body.startswith(MAGIC):
        raise StatusError(400, "BadRequest", "protobuf body without the k8s magic prefix")
    try:
        envelope = {n: v for n, _, v in _Reader(body[len(MAGIC) :]).fields()}
        type_meta = {
            n: bytes(v).decode() for n, _, v in _Reader(bytes(envelope.get(1, b""))).fields()
        }
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        schema = SCHEMAS.get(kind)
        if schema is None:
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"the sandbox decodes protobuf only for {', '.join(sorted(SCHEMAS))}, not "
                f"{kind or 'this object'}; send JSON (Content-Type: application/json)",
            )
        obj = decode_message(bytes(envelope.get(2, b"")), schema)
    except ValueError as exc:
        raise StatusError(400, "BadRequest", f"malformed protobuf body: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
