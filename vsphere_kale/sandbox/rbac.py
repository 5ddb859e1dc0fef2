"""RBAC for the sandbox API server: the same evaluation kube-apiserver's RBAC authorizer does.

Rules are read from the stored Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
on every call (a few dozen objects in a sandbox; correctness beats a cache whose
invalidation could lag a watch event). What is emulated:

- rule matching: verbs, apiGroups, resources, ``resource/subresource`` and ``*/subresource``,
  resourceNames, nonResourceURLs with a trailing ``*``, ``*`` wildcards anywhere
  (``pkg/apis/rbac/v1/evaluation_helpers.go``);
- subjects User, Group and ServiceAccount (``system:serviceaccount:<ns>:<name>``; a subject
  without a namespace in a RoleBinding means the binding's namespace);
- RoleBindings only apply to requests in their namespace; non-resource URLs only through
  ClusterRoleBindings;
- ClusterRole aggregation (``aggregationRule.clusterRoleSelectors``), resolved transitively at
  evaluation time instead of by a controller rewriting ``rules`` (Kubeflow's
  ``kubeflow-admin``/``-edit``/``-view`` are built that way);
- ``system:masters`` is a superuser, as kube-apiserver's privileged-group authorizer;
- the bootstrap roles every cluster has, built in rather than stored: ``system:discovery``
  (authenticated users may GET ``/api*``, ``/apis*``, ``/openapi*``, ``/version``),
  ``system:public-info-viewer`` (everyone, anonymous included, may GET ``/version``,
  ``/healthz``, ``/livez``, ``/readyz``) and ``system:basic-user`` (authenticated users may
  create self-subject access/rules reviews);
- SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectAccessReview answers;
- the escalation check on writes of roles and bindings (``pkg/registry/rbac/validation``):
  a user may only grant what they hold, unless they have ``bind`` (bindings) or ``escalate``
  (roles) on the role.

Not emulated: the Node authorizer, webhook authorizers, impersonation, and explicit denial
(RBAC never denies, it has no opinion; a SubjectAccessReview therefore never sets
``status.denied``, exactly like a cluster that only runs RBAC).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.sandbox.types import (
    Attributes,
    Decision,
    JSONObject,
    ObjectReader,
    ResourceRef,
    UserInfo,
)

log = logging.getLogger(__name__)

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
class _BuiltinBinding:
    role: str
    groups: tuple[str, ...]
    rules: tuple[Rule, ...]


# The parts of kube-apiserver's bootstrap policy (plugin/pkg/auth/authorizer/rbac/
# bootstrappolicy/policy.go) that every client relies on; kept in code so an `empty` seed
# still behaves like a fresh cluster and nobody can lock discovery out by deleting them.
_BUILTIN: tuple[_BuiltinBinding, ...] = (
    _BuiltinBinding(
        "system:public-info-viewer",
        (AUTHENTICATED, UNAUTHENTICATED),
        (
            Rule(
                verbs=("get",),
                non_resource_urls=("/healthz", "/livez", "/readyz", "/version", "/version/"),
            ),
        ),
    ),
    _BuiltinBinding(
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
    _BuiltinBinding(
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
_FULL_AUTHORITY = (
    Rule(verbs=("*",), api_groups=("*",), resources=("*",)),
    Rule(verbs=("*",), non_resource_urls=("*",)),
)


# --- subjects -----------------------------------------------------------------------------


def _subject_applies(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get("kind", "")
    name = subject.get("name", "")
    if kind == "User":
        return bool(name) and name == user.username
    if kind == "Group":
        return bool(name) and name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(name and namespace) and user.username == (
            f"system:serviceaccount:{namespace}:{name}"
        )
    return False


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    kind = subject.get("kind", "")
    name = subject.get("name", "")
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{name}/{namespace}"'
    return f'{kind} "{name}"'


def _groups_text(user: UserInfo) -> str:
    return "[" + " ".join(json.dumps(group) for group in user.groups) + "]"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


# --- the authorizer -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    """Rules reached through one binding, and how to describe that binding."""

    source: str
    rules: tuple[Rule, ...]


class _View:
    """The RBAC objects as of one store version, read lazily and memoized.

    Reading and cloning every ClusterRole for each aggregation on each request costs about
    a millisecond; a view is reused for as long as the store's global resourceVersion does
    not move, so any write (of anything) invalidates it, and results are never older than
    the version read when the request started.
    """

    def __init__(self, reader: ObjectReader) -> None:
        self._reader = reader
        self._lists: dict[tuple[ResourceRef, str | None], list[JSONObject]] = {}
        self._by_name: dict[tuple[ResourceRef, str | None], dict[str, JSONObject]] = {}
        self.effective: dict[str, tuple[Rule, ...]] = {}

    def list(self, ref: ResourceRef, namespace: str | None = None) -> list[JSONObject]:
        key = (ref, namespace)
        items = self._lists.get(key)
        if items is None:
            items = self._reader.list_objects(ref, namespace)
            self._lists[key] = items
        return items

    def get(self, ref: ResourceRef, namespace: str | None, name: str) -> JSONObject | None:
        key = (ref, namespace)
        index = self._by_name.get(key)
        if index is None:
            index = {str(_meta(o).get("name", "")): o for o in self.list(ref, namespace)}
            self._by_name[key] = index
        return index.get(name)


class Authorizer:
    """RBAC over the objects in ``reader``: the sandbox's authorizer and access reviewer.

    If ``reader`` has a ``resource_version`` (the store does), reads are cached until it
    changes; otherwise every call reads afresh.
    """

    enabled = True

    def __init__(self, reader: ObjectReader) -> None:
        self._reader = reader
        self._view_lock = threading.Lock()
        self._cached: tuple[str, _View] | None = None

    def _view(self) -> _View:
        version = getattr(self._reader, "resource_version", None)
        if version is None:
            return _View(self._reader)
        with self._view_lock:
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
            view = _View(self._reader)
            self._cached = (str(version), view)
            return view

    # -- role resolution --

    def cluster_role_rules(self, name: str, *, view: _View | None = None) -> tuple[Rule, ...]:
        """A ClusterRole's effective rules, aggregation resolved. Raises KubeNotFound."""
        view = view or self._view()
        cached = view.effective.get(name)
        if cached is not None:
            return cached
        role = view.get(CLUSTER_ROLES, None, name)
        if role is None:
            raise KubeNotFound(
                f'clusterroles.{RBAC_GROUP} "{name}" not found', status=404, reason="NotFound"
            )
        rules = tuple(self._aggregate(role, view=view, seen=set()))
        view.effective[name] = rules
        return rules

    def _aggregate(self, role: JSONObject, *, view: _View, seen: set[str]) -> list[Rule]:
        name = _meta(role).get("name", "")
        seen.add(name)
        rules = [Rule.from_json(rule) for rule in role.get("rules") or [] if isinstance(rule, dict)]
        aggregation = role.get("aggregationRule")
        if not isinstance(aggregation, Mapping):
            return rules
        selectors = [
            s for s in aggregation.get("clusterRoleSelectors") or [] if isinstance(s, dict)
        ]
        if not selectors:
            return rules
        # The aggregation controller orders by name (the store lists sorted by name).
        for other in view.list(CLUSTER_ROLES):
            other_name = _meta(other).get("name", "")
            # Kubeflow's kubeflow-admin selects itself; aggregation is a set union, so a
            # role already visited adds nothing and cycles end here.
            if other_name in seen:
                continue
            labels = _meta(other).get("labels") or {}
            try:
                selected = any(label_selector_matches(s, labels) for s in selectors)
            except ValueError as exc:
                log.warning("clusterrole %s: bad aggregation selector: %s", name, exc)
                return rules
            if selected:
                rules.extend(self._aggregate(other, view=view, seen=seen))
        return rules

    def _role_ref_rules(
        self, role_ref: Mapping[str, Any], namespace: str, *, view: _View
    ) -> tuple[Rule, ...]:
        kind = role_ref.get("kind", "")
        name = str(role_ref.get("name", ""))
        if kind == "ClusterRole":
            return self.cluster_role_rules(name, view=view)
        if kind == "Role":
            role = view.get(ROLES, namespace, name)
            if role is None:
                raise KubeNotFound(
                    f'roles.{RBAC_GROUP} "{name}" not found', status=404, reason="NotFound"
                )
            return tuple(
                Rule.from_json(rule) for rule in role.get("rules") or [] if isinstance(rule, dict)
            )
        raise KubeError(
            f"roleRef.kind {kind!r} is not Role or ClusterRole", status=422, reason="Invalid"
        )

    def _grants(self, user: UserInfo, namespace: str, errors: list[str]) -> Iterator[_Grant]:
        """Every grant that applies to ``user`` for a request in ``namespace`` ("" = cluster).

        Lazily, in kube's order (built-ins, ClusterRoleBindings, then RoleBindings of the
        namespace), so ``authorize`` stops at the first allowing rule.
        """
        for builtin in _BUILTIN:
            for group in builtin.groups:
                if group in user.groups:
                    yield _Grant(
                        f'ClusterRoleBinding "{builtin.role}" of ClusterRole "{builtin.role}" '
                        f'to Group "{group}"',
                        builtin.rules,
                    )
                    break
        view = self._view()
        for binding in view.list(CLUSTER_ROLE_BINDINGS):
            yield from self._binding_grants(binding, user, "", "ClusterRoleBinding", errors, view)
        if namespace:
            for binding in view.list(ROLE_BINDINGS, namespace):
                yield from self._binding_grants(
                    binding, user, namespace, "RoleBinding", errors, view
                )

    def _binding_grants(
        self,
        binding: JSONObject,
        user: UserInfo,
        namespace: str,
        kind: str,
        errors: list[str],
        view: _View,
    ) -> Iterator[_Grant]:
        subjects = [s for s in binding.get("subjects") or [] if isinstance(s, dict)]
        subject = next((s for s in subjects if _subject_applies(s, user, namespace)), None)
        if subject is None:
            return
        role_ref = binding.get("roleRef") or {}
        try:
            rules = self._role_ref_rules(role_ref, namespace, view=view)
        except KubeError as exc:
            # kube keeps evaluating other bindings and reports the dangling ref in the reason.
            errors.append(str(exc))
            return
        name = _meta(binding).get("name", "")
        shown = f"{name}/{namespace}" if namespace else name
        yield _Grant(
            f'{kind} "{shown}" of {role_ref.get("kind")} "{role_ref.get("name")}" to '
            f"{_describe_subject(subject, namespace)}",
            rules,
        )

    def rules_for(self, user: UserInfo, namespace: str = "") -> list[Rule]:
        """Every rule ``user`` holds in ``namespace`` ("" = cluster-wide grants only)."""
        errors: list[str] = []
        return [rule for grant in self._grants(user, namespace, errors) for rule in grant.rules]

    # -- decisions --

    def authorize(self, attrs: Attributes) -> Decision:
        if SUPERUSER_GROUP in attrs.user.groups:
            return Decision(True, f'allowed: user is in group "{SUPERUSER_GROUP}"')
        errors: list[str] = []
        # Non-resource URLs are never namespaced; RoleBindings cannot grant them.
        namespace = attrs.namespace if attrs.resource else ""
        if attrs.resource == "namespaces" and not attrs.api_group and attrs.name and not namespace:
            # kube's RequestInfo puts a Namespace object's own name in the namespace field,
            # so a RoleBinding in "alice" may grant `get` on namespace "alice" itself.
            namespace = attrs.name
        for grant in self._grants(attrs.user, namespace, errors):
            if any(rule.allows(attrs) for rule in grant.rules):
                return Decision(True, f"RBAC: allowed by {grant.source}")
        return Decision(False, "RBAC: " + "; ".join(errors) if errors else "")

    def review_access(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        """Answer a (Local|Self)SubjectAccessReview: the request echoed with a status."""
        attrs = attributes_from_review(body, requesting_user)
        decision = self.authorize(attrs)
        return _review_response(body, decision)

    def review_rules(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        """Answer a SelfSubjectRulesReview (``kubectl auth can-i --list``): every rule the
        requester holds in ``spec.namespace`` (cluster-wide grants included)."""
        if SUPERUSER_GROUP in requesting_user.groups:
            return _rules_review_response(body, _FULL_AUTHORITY)
        return _rules_review_response(
            body, self.rules_for(requesting_user, _review_namespace(body))
        )

    # -- escalation --

    def check_escalation(
        self, user: UserInfo, ref: ResourceRef, obj: Mapping[str, Any]
    ) -> str | None:
        """None if ``user`` may write ``obj`` (a role or binding), else kube's 403 message."""
        if ref.group != RBAC_GROUP or SUPERUSER_GROUP in user.groups:
            return None
        meta = _meta(obj)
        name = str(meta.get("name") or meta.get("generateName") or "")
        namespace = (
            str(meta.get("namespace") or "") if ref.plural in ("roles", "rolebindings") else ""
        )
        prefix = f'{ref.plural}.{RBAC_GROUP} "{name}" is forbidden: '
        if ref.plural in ("rolebindings", "clusterrolebindings"):
            return self._check_binding(user, ref, obj, namespace=namespace, prefix=prefix)
        if ref.plural in ("roles", "clusterroles"):
            return self._check_role(user, ref, obj, namespace=namespace, prefix=prefix)
        return None

    def _check_binding(
        self,
        user: UserInfo,
        ref: ResourceRef,
        obj: Mapping[str, Any],
        *,
        namespace: str,
        prefix: str,
    ) -> str | None:
        role_ref = obj.get("roleRef") or {}
        kind = role_ref.get("kind", "")
        role_name = str(role_ref.get("name", ""))
        if ref.plural == "clusterrolebindings" and kind != "ClusterRole":
            return f"{prefix}a ClusterRoleBinding can only reference a ClusterRole, not {kind!r}"
        bind = Attributes(
            user=user,
            verb="bind",
            api_group=RBAC_GROUP,
            resource="clusterroles" if kind == "ClusterRole" else "roles",
            namespace=namespace,
            name=role_name,
        )
        if self.authorize(bind).allowed:
            return None
        try:
            wanted = self._role_ref_rules(role_ref, namespace, view=self._view())
        except KubeError as exc:
            return f"{prefix}{exc}, and user {user.username!r} may not bind it"
        return self._confirm_no_escalation(user, wanted, namespace=namespace, prefix=prefix)

    def _check_role(
        self,
        user: UserInfo,
        ref: ResourceRef,
        obj: Mapping[str, Any],
        *,
        namespace: str,
        prefix: str,
    ) -> str | None:
        name = str(_meta(obj).get("name", ""))
        escalate = Attributes(
            user=user,
            verb="escalate",
            api_group=RBAC_GROUP,
            resource=ref.plural,
            namespace=namespace,
            name=name,
        )
        if self.authorize(escalate).allowed:
            return None
        wanted = tuple(Rule.from_json(r) for r in obj.get("rules") or [] if isinstance(r, dict))
        message = self._confirm_no_escalation(user, wanted, namespace=namespace, prefix=prefix)
        if message is not None:
            return message
        # An aggregationRule can gather any permission, so kube requires all of them.
        if (
            ref.plural == "clusterroles"
            and obj.get("aggregationRule")
            and self._confirm_no_escalation(user, _FULL_AUTHORITY, namespace="", prefix="")
        ):
            return f"{prefix}must have cluster-admin privileges to use the aggregationRule"
        return None

    def _confirm_no_escalation(
        self,
        user: UserInfo,
        wanted: Iterable[Rule],
        *,
        namespace: str,
        prefix: str,
    ) -> str | None:
        held = self.rules_for(user, namespace)
        missing = [atom for rule in wanted for atom in breakdown(rule) if not covered(held, atom)]
        if not missing:
            return None
        lines = "\n".join(rule.describe() for rule in compact(missing))
        return (
            f"{prefix}user {json.dumps(user.username)} (groups={_groups_text(user)}) is attempting "
            f"to grant RBAC permissions not currently held:\n{lines}"
        )


class AllowAllAuthorizer:
    """Authorization switched off (kube's ``--authorization-mode=AlwaysAllow``)."""

    enabled = False

    def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True, "authorization is switched off in this sandbox")

    def review_access(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        attributes_from_review(body, requesting_user)  # still reject malformed reviews
        return _review_response(body, self.authorize(Attributes(requesting_user, "get")))

    def check_escalation(
        self, user: UserInfo, ref: ResourceRef, obj: Mapping[str, Any]
    ) -> str | None:
        return None

    def review_rules(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        """Everyone may do everything: answer with full authority."""
        return _rules_review_response(body, _FULL_AUTHORITY)


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
        namespace = _meta(body).get("namespace", "")
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


def _review_response(body: Mapping[str, Any], decision: Decision) -> JSONObject:
    response: JSONObject = json.loads(json.dumps(dict(body)))
    response.setdefault("apiVersion", "authorization.k8s.io/v1")
    response.setdefault("kind", "SubjectAccessReview")
    response.setdefault("metadata", {})
    status: JSONObject = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    response["status"] = status
    return response


def _review_namespace(body: Mapping[str, Any]) -> str:
    spec = body.get("spec")
    return str(spec.get("namespace") or "") if isinstance(spec, Mapping) else ""


def _rules_review_response(body: Mapping[str, Any], rules: Iterable[Rule]) -> JSONObject:
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
