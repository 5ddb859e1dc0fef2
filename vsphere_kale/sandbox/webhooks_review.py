"""Admission webhooks in the sandbox, the pure half: which webhooks match a request, the
AdmissionReview sent, and reading the answer (its uid, its JSONPatch, a denial).

The calls themselves are :class:`vsphere_kale.sandbox.webhooks.WebhookDispatcher`'s; every
name here is importable from :mod:`vsphere_kale.sandbox.webhooks` as well.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from vsphere_kale.sandbox.rbac_rules import object_meta
from vsphere_kale.sandbox.types import (
    AdmissionAttributes,
    AdmissionRejected,
    JSONObject,
    UserInfo,
)

DEFAULT_TIMEOUT_SECONDS = 10
#: Response bodies above this are refused; kube-apiserver's limit is 3 MiB as well.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024

OPTIONS_KIND = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


class WebhookCallError(Exception):
    """Calling a webhook failed; ``failurePolicy`` decides what that means."""


def object_labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    labels = object_meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


# --- matching (pure) ----------------------------------------------------------------------


def rule_matches(rule: Mapping[str, Any], attrs: AdmissionAttributes) -> bool:
    """One RuleWithOperations against a request (kube's ``rules.Matcher``)."""

    def has(field: str, value: str) -> bool:
        values = rule.get(field) or []
        return "*" in values or value in values

    if not (
        has("operations", attrs.operation)
        and has("apiGroups", attrs.group)
        and has("apiVersions", attrs.version)
    ):
        return False
    resource_ok = False
    for entry in rule.get("resources") or []:
        resource, _, subresource = str(entry).partition("/")
        # "*" alone means every resource but no subresource; "pods/*" pods and every
        # subresource of pods (kube's matcher lets "*" match the empty subresource too).
        if resource in ("*", attrs.plural) and subresource in ("*", attrs.subresource):
            resource_ok = True
            break
    if not resource_ok:
        return False
    scope = rule.get("scope") or "*"
    is_namespace = attrs.group == "" and attrs.plural == "namespaces"
    if scope == "Namespaced":
        return not is_namespace and bool(attrs.namespace)
    if scope == "Cluster":
        return is_namespace or not attrs.namespace
    return True


@dataclass(frozen=True)
class Webhook:
    """One entry of a MutatingWebhookConfiguration, with defaults applied."""

    configuration: str
    name: str
    spec: Mapping[str, Any]

    @property
    def failure_policy(self) -> str:
        return str(self.spec.get("failurePolicy") or "Fail")

    @property
    def timeout_seconds(self) -> int:
        value = self.spec.get("timeoutSeconds")
        return int(value) if isinstance(value, int) and value > 0 else DEFAULT_TIMEOUT_SECONDS

    @property
    def side_effects(self) -> str:
        return str(self.spec.get("sideEffects") or "Unknown")

    @property
    def reinvoke_if_needed(self) -> bool:
        return self.spec.get("reinvocationPolicy") == "IfNeeded"

    @property
    def review_version(self) -> str:
        """The AdmissionReview version to send: v1 if accepted, else v1beta1 ("" if neither)."""
        versions = self.spec.get("admissionReviewVersions") or ["v1"]
        for version in ("v1", "v1beta1"):
            if version in versions:
                return version
        return ""


def webhooks_of(configurations: list[JSONObject]) -> list[Webhook]:
    """Every webhook, in kube's call order (configuration name, then list order)."""
    ordered = sorted(configurations, key=lambda c: str(object_meta(c).get("name", "")))
    return [
        Webhook(str(object_meta(config).get("name", "")), str(hook.get("name", "")), hook)
        for config in ordered
        for hook in config.get("webhooks") or []
        if isinstance(hook, Mapping)
    ]


def build_review(
    attrs: AdmissionAttributes,
    obj: JSONObject | None,
    old_obj: JSONObject | None,
    *,
    uid: str,
    version: str = "v1",
) -> JSONObject:
    """The AdmissionReview request kube-apiserver would send for this write."""
    kind = {"group": attrs.group, "version": attrs.version, "kind": attrs.kind}
    resource = {"group": attrs.group, "version": attrs.version, "resource": attrs.plural}
    request: JSONObject = {
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": attrs.name,
        "namespace": attrs.namespace,
        "operation": attrs.operation,
        "userInfo": _user_json(attrs.user),
        "object": obj if attrs.operation != "DELETE" else None,
        "oldObject": old_obj if attrs.operation != "CREATE" else None,
        "dryRun": attrs.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": OPTIONS_KIND.get(attrs.operation, "")},
    }
    if attrs.subresource:
        request["subResource"] = attrs.subresource
        request["requestSubResource"] = attrs.subresource
    return {
        "apiVersion": f"admission.k8s.io/{version}",
        "kind": "AdmissionReview",
        "request": request,
    }


def _user_json(user: UserInfo) -> JSONObject:
    out: JSONObject = {"username": user.username, "groups": list(user.groups)}
    if user.uid:
        out["uid"] = user.uid
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out


def denial(webhook: str, status: Mapping[str, Any] | None) -> AdmissionRejected:
    """kube's ``webhookerrors.ToStatusErr``: the webhook's code (at least 400) and message."""
    status = status or {}
    code = status.get("code")
    code = code if isinstance(code, int) and code >= 400 else 400
    denied_by = f'admission webhook "{webhook}" denied the request'
    if status.get("message"):
        message = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied_by}: {status['reason']}"
    else:
        message = f"{denied_by} without explanation"
    return AdmissionRejected(code, str(status.get("reason") or ""), message)


def check_response(body: bytes, *, uid: str, version: str) -> Mapping[str, Any]:
    try:
        review = json.loads(body)
    except ValueError as exc:
        raise WebhookCallError(f"received invalid webhook response: {exc}") from exc
    if not isinstance(review, Mapping) or not isinstance(review.get("response"), Mapping):
        raise WebhookCallError(
            "received invalid webhook response: no response in the AdmissionReview"
        )
    expected = f"admission.k8s.io/{version}"
    if version == "v1" and review.get("apiVersion") != expected:
        raise WebhookCallError(
            f"expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got "
            f"{review.get('apiVersion')}, Kind={review.get('kind')}"
        )
    answer = review["response"]
    assert isinstance(answer, Mapping)
    if answer.get("uid") != uid:
        raise WebhookCallError(f"expected response.uid={uid}, got {answer.get('uid')}")
    return answer


def apply_webhook_patch(webhook: str, obj: JSONObject, patch: Any, patch_type: Any) -> JSONObject:
    # A bad patch is the webhook's bug, not a call failure: kube answers 500 whatever the
    # failurePolicy says.
    if patch_type != "JSONPatch":
        raise AdmissionRejected(
            500,
            "InternalError",
            f'Internal error occurred: webhook "{webhook}" returned a patch with patchType '
            f"{patch_type!r}; only JSONPatch is supported",
        )
    try:
        operations = json.loads(base64.b64decode(str(patch)))
        patched = jsonpatch.apply_patch(obj, operations)
    except (
        ValueError,
        binascii.Error,
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
    ) as exc:
        raise AdmissionRejected(
            500,
            "InternalError",
            f'Internal error occurred: webhook "{webhook}": bad JSONPatch: {exc}',
        ) from exc
    if not isinstance(patched, dict):
        raise AdmissionRejected(
            500,
            "InternalError",
            f'Internal error occurred: webhook "{webhook}": patch replaced the object',
        )
    return patched
