"""Kubeflow's Profile CRD, registered through the API where the server does not serve
Profiles already (a real kube-apiserver; the embedded sandbox serves them built in)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from vsphere_kale.errors import KubeConflict, KubeError
from vsphere_kale.playground.objects import ApiObjects
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

CRDS = ResourceRef("apiextensions.k8s.io", "customresourcedefinitions")
PROFILE_CRD_NAME = "profiles.kubeflow.org"


def _profile_schema() -> JSONObject:
    """Profile's openAPIV3Schema, with the fields of Kubeflow's own CRD (profile-controller
    ``config/crd/bases/kubeflow.org_profiles.yaml``): spec.owner (an RBAC subject),
    spec.plugins, spec.resourceQuotaSpec, status.conditions."""
    string = {"type": "string"}
    quantity = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    return {
        "type": "object",
        "description": "Profile: one user's namespace and the access to it.",
        "properties": {
            "apiVersion": string,
            "kind": string,
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "owner": {
                        "type": "object",
                        "description": "The RBAC subject that owns the profile namespace.",
                        "required": ["kind", "name"],
                        "x-kubernetes-map-type": "atomic",
                        "properties": {
                            "apiGroup": string,
                            "kind": string,
                            "name": string,
                            "namespace": string,
                        },
                    },
                    "plugins": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "apiVersion": string,
                                "kind": string,
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        },
                    },
                    "resourceQuotaSpec": {
                        "type": "object",
                        "description": "A ResourceQuota spec applied to the profile namespace.",
                        "properties": {
                            "hard": {"type": "object", "additionalProperties": quantity},
                            "scopeSelector": {
                                "type": "object",
                                "x-kubernetes-map-type": "atomic",
                                "properties": {
                                    "matchExpressions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["operator", "scopeName"],
                                            "properties": {
                                                "operator": string,
                                                "scopeName": string,
                                                "values": {"type": "array", "items": string},
                                            },
                                        },
                                    }
                                },
                            },
                            "scopes": {"type": "array", "items": string},
                        },
                    },
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "conditions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"message": string, "status": string, "type": string},
                        },
                    }
                },
            },
        },
    }


def build_profile_crd() -> JSONObject:
    """The ``profiles.kubeflow.org`` CRD: cluster-scoped, v1 stored, v1beta1 served too
    (same schema, no conversion webhook), a status subresource, as Kubeflow ships it."""
    versions: list[JSONObject] = [
        {
            "name": version,
            "served": True,
            "storage": version == "v1",
            "schema": {"openAPIV3Schema": _profile_schema()},
            "subresources": {"status": {}},
        }
        for version in ("v1", "v1beta1")
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": PROFILE_CRD_NAME},
        "spec": {
            "group": "kubeflow.org",
            "names": {
                "kind": "Profile",
                "listKind": "ProfileList",
                "plural": "profiles",
                "singular": "profile",
            },
            "scope": "Cluster",
            "versions": versions,
        },
    }


def _established(crd: Mapping[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def apply_profile_crd(objects: ApiObjects, *, timeout: float = 30.0) -> str:
    """Make ``kubeflow.org/v1`` profiles served; ``"built-in"``, ``"present"`` or ``"created"``.

    The embedded sandbox serves Profiles as a built-in type (it has no CRDs); a real
    kube-apiserver gets the CRD, and we wait until it is Established and in discovery, so
    the next Profile create does not race the CRD's registration.
    """
    if objects.get_object(CRDS, None, PROFILE_CRD_NAME) is None:
        if objects.serves("kubeflow.org", "v1", "profiles"):
            return "built-in"
        outcome = "created"
        try:
            objects.create_object(CRDS, None, build_profile_crd())
        except KubeConflict:
            outcome = "present"
    else:
        outcome = "present"
    deadline = time.monotonic() + timeout
    while not (
        _established(objects.get_object(CRDS, None, PROFILE_CRD_NAME))
        and objects.serves("kubeflow.org", "v1", "profiles")
    ):
        if time.monotonic() >= deadline:
            raise KubeError(
                f"the {PROFILE_CRD_NAME} CRD was not established within {timeout:g} s; "
                "check the API server's log"
            )
        time.sleep(0.05)
    return outcome
