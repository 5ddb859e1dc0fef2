"""AdmissionReview in, AdmissionReview out. Pure: no HTTP, no clients.

Three layers, as in kopf: TypedDicts for the wire format, :func:`review` which reads a
request and builds the response from :mod:`vsphere_kale.policy.storage`, and a thin HTTP edge
(``server.py``) that only decodes, calls, and maps :class:`AdmissionError` to HTTP 400.

This webhook never blocks a request: ``allowed`` is always true. Both
``admission.k8s.io/v1`` and ``v1beta1`` are answered in the version they were asked in
(kube-apiserver rejects a response in another version).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

from vsphere_kale.errors import AdmissionError
from vsphere_kale.policy.storage import MAX_WARNING_LENGTH, StorageDecision, decide_storage_class
from vsphere_kale.settings import Settings

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict, total=False):
    uid: str
    kind: GroupVersionKind
    resource: dict[str, str]
    namespace: str
    name: str
    operation: str
    userInfo: UserInfo
    object: Any
    oldObject: Any
    dryRun: bool


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    patchType: str
    patch: str
    warnings: list[str]
    auditAnnotations: dict[str, str]


class AdmissionReview(TypedDict, total=False):
    apiVersion: str
    kind: str
    request: AdmissionRequest
    response: AdmissionResponse


@dataclass(frozen=True)
class ReviewOutcome:
    """The response to send, and what the HTTP edge logs and counts."""

    response: AdmissionReview
    namespace: str
    name: str
    uid: str
    user: str
    operation: str
    decision: StorageDecision

    @property
    def rewritten(self) -> bool:
        return self.decision.rewrite

    @property
    def from_class(self) -> str | None:
        return self.decision.from_class

    @property
    def to_class(self) -> str | None:
        return self.decision.to_class

    @property
    def reason(self) -> str:
        return self.decision.reason


def _expect(value: object, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        names = {dict: "an object", str: "a string", bool: "a boolean", list: "a list"}
        raise AdmissionError(f"{where} must be {names.get(kind, kind.__name__)}")
    return value


# Precomputed (key, error location) pairs: parse_review runs once per admission call.
_KIND_FIELDS = tuple((k, f"request.kind.{k}") for k in ("group", "version", "kind"))
_OPTIONAL_STRINGS = tuple((k, f"request.{k}") for k in ("namespace", "name"))


def parse_review(body: object) -> tuple[str, AdmissionRequest]:
    """Check the envelope; return (apiVersion, request). Raises AdmissionError."""
    review = _expect(body, dict, "the AdmissionReview")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise AdmissionError(
            f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {api_version!r}"
        )
    if review.get("kind", "AdmissionReview") != "AdmissionReview":
        raise AdmissionError(f"kind must be AdmissionReview, got {review.get('kind')!r}")
    if "request" not in review:
        raise AdmissionError("the AdmissionReview has no request")
    request = _expect(review["request"], dict, "request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionError("request.uid must be a non-empty string")
    kind = _expect(request.get("kind"), dict, "request.kind")
    for key, where in _KIND_FIELDS:
        _expect(kind.get(key), str, where)
    _expect(request.get("operation"), str, "request.operation")
    for key, where in _OPTIONAL_STRINGS:
        if request.get(key) is not None:
            _expect(request[key], str, where)
    user_info = request.get("userInfo")
    if user_info is not None:
        _expect(user_info, dict, "request.userInfo")
        if user_info.get("username") is not None:
            _expect(user_info["username"], str, "request.userInfo.username")
    if request.get("dryRun") is not None:
        _expect(request["dryRun"], bool, "request.dryRun")
    return api_version, request


def _object_namespace(obj: object) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        namespace = obj["metadata"].get("namespace")
        if isinstance(namespace, str):
            return namespace
    return ""


def _object_name(obj: object) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        meta = obj["metadata"]
        for key in ("name", "generateName"):
            if isinstance(meta.get(key), str):
                return str(meta[key])
    return ""


def build_response(api_version: str, uid: str, decision: StorageDecision) -> AdmissionReview:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        # orjson: the patch is encoded on every rewrite, on the API server's critical path.
        response["patch"] = base64.b64encode(orjson.dumps(decision.patch)).decode()
    if decision.warnings:
        response["warnings"] = [w[:MAX_WARNING_LENGTH] for w in decision.warnings]
    if decision.rewrite:
        # kube-apiserver prefixes the key with the webhook's name in the audit event.
        response["auditAnnotations"] = {
            "storage-class-rewrite": f"{decision.from_class or '(default)'} -> {decision.to_class}"
        }
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def review(body: object, settings: Settings) -> ReviewOutcome:
    """Answer one decoded AdmissionReview. Raises AdmissionError for a malformed envelope."""
    api_version, request = parse_review(body)
    obj = request.get("object")
    namespace = request.get("namespace") or _object_namespace(obj)
    kind = request["kind"]
    decision = decide_storage_class(
        obj,
        namespace=namespace,
        operation=request["operation"],
        group=kind["group"],
        version=kind["version"],
        kind=kind["kind"],
        settings=settings,
    )
    return ReviewOutcome(
        response=build_response(api_version, request["uid"], decision),
        namespace=namespace,
        name=request.get("name") or _object_name(obj),
        uid=request["uid"],
        user=(request.get("userInfo") or {}).get("username", ""),
        operation=request["operation"],
        decision=decision,
    )


def build_fail_open(body: object) -> AdmissionReview:
    """``allowed: true`` for an unexpected internal error, echoing what we can of the request.

    Used only when our own code failed: blocking the user's PVC for our bug would be worse
    than a claim on the original class, which status and doctor report.
    """
    api_version = API_VERSIONS[0]
    uid = ""
    if isinstance(body, dict):
        if body.get("apiVersion") in API_VERSIONS:
            api_version = body["apiVersion"]
        request = body.get("request")
        if isinstance(request, dict) and isinstance(request.get("uid"), str):
            uid = request["uid"]
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": True},
    }
