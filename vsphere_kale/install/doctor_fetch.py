"""``vsphere-kale doctor``'s facts (I/O): what
:func:`~vsphere_kale.install.doctor_decide.run_checks` needs, one request per resource type,
plus the access reviews.

Settings are serve's effective settings: the ConfigMap's ``config.yaml``, else the
Deployment's ``serve`` args (``--rwx-storage-class``), else the ``--config`` fallback; a
refused read is recorded, so the checks say "cannot check" instead of "not set".

Permissions: every (verb, resource) the service uses is read from ``deploy/base/rbac.yaml`` as
install renders it (:func:`fetch_required_roles`) and asked with a SubjectAccessReview for
``system:serviceaccount:<ns>:vsphere-kale``, which is what an admin at a terminal wants to
know. A caller who may not create SubjectAccessReviews is told so -- unless the caller *is*
that service account, whose own rights SelfSubjectAccessReviews then answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jsonpatch

from vsphere_kale.errors import ConfigError, KubeError, KubeForbidden
from vsphere_kale.install import admission_policy, doctor_psa, namespace_guard, render
from vsphere_kale.install.doctor_access import (
    ROLE_NAME,
    Access,
    AccessResult,
    build_component_patches,
    build_required_access,
    service_account_user,
)
from vsphere_kale.install.doctor_decide import DoctorFacts
from vsphere_kale.policy import health, podsecurity
from vsphere_kale.settings import Settings, with_overrides

if TYPE_CHECKING:
    from vsphere_kale.kube import Kube

log = logging.getLogger(__name__)


def fetch_required_roles(settings: Settings, *, cert_manager: bool) -> list[dict[str, Any]]:
    """Our Role and ClusterRole from deploy/base/rbac.yaml, with the cert-manager component's
    patches when it is used and this installation's settings (namespace, PSP role) applied,
    as ``vsphere-kale install`` renders them. Reads the shipped manifests."""
    deploy = render.find_deploy_dir()
    roles = render.read_documents(deploy / "base" / "rbac.yaml")
    if cert_manager:
        (kustomization,) = render.read_documents(
            deploy / "components" / "cert-manager" / "kustomization.yaml"
        )
        for kind, ops in build_component_patches(kustomization):
            roles = [
                jsonpatch.apply_patch(r, ops)
                if r.get("kind") == kind and (r.get("metadata") or {}).get("name") == ROLE_NAME
                else r
                for r in roles
            ]
    return render.build_manifests(roles, settings=settings)


# --- fetch (I/O) -------------------------------------------------------------------------------


def _forbidden(what: str) -> str:
    return f"reading {what} is forbidden"


def build_args_settings(deployment: dict[str, Any], fallback: Settings) -> Settings | None:
    """Settings the Deployment's ``serve`` args give (``--rwx-storage-class``) over
    ``fallback``; None when the args set nothing (pure)."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        args = [str(a) for a in container.get("args") or []]
        for index, arg in enumerate(args):
            if arg.startswith("--rwx-storage-class="):
                return with_overrides(fallback, rwx_storage_class=arg.split("=", 1)[1])
            if arg == "--rwx-storage-class" and index + 1 < len(args):
                return with_overrides(fallback, rwx_storage_class=args[index + 1])
    return None


def fetch_settings(
    kube: Kube, namespace: str, fallback: Settings
) -> tuple[Settings, str, health.Unreadable | None]:
    """serve's effective settings: the ConfigMap, else the Deployment's args, else
    ``fallback``; and, when neither could be read for lack of rights, why."""
    from vsphere_kale.install.installer import fetch_installed_settings
    from vsphere_kale.kube import resources as r

    refused: list[str] = []
    try:
        live = fetch_installed_settings(kube, namespace)
        if live is not None:
            return live, f"configmap {namespace}/{render.CONFIG_MAP}", None
    except KubeForbidden:
        refused.append(f"configmap {namespace}/{render.CONFIG_MAP}")
    except ConfigError as exc:
        log.info("doctor: the installed settings are invalid: %s", exc)
    try:
        deployment = kube.get_optional(r.DEPLOYMENT, render.NAME, namespace=namespace)
    except KubeForbidden:
        refused.append(f"deployment {namespace}/{render.NAME}")
        deployment = None
    if deployment is not None:
        from_args = build_args_settings(deployment, fallback)
        if from_args is not None:
            return from_args, f"deployment {namespace}/{render.NAME} args", None
    if refused:
        why = health.Unreadable(f"reading {' and '.join(refused)} is forbidden")
        return fallback, f"defaults (cannot read {' or '.join(refused)})", why
    return fallback, "defaults (no ConfigMap, and no setting in the Deployment's args)", None


def fetch_caller(kube: Kube) -> str:
    """The caller's username (SelfSubjectReview, ``kubectl auth whoami``); ``""`` if unknown."""
    from vsphere_kale.kube import path

    try:
        answer = kube.request(
            "POST",
            path("apis", "authentication.k8s.io", "v1", "selfsubjectreviews"),
            action="create selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    except KubeError as exc:  # not served (before 1.28) or refused: the texts stay neutral
        log.info("doctor: cannot tell who the caller is: %s", exc)
        return ""
    info = ((answer or {}).get("status") or {}).get("userInfo") or {}
    return str(info.get("username") or "")


def _attributes(access: Access) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
    }
    if access.namespace:
        attrs["namespace"] = access.namespace
    if access.name:
        attrs["name"] = access.name
    return attrs


def fetch_access(
    kube: Kube, accesses: Sequence[Access], *, namespace: str, caller: str = ""
) -> tuple[list[AccessResult], bool]:
    """One SubjectAccessReview per permission for our SA, and whether SARs are forbidden to
    the caller. Then the caller's own rights (SelfSubjectAccessReview) are asked only when
    the caller is our SA or cannot be identified: anyone else's rights say nothing about the
    installation."""
    from vsphere_kale.kube import resources as r

    user = service_account_user(namespace)
    groups = [
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ]
    results: list[AccessResult] = []
    forbidden = False
    for access in accesses:
        attrs = _attributes(access)
        if not forbidden:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
            }
            try:
                answer = kube.create(r.SUBJECT_ACCESS_REVIEW, body)
                status = answer.get("status") or {}
                results.append(AccessResult(access, bool(status.get("allowed")), "serviceaccount"))
                continue
            except KubeForbidden:
                forbidden = True
                if caller and caller != user:
                    return [], True
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        try:
            answer = kube.create(r.SELF_SUBJECT_ACCESS_REVIEW, body)
        except KubeForbidden as exc:
            results.append(AccessResult(access, None, "self", str(exc)))
            continue
        status = answer.get("status") or {}
        results.append(AccessResult(access, bool(status.get("allowed")), "self"))
    return results, forbidden


def fetch_admission_policy(
    kube: Kube,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """Our MutatingAdmissionPolicy and binding at the served version; None when neither is
    there or they cannot be read (doctor then checks the webhook)."""
    from vsphere_kale.kube import resources as r

    try:
        version = kube.discovery().mutating_admission_policy_version
        if version is None:
            return None
        name = admission_policy.MUTATING_POLICY
        policy = kube.get_optional(r.MUTATING_ADMISSION_POLICY.at(version), name)
        # The binding only where the policy is (webhook mode asks one read, which the
        # service account may make: get on our policy by name).
        binding = (
            None
            if policy is None
            else kube.get_optional(r.MUTATING_ADMISSION_POLICY_BINDING.at(version), name)
        )
    except KubeForbidden:
        return None
    return None if policy is None and binding is None else (policy, binding)


def fetch_facts(kube: Kube, *, namespace: str, fallback: Settings) -> DoctorFacts:
    """Everything :func:`run_checks` needs, one request per resource type (plus the reviews)."""
    from vsphere_kale.health.status import (
        PVC_EVENTS_SELECTOR,
        fetch_psp_served,
        get_or_unreadable,
        read_or_unreadable,
    )
    from vsphere_kale.kube import resources as r

    settings, source, settings_unreadable = fetch_settings(kube, namespace, fallback)

    def items(resource: r.Resource, **query: Any) -> Callable[[], list[Any]]:
        return lambda: list(kube.list(resource, **query).get("items") or [])

    def get_one(
        resource: r.Resource, name: str, *, in_namespace: bool = False
    ) -> dict[str, Any] | health.Unreadable | None:
        where = namespace if in_namespace else None
        what = f"{resource.kind.lower()} {f'{where}/' if where else ''}{name}"
        return get_or_unreadable(
            lambda: kube.get(resource, name, namespace=where), forbidden=_forbidden(what)
        )

    facts = DoctorFacts(
        settings=settings,
        settings_source=source,
        settings_unreadable=settings_unreadable,
        caller=fetch_caller(kube),
    )
    facts.storage_classes = read_or_unreadable(
        items(r.STORAGE_CLASS), forbidden=_forbidden("storageclasses")
    )
    facts.webhook = get_one(r.MUTATING_WEBHOOK_CONFIGURATION, render.WEBHOOK_CONFIGURATION)
    facts.admission_policy = fetch_admission_policy(kube)
    try:
        facts.guard_served = kube.discovery().serves(r.VALIDATING_ADMISSION_POLICY)
    except KubeForbidden:
        facts.guard_served = False
    if facts.guard_served:
        facts.guard = (
            get_one(r.VALIDATING_ADMISSION_POLICY, namespace_guard.NAME),
            get_one(r.VALIDATING_ADMISSION_POLICY_BINDING, namespace_guard.NAME),
        )
    facts.endpoints = get_one(r.ENDPOINTS, render.NAME, in_namespace=True)
    facts.secret = get_one(r.SECRET, render.TLS_SECRET, in_namespace=True)
    try:
        facts.psp_served = fetch_psp_served(kube)
    except KubeForbidden:
        facts.psp_served = False
    facts.namespaces = read_or_unreadable(items(r.NAMESPACE), forbidden=_forbidden("namespaces"))
    try:
        profile_version = kube.discovery().profile_version
    except KubeForbidden:
        profile_version = None
    if profile_version is not None:
        facts.profiles = read_or_unreadable(
            items(r.PROFILE.at(profile_version)), forbidden=_forbidden("profiles")
        )
    mode = podsecurity.decide_mode(settings.pod_security.mode, psp_served=facts.psp_served)
    if mode == "psp":
        facts.bindings = read_or_unreadable(
            items(r.ROLE_BINDING), forbidden=_forbidden("rolebindings")
        )
    if mode == "psa" and isinstance(facts.namespaces, list):
        facts.psa = doctor_psa.fetch_psa_decisions(
            kube,
            settings=settings,
            namespaces=facts.namespaces,
            profiles=facts.profiles if isinstance(facts.profiles, list) else None,
        )
    facts.pvcs = read_or_unreadable(
        items(r.PERSISTENT_VOLUME_CLAIM), forbidden=_forbidden("persistentvolumeclaims")
    )
    facts.events = read_or_unreadable(
        items(r.EVENT, field_selector=PVC_EVENTS_SELECTOR), forbidden=_forbidden("events")
    )
    facts.access, facts.reviews_forbidden = fetch_access(
        kube,
        build_required_access(fetch_required_roles(settings, cert_manager=facts.cert_manager)),
        namespace=namespace,
        caller=facts.caller,
    )
    return facts
