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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.sandbox.rbac_reviews import (
    attributes_from_review,
    build_review_response,
    build_rules_review_response,
    forbidden_message,
    review_namespace,
)
from vsphere_kale.sandbox.rbac_rules import (
    AUTHENTICATED,
    BUILTIN_BINDINGS,
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    FULL_AUTHORITY,
    RBAC_GROUP,
    ROLE_BINDINGS,
    ROLES,
    SUPERUSER_GROUP,
    UNAUTHENTICATED,
    Rule,
    breakdown,
    compact,
    covered,
    label_selector_matches,
    object_meta,
)
from vsphere_kale.sandbox.types import (
    Attributes,
    Decision,
    JSONObject,
    ObjectReader,
    ResourceRef,
    UserInfo,
)

__all__ = [
    "AUTHENTICATED",
    "CLUSTER_ROLES",
    "CLUSTER_ROLE_BINDINGS",
    "RBAC_GROUP",
    "ROLES",
    "ROLE_BINDINGS",
    "SUPERUSER_GROUP",
    "UNAUTHENTICATED",
    "AllowAllAuthorizer",
    "Authorizer",
    "Rule",
    "attributes_from_review",
    "breakdown",
    "build_review_response",
    "build_rules_review_response",
    "compact",
    "covered",
    "forbidden_message",
    "label_selector_matches",
    "object_meta",
    "review_namespace",
]

log = logging.getLogger(__name__)

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
            index = {str(object_meta(o).get("name", "")): o for o in self.list(ref, namespace)}
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
        name = object_meta(role).get("name", "")
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
            other_name = object_meta(other).get("name", "")
            # Kubeflow's kubeflow-admin selects itself; aggregation is a set union, so a
            # role already visited adds nothing and cycles end here.
            if other_name in seen:
                continue
            labels = object_meta(other).get("labels") or {}
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
        for builtin in BUILTIN_BINDINGS:
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
        name = object_meta(binding).get("name", "")
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
        return build_review_response(body, decision)

    def review_rules(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        """Answer a SelfSubjectRulesReview (``kubectl auth can-i --list``): every rule the
        requester holds in ``spec.namespace`` (cluster-wide grants included)."""
        if SUPERUSER_GROUP in requesting_user.groups:
            return build_rules_review_response(body, FULL_AUTHORITY)
        return build_rules_review_response(
            body, self.rules_for(requesting_user, review_namespace(body))
        )

    # -- escalation --

    def check_escalation(
        self, user: UserInfo, ref: ResourceRef, obj: Mapping[str, Any]
    ) -> str | None:
        """None if ``user`` may write ``obj`` (a role or binding), else kube's 403 message."""
        if ref.group != RBAC_GROUP or SUPERUSER_GROUP in user.groups:
            return None
        meta = object_meta(obj)
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
        name = str(object_meta(obj).get("name", ""))
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
            and self._confirm_no_escalation(user, FULL_AUTHORITY, namespace="", prefix="")
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
        return build_review_response(body, self.authorize(Attributes(requesting_user, "get")))

    def check_escalation(
        self, user: UserInfo, ref: ResourceRef, obj: Mapping[str, Any]
    ) -> str | None:
        return None

    def review_rules(self, body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
        """Everyone may do everything: answer with full authority."""
        return build_rules_review_response(body, FULL_AUTHORITY)
