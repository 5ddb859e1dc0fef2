"""What the service needs, and doctor's ``rbac`` verdict (pure).

:func:`build_required_access` lists every (verb, resource) ``serve`` uses, from the rendered
Role and ClusterRole; :func:`decide_rbac` judges the answers of the access reviews -- and says
whose rights they were: the service account's (SubjectAccessReview, the question an admin
asks) or, when the caller may not ask that, nobody's ("cannot check"), unless the caller is
that service account itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from vsphere_kale.install.doctor_check import Check
from vsphere_kale.policy.text import describe_user

SA_NAME = "vsphere-kale"
ROLE_NAME = "vsphere-kale"
"""The ClusterRole and the Role of deploy/base/rbac.yaml: what ``serve`` is granted."""


@dataclass(frozen=True)
class Access:
    verb: str
    group: str
    resource: str
    namespace: str | None = None
    """None: cluster-wide (ClusterRole); else in our namespace (Role)."""
    name: str | None = None
    why: str = ""

    def describe(self) -> str:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else ""
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {res}{named}{where}"


@dataclass(frozen=True)
class AccessResult:
    access: Access
    allowed: bool | None
    """None: the review itself could not be made."""
    how: Literal["serviceaccount", "self"]
    """"serviceaccount" (SubjectAccessReview for our SA) or "self" (SelfSubjectAccessReview:
    the caller's own rights, asked only when the caller is our SA or cannot be identified)."""
    reason: str = ""


def service_account_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{SA_NAME}"


def build_required_access(roles: Sequence[Mapping[str, Any]]) -> tuple[Access, ...]:
    """Every permission ``serve`` uses, one per (verb, group, resource, name): the rules of
    our ClusterRole (cluster-wide) and Role (in its namespace), as rendered for this install.

    The manifest is the one source (``doctor_fetch.fetch_required_roles`` reads it), so doctor
    asks exactly what the installation grants (and what the RBAC tests prove is needed).
    """
    out: list[Access] = []
    for role in roles:
        md = role.get("metadata") or {}
        kind = role.get("kind")
        if md.get("name") != ROLE_NAME or kind not in ("ClusterRole", "Role"):
            continue
        where = (str(md.get("namespace") or "") or None) if kind == "Role" else None
        for index, rule in enumerate(role.get("rules") or []):
            why = f"{kind} {ROLE_NAME} rule {index + 1}"
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        for name in rule.get("resourceNames") or [None]:
                            out.append(Access(verb, group, resource, where, name, why))
    return tuple(out)


def build_component_patches(kustomization: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """``(kind, JSON patch)`` of a kustomize Component's patches to our Role and ClusterRole."""
    found = []
    for entry in kustomization.get("patches") or []:
        target = entry.get("target") or {}
        if target.get("name") != ROLE_NAME or target.get("kind") not in ("ClusterRole", "Role"):
            continue
        ops = yaml.safe_load(entry.get("patch") or "[]")
        if isinstance(ops, list):
            found.append((str(target["kind"]), ops))
    return found


def decide_rbac(
    results: Sequence[AccessResult],
    *,
    namespace: str,
    caller: str = "",
    reviews_forbidden: bool = False,
) -> Check:
    """The service account's rights, or why they could not be checked.

    ``caller``: who runs doctor (SelfSubjectReview; ``""`` when unknown).
    ``reviews_forbidden``: the caller may not create SubjectAccessReviews.
    """
    name = "rbac"
    subject = service_account_user(namespace)
    who_called = describe_user(caller)
    if reviews_forbidden and not results:
        return Check(
            name,
            "fail",
            f"cannot check the permissions of service account {namespace}/{SA_NAME}: "
            f"{who_called} may not create subjectaccessreviews",
            "that is your own right, not the installation's: run doctor as a cluster admin",
        )
    if not results:
        return Check(
            name, "fail", "no access review could be made", "run doctor as a cluster admin"
        )
    unknown = [r for r in results if r.allowed is None]
    denied = [r for r in results if r.allowed is False]
    self_checked = any(r.how == "self" for r in results)
    if self_checked and caller == subject:
        who = f"service account {namespace}/{SA_NAME} (asked as itself)"
    elif self_checked:
        who = f"{who_called} (your own rights: subjectaccessreviews are forbidden to you)"
    else:
        who = f"service account {namespace}/{SA_NAME}"
    if denied:
        missing = "; ".join(f"{r.access.describe()} ({r.access.why})" for r in denied[:6])
        more = f" and {len(denied) - 6} more" if len(denied) > 6 else ""
        if self_checked and caller != subject:
            hint = (
                "these are the caller's own rights, not the service's: if this kubeconfig is "
                "not the service account's, run doctor as a cluster admin"
            )
        else:
            hint = "re-run vsphere-kale install to restore the ClusterRole/Role vsphere-kale"
        return Check(
            name, "fail", f"{who} lacks {len(denied)} permission(s): {missing}{more}", hint
        )
    if unknown:
        return Check(
            name,
            "fail",
            f"cannot check: {unknown[0].reason}",
            f"{who_called} may not ask: run doctor as a cluster admin",
        )
    return Check(name, "ok", f"{who} has all {len(results)} permissions the service uses")
