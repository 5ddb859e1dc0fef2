"""SubjectAccessReview and SelfSubjectRulesReview bodies, and the sentence of a 403, for the
sandbox's authorizer (:mod:`vsphere_kale.sandbox.rbac`, which re-exports these names).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from vsphere_kale.errors import KubeError
from vsphere_kale.sandbox.rbac_rules import (
    Rule,
    object_meta,
)
from vsphere_kale.sandbox.types import (
    Attributes,
    Decision,
    JSONObject,
    UserInfo,
)

# --- access reviews -----------------------------------------------------------------------

_REVIEW_KINDS = ("SubjectAccessReview", "LocalSubjectAccessReview", "SelfSubjectAccessReview")


def _invalid(kind: str, message: str) -> KubeError:
    return KubeError(
        f"{kind}.authorization.k8s.io is invalid: {message}", status=422, reason="Invalid"
    )


def attributes_from_review(body: Mapping[str, Any], requesting_user: UserInfo) -> Attributes:
    """The Attributes a review asks about; ``KubeError`` (422 Invalid) when malformed.

    SelfSubjectAccessReview asks about the requester; the other kinds name a user and/or
    groups in ``spec`` (kube rejects a SubjectAccessReview with neither).
    """
    kind = str(body.get("kind") or "")
    spec_in = body.get("spec")
    if not kind:
        # Clients may omit kind (the URL says it); a review naming nobody is about the
        # requester, which is what only a SelfSubjectAccessReview may be.
        named = isinstance(spec_in, Mapping) and (spec_in.get("user") or spec_in.get("groups"))
        kind = "SubjectAccessReview" if named else "SelfSubjectAccessReview"
    if kind not in _REVIEW_KINDS:
        raise _invalid(kind, f"kind must be one of {', '.join(_REVIEW_KINDS)}")
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise _invalid(kind, "spec: Required value")
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if bool(resource) == bool(non_resource):
        raise _invalid(
            kind,
            "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes "
            "or resourceAttributes must be specified",
        )
    if kind == "SelfSubjectAccessReview":
        user = requesting_user
    else:
        username = str(spec.get("user") or "")
        groups = tuple(str(g) for g in spec.get("groups") or [])
        if not username and not groups:
            raise _invalid(
                kind, "spec.user: Invalid value: at least one of user or group must be specified"
            )
        extra = {str(k): tuple(str(v) for v in vs) for k, vs in (spec.get("extra") or {}).items()}
        user = UserInfo(username, uid=str(spec.get("uid") or ""), groups=groups, extra=extra)
    if kind == "LocalSubjectAccessReview":
        namespace = object_meta(body).get("namespace", "")
        if not isinstance(resource, Mapping) or resource.get("namespace", "") != namespace:
            raise _invalid(kind, "spec.resourceAttributes.namespace: must match metadata.namespace")
    if isinstance(resource, Mapping):
        return Attributes(
            user=user,
            verb=str(resource.get("verb") or ""),
            api_group=str(resource.get("group") or ""),
            api_version=str(resource.get("version") or ""),
            resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            namespace=str(resource.get("namespace") or ""),
            name=str(resource.get("name") or ""),
        )
    assert isinstance(non_resource, Mapping)
    return Attributes(
        user=user,
        verb=str(non_resource.get("verb") or ""),
        path=str(non_resource.get("path") or ""),
    )


def build_review_response(body: Mapping[str, Any], decision: Decision) -> JSONObject:
    response: JSONObject = json.loads(json.dumps(dict(body)))
    response.setdefault("apiVersion", "authorization.k8s.io/v1")
    response.setdefault("kind", "SubjectAccessReview")
    response.setdefault("metadata", {})
    status: JSONObject = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    response["status"] = status
    return response


def review_namespace(body: Mapping[str, Any]) -> str:
    spec = body.get("spec")
    return str(spec.get("namespace") or "") if isinstance(spec, Mapping) else ""


def build_rules_review_response(body: Mapping[str, Any], rules: Iterable[Rule]) -> JSONObject:
    resource_rules: list[JSONObject] = []
    url_rules: list[JSONObject] = []
    for rule in rules:
        if rule.non_resource_urls:
            url_rules.append(
                {"verbs": list(rule.verbs), "nonResourceURLs": list(rule.non_resource_urls)}
            )
            continue
        entry: JSONObject = {
            "verbs": list(rule.verbs),
            "apiGroups": list(rule.api_groups),
            "resources": list(rule.resources),
        }
        if rule.resource_names:
            entry["resourceNames"] = list(rule.resource_names)
        resource_rules.append(entry)
    response: JSONObject = json.loads(json.dumps(dict(body)))
    response["apiVersion"] = "authorization.k8s.io/v1"
    response["kind"] = "SelfSubjectRulesReview"
    response.setdefault("metadata", {})
    response["status"] = {
        "resourceRules": resource_rules,
        "nonResourceRules": url_rules,
        "incomplete": False,
    }
    return response


def forbidden_message(attrs: Attributes, decision: Decision) -> str:
    """kube-apiserver's whole 403 message for a denied request.

    ``pvcs is forbidden: User "u" cannot list resource "persistentvolumeclaims" in API group
    "" in the namespace "bob"`` (``responsewriters.forbiddenMessage`` + ``NewForbidden``).
    """
    who = f"User {json.dumps(attrs.user.username)}"
    if attrs.resource:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        text = (
            f"{who} cannot {attrs.verb} resource {json.dumps(resource)} "
            f"in API group {json.dumps(attrs.api_group)}"
        )
        if attrs.namespace:
            text += f" in the namespace {json.dumps(attrs.namespace)}"
        else:
            text += " at the cluster scope"
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        prefix = f"{qualified} {json.dumps(attrs.name)}" if attrs.name else qualified
    else:
        text = f"{who} cannot {attrs.verb} path {json.dumps(attrs.path)}"
        prefix = ""
    if decision.reason:
        text = f"{text}: {decision.reason}"
    return f"{prefix} is forbidden: {text}" if prefix else f"forbidden: {text}"
