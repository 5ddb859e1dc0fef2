"""Real OpenAPI schemas for the types whose fields users look up (``kubectl explain``).

Only PersistentVolumeClaim so far (with ObjectMeta and what its spec and status refer to):
the claim is what our webhook rewrites and what users debug. The shapes and names follow
core/v1 (``io.k8s.api.core.v1.PersistentVolumeClaim``...), so kubectl prints kube's type
names; the descriptions are short sandbox ones, not kube's text. Every other type keeps an
open schema (``openapi.py``).
"""

from __future__ import annotations

from vsphere_kale.sandbox.types import JSONObject

CORE = "io.k8s.api.core.v1"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _s(description: str, type_: str = "string", **extra: object) -> JSONObject:
    return {"description": description, "type": type_, **extra}


def _ref(name: str, description: str) -> JSONObject:
    # OpenAPI 3 forbids siblings of $ref; kube wraps it in allOf to keep a description.
    return {"description": description, "allOf": [{"$ref": f"#/components/schemas/{name}"}]}


def _strings(description: str) -> JSONObject:
    return {"description": description, "type": "array", "items": {"type": "string", "default": ""}}


def _map(description: str, values: JSONObject | None = None) -> JSONObject:
    return {
        "description": description,
        "type": "object",
        "additionalProperties": values or {"type": "string", "default": ""},
    }


def _list_of(name: str, description: str, **extra: object) -> JSONObject:
    return {
        "description": description,
        "type": "array",
        "items": {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": {}},
        **extra,
    }


PVC_GVK = {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"}


def pvc_schemas() -> dict[str, JSONObject]:
    """components.schemas entries (OpenAPI 3) for PersistentVolumeClaim and its parts."""
    return {
        f"{CORE}.PersistentVolumeClaim": {
            "description": "A user's request for a persistent volume.",
            "type": "object",
            "properties": {
                "apiVersion": _s("Versioned schema of this object: v1."),
                "kind": _s("REST resource this object represents: PersistentVolumeClaim."),
                "metadata": _ref(f"{META}.ObjectMeta", "Standard object metadata."),
                "spec": _ref(
                    f"{CORE}.PersistentVolumeClaimSpec",
                    "What the user asks for: access modes, size, class, source.",
                ),
                "status": _ref(
                    f"{CORE}.PersistentVolumeClaimStatus",
                    "What the claim currently has (read-only for users).",
                ),
            },
            "x-kubernetes-group-version-kind": [PVC_GVK],
        },
        f"{CORE}.PersistentVolumeClaimSpec": {
            "description": "The claim's request. Immutable after creation except "
            "resources.requests and volumeAttributesClassName of a bound claim.",
            "type": "object",
            "properties": {
                "accessModes": {
                    **_strings(
                        "Access modes: ReadWriteOnce, ReadOnlyMany, ReadWriteMany, "
                        "ReadWriteOncePod."
                    ),
                    "x-kubernetes-list-type": "atomic",
                },
                "dataSource": _ref(
                    f"{CORE}.TypedLocalObjectReference",
                    "A VolumeSnapshot or PersistentVolumeClaim to populate the volume from.",
                ),
                "dataSourceRef": _ref(
                    f"{CORE}.TypedObjectReference", "The object to populate the volume from."
                ),
                "resources": _ref(
                    f"{CORE}.VolumeResourceRequirements",
                    "Minimum resources the volume should have; requests.storage is required.",
                ),
                "selector": _ref(f"{META}.LabelSelector", "Label query over volumes to bind."),
                "storageClassName": _s(
                    "Name of the StorageClass; empty means no class, absent means the default."
                ),
                "volumeAttributesClassName": _s("VolumeAttributesClass the claim uses."),
                "volumeMode": _s("Filesystem (default) or Block.", enum=["Block", "Filesystem"]),
                "volumeName": _s("Binding reference to the PersistentVolume."),
            },
        },
        f"{CORE}.VolumeResourceRequirements": {
            "description": "Storage resources a claim asks for.",
            "type": "object",
            "properties": {
                "limits": _map(
                    "Maximum resources allowed.", {"$ref": f"#/components/schemas/{QUANTITY}"}
                ),
                "requests": _map(
                    "Minimum resources required (storage).",
                    {"$ref": f"#/components/schemas/{QUANTITY}"},
                ),
            },
        },
        f"{CORE}.PersistentVolumeClaimStatus": {
            "description": "The observed state of a claim.",
            "type": "object",
            "properties": {
                "accessModes": _strings("Access modes the bound volume has."),
                "allocatedResources": _map(
                    "Resources allocated to the claim.",
                    {"$ref": f"#/components/schemas/{QUANTITY}"},
                ),
                "capacity": _map(
                    "Actual resources of the bound volume.",
                    {"$ref": f"#/components/schemas/{QUANTITY}"},
                ),
                "conditions": _list_of(
                    f"{CORE}.PersistentVolumeClaimCondition",
                    "Current conditions (Resizing...).",
                    **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
                ),
                "phase": _s("Pending, Bound or Lost.", enum=["Bound", "Lost", "Pending"]),
            },
        },
        f"{CORE}.PersistentVolumeClaimCondition": {
            "description": "One condition of a claim.",
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "lastProbeTime": _s("Last time the condition was probed.", format="date-time"),
                "lastTransitionTime": _s("Last status change.", format="date-time"),
                "message": _s("Human-readable detail."),
                "reason": _s("Machine-readable reason."),
                "status": _s("True, False or Unknown."),
                "type": _s("Condition type."),
            },
        },
        f"{CORE}.TypedLocalObjectReference": {
            "description": "A reference to an object in the same namespace.",
            "type": "object",
            "required": ["kind", "name"],
            "properties": {
                "apiGroup": _s("Group of the referenced object."),
                "kind": _s("Kind of the referenced object."),
                "name": _s("Name of the referenced object."),
            },
            "x-kubernetes-map-type": "atomic",
        },
        f"{CORE}.TypedObjectReference": {
            "description": "A reference to an object, possibly in another namespace.",
            "type": "object",
            "required": ["kind", "name"],
            "properties": {
                "apiGroup": _s("Group of the referenced object."),
                "kind": _s("Kind of the referenced object."),
                "name": _s("Name of the referenced object."),
                "namespace": _s("Namespace of the referenced object."),
            },
        },
        QUANTITY: {
            "description": "A fixed-point number with a suffix, such as 1Gi or 500M.",
            "type": "string",
        },
        **_meta_schemas(),
    }


def _meta_schemas() -> dict[str, JSONObject]:
    return {
        f"{META}.ObjectMeta": {
            "description": "Metadata every persisted object has.",
            "type": "object",
            "properties": {
                "annotations": _map("Unstructured key/value data set by tools."),
                "creationTimestamp": _s("When the object was created.", format="date-time"),
                "deletionGracePeriodSeconds": _s(
                    "Seconds allowed for graceful deletion.", "integer", format="int64"
                ),
                "deletionTimestamp": _s("When the object will be deleted.", format="date-time"),
                "finalizers": {
                    **_strings("Must be empty before the object is removed."),
                    "x-kubernetes-list-type": "set",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "generateName": _s("Prefix for a server-generated name."),
                "generation": _s(
                    "Sequence number of the desired state.", "integer", format="int64"
                ),
                "labels": _map("Key/value pairs to organise and select objects."),
                "managedFields": _list_of(
                    f"{META}.ManagedFieldsEntry", "Which manager owns which fields."
                ),
                "name": _s("Unique name within the namespace."),
                "namespace": _s("Namespace of the object."),
                "ownerReferences": _list_of(
                    f"{META}.OwnerReference",
                    "Objects this one depends on.",
                    **{
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["uid"],
                        "x-kubernetes-patch-merge-key": "uid",
                        "x-kubernetes-patch-strategy": "merge",
                    },
                ),
                "resourceVersion": _s("Opaque version for optimistic concurrency and watches."),
                "selfLink": _s("Deprecated; not set."),
                "uid": _s("Unique in time and space."),
            },
        },
        f"{META}.OwnerReference": {
            "description": "An owning object.",
            "type": "object",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": _s("API version of the owner."),
                "blockOwnerDeletion": _s("Foreground deletion waits for this.", "boolean"),
                "controller": _s("True for the managing controller.", "boolean"),
                "kind": _s("Kind of the owner."),
                "name": _s("Name of the owner."),
                "uid": _s("UID of the owner."),
            },
            "x-kubernetes-map-type": "atomic",
        },
        f"{META}.ManagedFieldsEntry": {
            "description": "A manager and the fields it owns.",
            "type": "object",
            "properties": {
                "apiVersion": _s("Version the fields are in."),
                "fieldsType": _s("FieldsV1."),
                "fieldsV1": {"description": "The owned fields.", "type": "object"},
                "manager": _s("Who manages the fields."),
                "operation": _s("Apply or Update."),
                "subresource": _s("Subresource written, if any."),
                "time": _s("Last change by this manager.", format="date-time"),
            },
        },
        f"{META}.LabelSelector": {
            "description": "A label query.",
            "type": "object",
            "properties": {
                "matchExpressions": _list_of(
                    f"{META}.LabelSelectorRequirement", "Requirements, ANDed."
                ),
                "matchLabels": _map("Exact key/value matches, ANDed."),
            },
            "x-kubernetes-map-type": "atomic",
        },
        f"{META}.LabelSelectorRequirement": {
            "description": "One selector requirement.",
            "type": "object",
            "required": ["key", "operator"],
            "properties": {
                "key": _s("Label key."),
                "operator": _s("In, NotIn, Exists or DoesNotExist."),
                "values": _strings("Values for In and NotIn."),
            },
        },
    }


def to_swagger_v2(schemas: dict[str, JSONObject]) -> dict[str, JSONObject]:
    """The same schemas as OpenAPI v2 ``definitions`` (refs rewritten, allOf unwrapped)."""

    def convert(node: object) -> object:
        if isinstance(node, dict):
            if "allOf" in node and len(node["allOf"]) == 1:
                merged = {k: v for k, v in node.items() if k != "allOf"}
                merged.update(node["allOf"][0])
                node = merged
            assert isinstance(node, dict)
            return {
                k: (
                    v.replace("#/components/schemas/", "#/definitions/")
                    if k == "$ref" and isinstance(v, str)
                    else convert(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return {name: dict(convert(schema)) for name, schema in schemas.items()}  # type: ignore[call-overload]
