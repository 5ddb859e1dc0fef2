"""``vsphere-kale install`` / ``uninstall``: apply the rendered manifests idempotently.

Apply is server-side apply with the field manager ``vsphere-kale``, per object, and says
what happened as ``kubectl apply`` prints it (docs/install.md has the reasons):

- GET (absent: ``created``), then an apply of the rendered object. The API server merges by
  field ownership: list entries keyed by name (containers, env, webhooks, rules...) that
  another manager added stay; fields we applied before and no longer render are removed
  (upgrades drop what a new version no longer sets); ``status`` and others' fields stay.
- A field we render that another manager (an admin's ``kubectl edit``/``scale``, a
  controller) set to another value is a conflict (409). Install is the source of truth for
  what it renders, so it applies again with ``force`` and notes whose fields it took over
  (``configured (took over .spec.replicas from kubectl-scale)``): the admin sees what their
  edit lost, where a merge patch overwrote it silently.
- ``unchanged`` when the apply did not change the object (its resourceVersion stayed, which a
  no-op apply guarantees); in a dry run, when every rendered field already has our value.

Objects are addressed through a static table of the kinds deploy/ renders
(:data:`RESOURCES`, from :mod:`vsphere_kale.kube.resources`; an unknown kind is a bug in
deploy/ and stops the install before any write).

Everything applied but the Namespace is a member of the installation's KEP-3659 ApplySet
(:mod:`.applyset`); after applying, install prunes the members it no longer renders (another
``--admission`` mode's objects, a dropped component's, an older version's) -- only objects we
labelled *and* server-side applied, each by uid -- and says so (``deleted (pruned: ...)``).
Uninstall (:mod:`.uninstall`) deletes the whole set; the namespace only when install created
it (annotation :data:`CREATED_BY_ANNOTATION`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from vsphere_kale.errors import (
    ConfigError,
    KubeConflict,
    KubeNotFound,
    VsphereKaleError,
)
from vsphere_kale.install import applyset, namespace_guard, render, rotation
from vsphere_kale.install.install_certs import (
    TlsMaterial,
    build_certificates,
    build_serving_names,
)
from vsphere_kale.kube import Kube, Resource
from vsphere_kale.kube import resources as r
from vsphere_kale.settings import Settings, settings_from_mapping

log = logging.getLogger(__name__)

FIELD_MANAGER = "vsphere-kale"
"""Server-side apply's field manager: who owns the fields install renders."""
CREATED_BY_ANNOTATION = "vsphere-kale.io/created-by"
"""On the Namespace: ``install`` when install created it, so uninstall may delete it. A
namespace that existed before is never labelled, patched or deleted by us."""
CREATED_BY_INSTALL = "install"

Outcome = Literal["created", "configured", "unchanged", "deleted", "not found", "kept"]


RESOURCES: Mapping[tuple[str, str], Resource] = {
    (res.api_version, res.kind): res
    for res in (
        r.NAMESPACE,
        r.SERVICE_ACCOUNT,
        r.CONFIG_MAP,
        r.SECRET,
        r.SERVICE,
        r.POD_SECURITY_POLICY,
        r.POD_DISRUPTION_BUDGET,
        r.CLUSTER_ROLE,
        r.CLUSTER_ROLE_BINDING,
        r.ROLE,
        r.ROLE_BINDING,
        r.DEPLOYMENT,
        r.MUTATING_WEBHOOK_CONFIGURATION,
        # --admission policy (install/admission_policy.py)
        r.MUTATING_ADMISSION_POLICY,
        r.MUTATING_ADMISSION_POLICY_V1BETA1,
        r.MUTATING_ADMISSION_POLICY_BINDING,
        r.MUTATING_ADMISSION_POLICY_BINDING_V1BETA1,
        r.VALIDATING_ADMISSION_POLICY,
        r.VALIDATING_ADMISSION_POLICY_BINDING,
        r.CERT_MANAGER_ISSUER,
        r.CERT_MANAGER_CERTIFICATE,
    )
}
"""The kinds deploy/ renders."""


def resource_for(key: render.ObjectKey) -> Resource:
    found = RESOURCES.get((key.api_version, key.kind))
    if found is None:
        raise VsphereKaleError(
            f"the installer does not know {key.api_version} {key.kind} ({key.describe()})"
        )
    return found


def fetch_object(kube: Kube, key: render.ObjectKey) -> dict[str, Any] | None:
    """The live object of ``key``, or None."""
    return kube.get_optional(resource_for(key), key.name, namespace=key.namespace)


def fetch_served(kube: Kube, api_version: str, resource: str | None = None) -> bool:
    """Whether the API serves a group-version (cert-manager.io/v1, policy/v1beta1), and, if
    named, its ``resource``."""
    group, _, version = api_version.rpartition("/")
    return kube.discovery().served(group, version, resource)


# --- comparison (pure) -------------------------------------------------------------------------


def contains(live: Any, want: Any) -> bool:
    """Whether ``live`` already has every field of ``want`` with the same value.

    Extra fields in ``live`` (server defaults, other writers) do not count; lists must match
    element by element (we replace them as a whole when they differ).
    """
    if isinstance(want, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(live, list)
            and len(live) == len(want)
            and all(contains(a, b) for a, b in zip(live, want, strict=True))
        )
    if isinstance(want, bool) or isinstance(live, bool):
        return live is want
    return bool(live == want)


def fetch_installed_settings(kube: Kube, namespace: str) -> Settings | None:
    """The settings file of an existing installation (its ConfigMap), if there is one."""
    cm = kube.get_optional(r.CONFIG_MAP, render.CONFIG_MAP, namespace=namespace)
    if cm is None:
        return None
    text = (cm.get("data") or {}).get(render.CONFIG_KEY)
    if not text:
        return None
    try:
        return settings_from_mapping(yaml.safe_load(text))
    except (ConfigError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"configmap {namespace}/{render.CONFIG_MAP}",
            f"the installed {render.CONFIG_KEY} is invalid ({exc}); pass --config to replace it",
        ) from exc


# --- install -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    key: render.ObjectKey
    outcome: Outcome
    note: str = ""

    def line(self, *, dry_run: bool = False) -> str:
        suffix = (
            " (server dry run)"
            if dry_run and self.outcome in ("created", "configured", "deleted")
            else ""
        )
        note = f" ({self.note})" if self.note else ""
        return f"{self.key.describe()} {self.outcome}{suffix}{note}"


@dataclass
class InstallResult:
    changes: list[Change] = field(default_factory=list)
    cert_plan: rotation.InstallCertPlan | None = None

    @property
    def changed(self) -> bool:
        return any(c.outcome not in ("unchanged", "kept") for c in self.changes)


@dataclass(frozen=True)
class InstallOptions:
    settings: Settings
    components: tuple[str, ...] = ()
    image: str | None = None
    dry_run: bool = False
    webhook_url: str | None = None
    """Out-of-cluster webhook (``clientConfig.url``, loopback only) instead of the Service."""
    extra_sans: tuple[str, ...] = ()
    """More names/addresses for the serving certificate (the webhook URL's host is added)."""
    admission: str = "webhook"
    """``policy``: MutatingAdmissionPolicy instead of the webhook (install/admission_policy)."""
    policy_version: str = "v1"

    @property
    def cert_manager(self) -> bool:
        return "cert-manager" in self.components

    def serving_extras(self) -> tuple[str, ...]:
        """``extra_sans`` plus the host the API server calls with ``webhook_url``."""
        host = urlsplit(self.webhook_url).hostname if self.webhook_url else None
        return tuple(dict.fromkeys([*self.extra_sans, *([host] if host else [])]))


def _strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def describe_conflicts(message: str) -> str:
    """``.spec.replicas from "kubectl-scale"`` out of the API server's conflict Status
    (``Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1:
    .spec.replicas``; several: ``conflicts with "m" using v1:\n- .a\n- .b``)."""
    text = message.split("Apply failed with ", 1)[-1]
    text = text.split(": ", 1)[-1] if "conflict" in text.split(": ", 1)[0] else text
    parts = []
    for chunk in re.split(r"(?:^|\n)(?=conflicts? with )", text):
        head, _, fields = chunk.partition(":")
        manager = re.search(r'with ("[^"]*")', head)
        # One field per line ("- .a"); a field path itself may hold commas ([port=1,proto=x]).
        names = [f.strip().removeprefix("- ") for f in fields.split("\n") if f.strip()]
        if manager and names:
            parts.append(f"{', '.join(names)} from {manager.group(1)}")
    return "; ".join(parts) or text.strip()


class Installer:
    """Applies rendered objects and manages the TLS material (I/O)."""

    def __init__(
        self,
        kube: Kube,
        *,
        dry_run: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.dry_run = dry_run
        self._echo = echo or (lambda _line: None)
        self._dry_namespaces: set[str] = set()
        """Namespaces a dry run would create: the server cannot dry-run objects inside them."""

    def get(self, key: render.ObjectKey) -> dict[str, Any] | None:
        return fetch_object(self.kube, key)

    def report(self, change: Change) -> Change:
        self._echo(change.line(dry_run=self.dry_run))
        return change

    def apply(self, obj: Mapping[str, Any]) -> Change:
        key = render.ObjectKey.of(obj)
        want = _strip(obj)
        live = self.get(key)
        if key.kind == "Namespace":
            return self._apply_namespace(key, want, live)
        if key.namespace in self._dry_namespaces:
            return self.report(Change(key, "created", "in the namespace the dry run creates"))
        return self._server_side_apply(key, want, live)

    def _server_side_apply(
        self, key: render.ObjectKey, want: dict[str, Any], live: dict[str, Any] | None
    ) -> Change:
        """Apply ``want`` as :data:`FIELD_MANAGER`; take over conflicting fields, and say so."""
        resource = resource_for(key)
        note = ""
        try:
            applied = self.kube.apply(
                resource,
                want,
                namespace=key.namespace,
                field_manager=FIELD_MANAGER,
                dry_run=self.dry_run,
            )
        except KubeConflict as exc:
            note = f"took over {describe_conflicts(str(exc))}"
            applied = self.kube.apply(
                resource,
                want,
                namespace=key.namespace,
                field_manager=FIELD_MANAGER,
                dry_run=self.dry_run,
                force=True,
            )
        if live is None:
            return self.report(Change(key, "created", note))
        # A dry run never writes, so its answer's resourceVersion says nothing.
        same = contains(live, want) if self.dry_run else _version(applied) == _version(live)
        return self.report(Change(key, "unchanged" if same else "configured", note))

    def _apply_namespace(
        self, key: render.ObjectKey, want: dict[str, Any], live: dict[str, Any] | None
    ) -> Change:
        # Our mark goes into every apply: a field an apply once set and then leaves out is
        # removed by the API server.
        body = json.loads(json.dumps(want))
        body["metadata"].setdefault("annotations", {})[CREATED_BY_ANNOTATION] = CREATED_BY_INSTALL
        if live is None:
            change = self._server_side_apply(key, body, None)
            if self.dry_run:
                self._dry_namespaces.add(key.name)
            return change
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        if annotations.get(CREATED_BY_ANNOTATION) != CREATED_BY_INSTALL:
            # Someone else's namespace: its labels (e.g. Pod Security enforce levels) protect
            # their workloads, so we do not touch it.
            return self.report(Change(key, "unchanged", "existed before install; left as is"))
        return self._server_side_apply(key, body, live)

    # -- certificates --

    def fetch_tls(self, namespace: str) -> tuple[dict[str, bytes] | None, dict[str, str], bytes]:
        """(Secret data decoded or None, its annotations, the live caBundle PEM or b"")."""
        secret = self.kube.get_optional(r.SECRET, render.TLS_SECRET, namespace=namespace)
        hooks = self.kube.get_optional(
            r.MUTATING_WEBHOOK_CONFIGURATION, render.WEBHOOK_CONFIGURATION
        )
        data = None
        annotations: dict[str, str] = {}
        if secret is not None:
            data = rotation.decode_secret_data(secret)
            annotations = dict((secret.get("metadata") or {}).get("annotations") or {})
        return data, annotations, rotation.bundle_of(hooks)


def prepare_manifests(
    options: InstallOptions,
    *,
    rendered: Sequence[dict[str, Any]],
    tls: TlsMaterial | None = None,
    guard: bool = False,
) -> list[dict[str, Any]]:
    """Rendered + settings (+ caBundle and Secret with ``tls``, + the namespace guard with
    ``guard``), in apply order."""
    objects = render.build_manifests(
        rendered,
        settings=options.settings,
        image=options.image,
        webhook_url=options.webhook_url,
        admission=options.admission,
        policy_version=options.policy_version,
        guard=guard,
    )
    if tls is not None and not options.cert_manager:
        render.set_ca_bundle(objects, tls.bundle)
        objects.append(
            render.build_tls_secret(
                options.settings.namespace, tls.data, annotations=tls.annotations
            )
        )
    return render.sort_for_apply(objects)


def install(
    kube: Kube,
    options: InstallOptions,
    *,
    rendered: Sequence[dict[str, Any]],
    echo: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> InstallResult:
    """Apply everything; print one line per object through ``echo``."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    installer = Installer(kube, dry_run=options.dry_run, echo=echo)
    result = InstallResult()
    ns = options.settings.namespace
    if options.cert_manager and not fetch_served(kube, "cert-manager.io/v1"):
        raise VsphereKaleError(
            "the cert-manager overlay needs cert-manager (cert-manager.io/v1 is not served): "
            "install cert-manager first, or drop --overlay cert-manager"
        )
    if "psp" in options.components and not fetch_served(kube, "policy/v1beta1"):
        raise VsphereKaleError(
            "the psp overlay needs PodSecurityPolicy (policy/v1beta1), removed in Kubernetes "
            "1.25: drop --overlay psp on this cluster"
        )
    tls: TlsMaterial | None = None
    if not options.cert_manager:
        existing, annotations, bundle_pem = installer.fetch_tls(ns)
        extras = options.serving_extras()
        plan = rotation.plan_install_certs(
            existing,
            bundle_pem,
            now=moment,
            dns_names=build_serving_names(ns, annotations, extras),
        )
        result.cert_plan = plan
        tls = build_certificates(
            plan, existing, annotations, namespace=ns, now=moment, extras=extras
        )
    guard = namespace_guard.decide_guard(
        options.settings.pod_security.namespace_guard,
        served=fetch_served(kube, namespace_guard.API_VERSION, namespace_guard.RESOURCE),
    )
    objects = prepare_manifests(options, rendered=rendered, tls=tls, guard=guard)
    if options.cert_manager:
        _keep_injected_bundle(installer, objects)
    set_id = applyset.build_applyset_id(applyset.PARENT_NAME, ns)
    parent_key = render.ObjectKey("v1", applyset.PARENT_KIND, applyset.PARENT_NAME, ns)
    parent = installer.get(parent_key)
    applyset.check_parent(parent, ns)
    members = [applyset.build_member(obj, set_id) for obj in objects]
    kinds = {
        applyset.MemberKey.of(m).group_kind
        for m in members
        if applyset.is_member_kind(render.kind_of(m))
    }
    spaces = {str(render.meta(m)["namespace"]) for m in members if render.meta(m).get("namespace")}
    # KEP-3659: the parent first names every kind that may hold a member (recorded and
    # rendered), so an install interrupted before its prune still knows where to look.
    superset = applyset.build_parent(
        ns,
        group_kinds=kinds | applyset.recorded_group_kinds(parent),
        additional_namespaces=spaces | applyset.recorded_namespaces(parent),
    )
    # Right after the Namespace it lives in, before any member.
    first = next((i + 1 for i, m in enumerate(members) if render.kind_of(m) == "Namespace"), 0)
    for obj in [*members[:first], superset, *members[first:]]:
        result.changes.append(installer.apply(obj))
    # Prune after everything rendered is in place: when --admission changes, the other mode's
    # objects go only once this mode's are there (both at once is harmless; neither would
    # admit claims unchanged).
    result.changes += prune(
        installer,
        set_id,
        applied=[applyset.MemberKey.of(m) for m in members],
        namespaces=spaces | applyset.recorded_namespaces(parent) | {ns},
        keep=_kept_while_cert_manager(options),
    )
    exact = applyset.build_parent(ns, group_kinds=kinds, additional_namespaces=spaces)
    if exact != superset and not installer.dry_run:
        # Silent: the line for the parent was printed above; this only narrows its kinds.
        kube.apply(r.CONFIG_MAP, exact, namespace=ns, field_manager=FIELD_MANAGER, force=True)
    return result


def _kept_while_cert_manager(options: InstallOptions) -> dict[applyset.MemberKey, str]:
    """With cert-manager, the TLS Secret install once wrote is the one cert-manager's
    Certificate now writes into (same name): pruning it would pull it from under the pods."""
    if not options.cert_manager:
        return {}
    key = applyset.MemberKey("Secret", options.settings.namespace, render.TLS_SECRET)
    return {key: "cert-manager's Certificate writes it now"}


def prune(
    installer: Installer,
    set_id: str,
    *,
    applied: Sequence[applyset.MemberKey],
    namespaces: set[str],
    keep: Mapping[applyset.MemberKey, str] | None = None,
) -> list[Change]:
    """Delete the members of our ApplySet this install did not apply (see
    :mod:`.applyset`: only objects we applied and labelled, each by uid); one line each."""
    live = applyset.fetch_members(
        installer.kube, set_id, resources=RESOURCES.values(), namespaces=namespaces
    )
    changes = []
    for verdict in applyset.decide_prune(
        live, applied=applied, applyset_id=set_id, manager=FIELD_MANAGER, keep=keep
    ):
        key = render.ObjectKey.of(verdict.obj)
        if not verdict.prune:
            changes.append(installer.report(Change(key, "kept", verdict.why)))
            continue
        uid = str(render.meta(verdict.obj).get("uid") or "")
        changes.append(delete_object(installer, key, uid=uid, note=f"pruned: {verdict.why}"))
    return changes


def delete_object(
    installer: Installer, key: render.ObjectKey, *, uid: str = "", note: str = ""
) -> Change:
    """Delete one object; with ``uid``, only that very object (a replacement is kept)."""
    try:
        installer.kube.delete(
            resource_for(key),
            key.name,
            namespace=key.namespace,
            preconditions={"uid": uid} if uid else None,
            dry_run=installer.dry_run,
        )
    except KubeNotFound:
        return installer.report(Change(key, "not found"))
    except KubeConflict:
        return installer.report(Change(key, "kept", "replaced since it was listed"))
    return installer.report(Change(key, "deleted", note))


def _keep_injected_bundle(installer: Installer, objects: Sequence[dict[str, Any]]) -> None:
    """cert-manager mode: carry the caBundle cainjector wrote into our webhook configuration,
    so our apply agrees with it (the same value is co-owned, never a conflict or a blank
    bundle until cainjector notices)."""
    hooks = render.find(objects, "MutatingWebhookConfiguration", render.WEBHOOK_CONFIGURATION)
    if hooks is None:
        return
    live = installer.get(render.ObjectKey.of(hooks))
    bundle = rotation.bundle_of(live)
    if bundle:
        render.set_ca_bundle(objects, bundle)


def render_offline(
    options: InstallOptions,
    *,
    rendered: Sequence[dict[str, Any]],
    with_certificates: bool,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """``-o yaml``: the manifests without touching a cluster.

    Without ``with_certificates`` neither the TLS Secret nor a caBundle is included: what
    GitOps should own (see README). With it, a fresh CA and serving certificate are made --
    and their private keys printed -- for pipelines that seal or vault the Secret themselves.
    """
    tls = None
    if with_certificates and not options.cert_manager:
        plan = rotation.InstallCertPlan("new-ca", "rendered offline")
        tls = build_certificates(
            plan,
            None,
            {},
            namespace=options.settings.namespace,
            now=now or dt.datetime.now(dt.timezone.utc),
            extras=options.serving_extras(),
        )
    guard = namespace_guard.decide_guard(options.settings.pod_security.namespace_guard, served=None)
    return prepare_manifests(options, rendered=rendered, tls=tls, guard=guard)
