"""A minimal OpenAPI v3 so ``kubectl create -f`` / ``apply -f`` hand validation to the server.

kubectl downloads ``/openapi/v3`` and the document of the object's group-version. When the
create/update/patch operations carry ``x-kubernetes-action``,
``x-kubernetes-group-version-kind`` and a ``fieldValidation`` query parameter, kubectl skips
client-side schema validation and sends ``fieldValidation=Strict``; the server then checks
fields (see ``server.KNOWN_TOP_LEVEL_FIELDS``). Schemas are open objects: we do not ship the
real Kubernetes schemas, so kubectl's own OpenAPI-based features (``kubectl explain``, client
side ``--validate``) see no fields -- except PersistentVolumeClaim, which has its real
shape (``schemas.py``), so ``kubectl explain pvc.spec`` works.

``/openapi/v2`` is served as JSON (Swagger 2.0 with the same definitions). kubectl asks for it
only in protobuf, which the sandbox does not encode: that request is 406 NotAcceptable.
"""

from __future__ import annotations

import hashlib
import json

from vsphere_kale.sandbox.resources import GroupVersion, Registry, ResourceType
from vsphere_kale.sandbox.schemas import CORE, PVC_GVK, pvc_schemas, to_swagger_v2
from vsphere_kale.sandbox.types import JSONObject


def _gv_key(gv: GroupVersion) -> str:
    return f"apis/{gv.group}/{gv.version}" if gv.group else f"api/{gv.version}"


def index(registry: Registry) -> JSONObject:
    paths: JSONObject = {}
    for gv in registry.group_versions():
        key = _gv_key(gv)
        digest = (
            hashlib.sha256(
                json.dumps(group_version_document(registry, key), sort_keys=True).encode()
            )
            .hexdigest()[:32]
            .upper()
        )
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


def _schema_name(rt: ResourceType, version: str) -> str:
    group = rt.group or "core"
    return f"io.vsphere-kale.sandbox.{group}.{version}.{rt.kind}"


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Ignore, Warn or Strict: how the server treats unknown fields.",
    "schema": {"type": "string", "uniqueItems": True},
}
_DRY_RUN = {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
_FIELD_MANAGER = {
    "name": "fieldManager",
    "in": "query",
    "schema": {"type": "string", "uniqueItems": True},
}


def group_version_document(registry: Registry, key: str) -> JSONObject | None:
    """The OpenAPI document of ``api/v1`` or ``apis/<group>/<version>``; None if not served."""
    parts = key.split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        gv = GroupVersion("", parts[1])
    elif parts[:1] == ["apis"] and len(parts) == 3:
        gv = GroupVersion(parts[1], parts[2])
    else:
        return None
    types = registry.types_in(gv.group, gv.version)
    if not types:
        return None
    paths: JSONObject = {}
    schemas: JSONObject = {}
    for rt in types:
        gvk = {"group": rt.group, "version": gv.version, "kind": rt.kind}
        if gvk == PVC_GVK:
            # A real schema: ``kubectl explain pvc.spec`` reads it.
            schema_name = f"{CORE}.PersistentVolumeClaim"
            schemas.update(pvc_schemas())
        else:
            schema_name = _schema_name(rt, gv.version)
            schemas[schema_name] = {
                "type": "object",
                "description": f"{rt.kind} (sandbox: an open schema; the server validates).",
                # No x-kubernetes-group-version-kind here on purpose: with it, ``kubectl
                # apply`` tries to compute its patch from this (open) schema, fails ("unable
                # to find api field") and warns before falling back to its built-in types.
                "x-kubernetes-preserve-unknown-fields": True,
            }
        ref = {"$ref": f"#/components/schemas/{schema_name}"}
        body = {"content": {"application/json": {"schema": ref}}, "required": True}
        prefix = f"/{_gv_key(gv)}"
        collection = (
            f"{prefix}/namespaces/{{namespace}}/{rt.plural}"
            if rt.namespaced
            else f"{prefix}/{rt.plural}"
        )

        def op(
            action: str,
            op_id: str,
            *,
            rt: ResourceType = rt,
            body: JSONObject = body,
            ref: JSONObject = ref,
        ) -> JSONObject:
            return {
                "operationId": f"{op_id}{rt.kind}",
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {
                    "group": rt.group,
                    "version": gv.version,
                    "kind": rt.kind,
                },
                "parameters": [_FIELD_VALIDATION, _DRY_RUN, _FIELD_MANAGER],
                "requestBody": body,
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
                },
            }

        paths[collection] = {"post": op("post", "create")}
        if rt.virtual:
            continue
        paths[collection]["get"] = {
            "operationId": f"list{rt.kind}",
            "x-kubernetes-action": "list",
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{collection}/{{name}}"] = {
            "get": {
                "operationId": f"read{rt.kind}",
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
                },
            },
            "put": op("put", "replace"),
            "patch": {
                **op("patch", "patch"),
                "requestBody": {
                    "content": {
                        t: {"schema": {"type": "object"}}
                        for t in (
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/strategic-merge-patch+json",
                            "application/apply-patch+yaml",
                        )
                    },
                    "required": True,
                },
            },
            "delete": {
                "operationId": f"delete{rt.kind}",
                "x-kubernetes-action": "delete",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (vsphere-kale sandbox)", "version": registry.git_version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def swagger_v2(registry: Registry) -> JSONObject:
    """``/openapi/v2`` as JSON: the real definitions we have, no paths."""
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (vsphere-kale sandbox)", "version": registry.git_version},
        "paths": {},
        "definitions": to_swagger_v2(pvc_schemas()),
    }
