"""PATCH bodies: JSON merge patch, JSON patch, strategic merge patch, and simple server-side apply.

Strategic merge patch (SMP) is Kubernetes' own format; kube-apiserver drives it from Go struct
tags. We support what the kubernetes client and ``kubectl apply/label/annotate/patch`` send for
the objects the sandbox serves:

- maps merge recursively; ``null`` deletes a key; ``{"$patch": "replace"}`` replaces a map,
  ``{"$patch": "delete"}`` deletes it;
- lists merge by key where Kubernetes does (:data:`MERGE_KEYS`: containers/env/volumes/
  webhooks/imagePullSecrets/... by ``name``, container ports by ``containerPort``, service
  ports by ``port``, volumeMounts by ``mountPath``, ownerReferences by ``uid``, conditions by
  ``type``); an element ``{"<key>": v, "$patch": "delete"}`` removes one; a lone
  ``{"$patch": "replace"}`` element replaces the list;
- ``metadata.finalizers`` merges as a set; ``$deleteFromPrimitiveList/<field>`` removes values;
- every other list (RBAC ``rules`` and ``subjects``, ``accessModes``, ...) is replaced;
- ``$setElementOrder/<field>`` orders the merged list; ``$retainKeys`` drops the keys it
  does not list.

Any other ``$`` directive is refused (422), never ignored. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonpatch
import yaml

from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.types import JSONObject

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

_PRIMITIVE = "<primitive-set>"
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

#: list field -> merge key, as the patchMergeKey tags of k8s.io/api for the fields we serve.
MERGE_KEYS: Mapping[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "secrets": "name",
    "webhooks": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}


def _unprocessable(message: str) -> StatusError:
    return StatusError(422, "Invalid", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type or 'none'}) - "
        f"accepted media types include: {', '.join(PATCH_TYPES)}",
    )


def parse_patch_body(content_type: str, body: bytes) -> Any:
    """Decode a PATCH body; 400 BadRequest when it is not valid JSON/YAML."""
    try:
        if content_type == APPLY_PATCH:
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as exc:
        raise StatusError(400, "BadRequest", f"error decoding patch: {exc}") from exc


def apply_patch(content_type: str, target: JSONObject, patch: Any) -> JSONObject:
    """``target`` with ``patch`` applied (a new object). StatusError on failure."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise StatusError(400, "BadRequest", "a merge patch must be a JSON object")
    if content_type in (MERGE_PATCH, APPLY_PATCH):
        result = merge_patch(target, patch)
    elif content_type == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(target, patch)
    else:
        raise unsupported_media_type(content_type)
    if not isinstance(result, dict):
        raise _unprocessable("the patch does not produce an object")
    return result


# --- RFC 7386 ------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 ------------------------------------------------------------------------------


def json_patch(target: JSONObject, ops: Any) -> JSONObject:
    if not isinstance(ops, list):
        raise StatusError(400, "BadRequest", "a JSON patch must be a list of operations")
    try:
        result = jsonpatch.JsonPatch(ops).apply(target)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise _unprocessable(
            f"the server rejected our request due to an error in our "
            f"request: testing value failed: {exc}"
        ) from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise _unprocessable(
            f"the server rejected our request due to an error in our request: {exc}"
        ) from exc
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise StatusError(400, "BadRequest", f"invalid JSON patch: {exc}") from exc
    if not isinstance(result, dict):
        raise _unprocessable("the patch does not produce an object")
    return result


# --- strategic merge patch -----------------------------------------------------------------

_DELETE = object()  # a map asked to be deleted with {"$patch": "delete"}


def strategic_merge_patch(target: JSONObject, patch: JSONObject) -> JSONObject:
    result = _smp_map(target, patch, parent="")
    if result is _DELETE:
        raise _unprocessable("$patch: delete at the top level is not supported")
    assert isinstance(result, dict)
    return result


def _merge_key(parent: str, field: str) -> str | None:
    if field == "finalizers" and parent == "metadata":
        return _PRIMITIVE
    if field == "ports":
        return "containerPort" if parent in _CONTAINER_LISTS else "port"
    return MERGE_KEYS.get(field)


def _smp_map(original: Any, patch: Mapping[str, Any], *, parent: str) -> Any:
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip(patch)
    if directive not in (None, "merge"):
        raise _unprocessable(f"unknown patch directive $patch: {directive!r}")
    result: dict[str, Any] = dict(original) if isinstance(original, dict) else {}
    retain = patch.pop("$retainKeys", None)
    orders: dict[str, Any] = {}
    for key in [k for k in patch if k.startswith("$")]:
        value = patch.pop(key)
        if key.startswith("$setElementOrder/"):
            orders[key.partition("/")[2]] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.partition("/")[2]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
        else:
            raise _unprocessable(f"unsupported strategic merge patch directive {key!r}")
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value, parent=key)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, parent=parent, field=key)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list) and isinstance(order, list):
            result[field] = _ordered(result[field], order, _merge_key(parent, field))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(original: Any, patch: list[Any], *, parent: str, field: str) -> list[Any]:
    key = _merge_key(parent, field)
    if key is None:
        return [_strip(v) for v in patch]
    current = list(original) if isinstance(original, list) else []
    if key == _PRIMITIVE:
        return current + [v for v in patch if v not in current]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    for item in patch:
        if not isinstance(item, dict):
            raise _unprocessable(f"{field}: list elements must be objects merged by {key}")
        wanted = item.get(key)
        index = next(
            (i for i, v in enumerate(current) if isinstance(v, dict) and v.get(key) == wanted),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
            continue
        merged = _smp_map(current[index] if index is not None else {}, item, parent=field)
        if index is None:
            current.append(merged)
        else:
            current[index] = merged
    return current


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        if key and key != _PRIMITIVE and isinstance(item, dict):
            return item.get(key)
        return item

    wanted = [ident(o) for o in order]
    rank = {json.dumps(v, sort_keys=True): i for i, v in enumerate(wanted)}
    return sorted(items, key=lambda it: rank.get(json.dumps(ident(it), sort_keys=True), len(rank)))


def _strip(value: Any) -> Any:
    """Drop directives from a value that replaces (not merges into) the original."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
