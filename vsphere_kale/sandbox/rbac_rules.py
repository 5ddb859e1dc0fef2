"""RBAC rules for the sandbox's authorizer: the constants, label selectors, one rule and what
it allows, the built-in bootstrap bindings, and the escalation helpers
(pkg/registry/rbac/validation/policy_comparator.go).

Importable from :mod:`vsphere_kale.sandbox.rbac` as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vsphere_kale.sandbox.types import (
    Attributes,
    JSONObject,
    ResourceRef,
)

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = ResourceRef(RBAC_GROUP, "roles")
CLUSTER_ROLES = ResourceRef(RBAC_GROUP, "clusterroles")
ROLE_BINDINGS = ResourceRef(RBAC_GROUP, "rolebindings")
CLUSTER_ROLE_BINDINGS = ResourceRef(RBAC_GROUP, "clusterrolebindings")

SUPERUSER_GROUP = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"


# --- label selectors (metav1.LabelSelector), shared with the webhook matcher ---------------


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a metav1.LabelSelector object.

    An empty selector (``{}``) matches everything, as in kube; ``None`` (a nil selector)
    matches nothing. An unknown operator raises ``ValueError``: kube-apiserver would have
    refused to store such a selector, so callers decide how loudly to fail.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key = expression.get("key", "")
        operator = expression.get("operator", "")
        values = expression.get("values") or []
        if operator == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise ValueError(
                f"label selector operator {operator!r} is not one of "
                "In, NotIn, Exists, DoesNotExist"
            )
    return True


# --- rules --------------------------------------------------------------------------------


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value)


@dataclass(frozen=True)
class Rule:
    """One rbac/v1 PolicyRule."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=_strings(rule.get("verbs")),
            api_groups=_strings(rule.get("apiGroups")),
            resources=_strings(rule.get("resources")),
            resource_names=_strings(rule.get("resourceNames")),
            non_resource_urls=_strings(rule.get("nonResourceURLs")),
        )

    def to_json(self) -> JSONObject:
        out: JSONObject = {"verbs": list(self.verbs)}
        if self.api_groups or not self.non_resource_urls:
            out["apiGroups"] = list(self.api_groups)
        if self.resources:
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        return out

    def allows(self, attrs: Attributes) -> bool:
        """kube's ``RuleAllows``: does this rule grant the request?"""
        if not _verb_matches(self.verbs, attrs.verb):
            return False
        if attrs.resource:
            return (
                _has_or_star(self.api_groups, attrs.api_group)
                and _resource_matches(self.resources, attrs.resource, attrs.subresource)
                and (not self.resource_names or attrs.name in self.resource_names)
            )
        return any(_url_matches(pattern, attrs.path) for pattern in self.non_resource_urls)

    def describe(self) -> str:
        """kube's compact PolicyRule string, as in escalation errors."""
        parts = []
        if self.api_groups or self.resources:
            parts.append(f"APIGroups:[{_quoted(self.api_groups)}]")
            parts.append(f"Resources:[{_quoted(self.resources)}]")
        if self.resource_names:
            parts.append(f"ResourceNames:[{_quoted(self.resource_names)}]")
        if self.non_resource_urls:
            parts.append(f"NonResourceURLs:[{_quoted(self.non_resource_urls)}]")
        parts.append(f"Verbs:[{_quoted(self.verbs)}]")
        return "{" + ", ".join(parts) + "}"


def _quoted(values: Iterable[str]) -> str:
    return " ".join(json.dumps(value) for value in values)


def _has_or_star(values: Sequence[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _verb_matches(verbs: Sequence[str], verb: str) -> bool:
    return "*" in verbs or verb in verbs


def _resource_matches(resources: Sequence[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for candidate in resources:
        # "*" covers every resource and, in RBAC (unlike admission rules), subresources too.
        if candidate in ("*", combined):
            return True
        if subresource and candidate == f"*/{subresource}":
            return True
    return False


def _url_matches(pattern: str, path: str) -> bool:
    if pattern in ("*", path):
        return True
    return pattern.endswith("*") and path.startswith(pattern.rstrip("*"))


# --- bootstrap policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinBinding:
    role: str
    groups: tuple[str, ...]
    rules: tuple[Rule, ...]


# The parts of kube-apiserver's bootstrap policy (plugin/pkg/auth/authorizer/rbac/
# bootstrappolicy/policy.go) that every client relies on; kept in code so an `empty` seed
# still behaves like a fresh cluster and nobody can lock discovery out by deleting them.
BUILTIN_BINDINGS: tuple[BuiltinBinding, ...] = (
    BuiltinBinding(
        "system:public-info-viewer",
        (AUTHENTICATED, UNAUTHENTICATED),
        (
            Rule(
                verbs=("get",),
                non_resource_urls=("/healthz", "/livez", "/readyz", "/version", "/version/"),
            ),
        ),
    ),
    BuiltinBinding(
        "system:discovery",
        (AUTHENTICATED,),
        (
            Rule(
                verbs=("get",),
                non_resource_urls=(
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ),
            ),
        ),
    ),
    BuiltinBinding(
        "system:basic-user",
        (AUTHENTICATED,),
        (
            Rule(
                verbs=("create",),
                api_groups=("authorization.k8s.io",),
                resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
            ),
            Rule(
                verbs=("create",),
                api_groups=("authentication.k8s.io",),
                resources=("selfsubjectreviews",),
            ),
        ),
    ),
)

# "Every permission": what setting an aggregationRule requires (kube: cluster-admin).
FULL_AUTHORITY = (
    Rule(verbs=("*",), api_groups=("*",), resources=("*",)),
    Rule(verbs=("*",), non_resource_urls=("*",)),
)


def object_meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """An object's metadata for reading (empty when absent or not an object)."""
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, Mapping) else {}


# --- escalation helpers (pkg/registry/rbac/validation/policy_comparator.go) ---------------


def breakdown(rule: Rule) -> list[Rule]:
    """Split a rule into one-verb, one-group, one-resource(, one-name) atoms."""
    atoms: list[Rule] = []
    for group in rule.api_groups:
        for resource in rule.resources:
            for verb in rule.verbs:
                if rule.resource_names:
                    atoms.extend(
                        Rule((verb,), (group,), (resource,), (name,))
                        for name in rule.resource_names
                    )
                else:
                    atoms.append(Rule((verb,), (group,), (resource,)))
    for url in rule.non_resource_urls:
        atoms.extend(Rule((verb,), non_resource_urls=(url,)) for verb in rule.verbs)
    return atoms


def covered(held: Iterable[Rule], atom: Rule) -> bool:
    return any(_rule_covers(owner, atom) for owner in held)


def _rule_covers(owner: Rule, sub: Rule) -> bool:
    def has_all(values: Sequence[str], wanted: Sequence[str]) -> bool:
        return "*" in values or all(item in values for item in wanted)

    if sub.resource_names:
        names_ok = not owner.resource_names or all(
            n in owner.resource_names for n in sub.resource_names
        )
    else:
        names_ok = not owner.resource_names
    return (
        has_all(owner.verbs, sub.verbs)
        and has_all(owner.api_groups, sub.api_groups)
        and _resources_cover(owner.resources, sub.resources)
        and all(
            any(_url_matches(p, url) for p in owner.non_resource_urls)
            for url in sub.non_resource_urls
        )
        and names_ok
    )


def _resources_cover(owner: Sequence[str], wanted: Sequence[str]) -> bool:
    if "*" in owner:
        return True
    for resource in wanted:
        if resource in owner:
            continue
        # "*/scale" in the owner covers "deployments/scale" (and "*/scale").
        _, slash, subresource = resource.partition("/")
        if slash and f"*/{subresource}" in owner:
            continue
        return False
    return True


def compact(atoms: Iterable[Rule]) -> list[Rule]:
    """Merge atoms that differ only in verb, for a readable escalation message."""
    merged: dict[tuple[tuple[str, ...], ...], list[str]] = {}
    for atom in atoms:
        key = (atom.api_groups, atom.resources, atom.resource_names, atom.non_resource_urls)
        verbs = merged.setdefault(key, [])
        verbs.extend(v for v in atom.verbs if v not in verbs)
    return [
        Rule(tuple(verbs), groups, resources, names, urls)
        for (groups, resources, names, urls), verbs in merged.items()
    ]
