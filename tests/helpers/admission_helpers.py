"""AdmissionReview bodies shared by the webhook's and the admin API's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def review_body(
    obj: dict[str, Any] | None = None,
    *,
    uid: str = "6f1a2b3c-0000-4000-8000-000000000001",
    api_version: str = "admission.k8s.io/v1",
    operation: str = "CREATE",
) -> dict[str, Any]:
    pvc = obj if obj is not None else marshal_pvc()
    meta = pvc.get("metadata", {})
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
            "resource": {"group": "", "version": "v1", "resource": "persistentvolumeclaims"},
            "requestKind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
            "namespace": meta.get("namespace", "alice"),
            "name": meta.get("name", ""),
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kubeflow:pipeline-runner"},
            "object": pvc,
            "oldObject": None,
            "dryRun": False,
        },
    }


def marshal_pvc() -> dict[str, Any]:
    pvc: dict[str, Any] = yaml.safe_load((EXAMPLES / "kale-marshal-pvc.yaml").read_text())
    return pvc


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()
