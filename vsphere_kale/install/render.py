"""Render ``deploy/`` for one installation: kustomize, then our settings on top.

``vsphere-kale install`` and GitOps apply the *same* files: :func:`fetch_rendered` runs
``kubectl kustomize`` on a throwaway kustomization that points (by relative path, as
kustomize requires) at ``deploy/base`` and the chosen ``deploy/components/*``; everything
after that is pure (:func:`build_manifests`): the namespace moved everywhere it is spelled
(objects, subjects, the webhook's Service and namespaceSelector, cert-manager's annotation and
DNS names, the settings file), the ConfigMap's ``config.yaml`` from the settings, the ``bind``
rule narrowed to ``podSecurity.pspClusterRole``, the image, and (self-managed certificates)
the TLS Secret and the webhook's caBundle.

``deploy/`` is found next to the package when installed from a wheel (pyproject maps
``deploy/base`` and ``deploy/components`` to ``vsphere_kale/deploy/``) and at the repository
root in a source checkout.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vsphere_kale.errors import ConfigError, VsphereKaleError
from vsphere_kale.install import admission_policy, certs, namespace_guard
from vsphere_kale.settings import Settings, settings_from_mapping, settings_to_mapping

Obj = dict[str, Any]

COMPONENTS = ("psp", "cert-manager", "kubeflow-only")
BASE_NAMESPACE = "vsphere-kale"
"""The namespace the files under deploy/ are written for; moved by :func:`build_manifests`."""
NAME = "vsphere-kale"
"""Name of the ServiceAccount, Service, Deployment, ClusterRole, webhook configuration..."""
TLS_SECRET = "vsphere-kale-tls"
CONFIG_MAP = "vsphere-kale-config"
CONFIG_KEY = "config.yaml"
WEBHOOK_CONFIGURATION = "vsphere-kale"
BASE_IMAGE = "ghcr.io/vsphere-kale/vsphere-kale"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "vsphere-kale"
COMMON_LABELS = {"app.kubernetes.io/name": NAME, MANAGED_BY_LABEL: MANAGED_BY}
INJECT_CA_ANNOTATION = "cert-manager.io/inject-ca-from"
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"

# The order objects are applied in. Namespace and RBAC first (everything else lives in or
# needs them); the webhook configuration after the ConfigMap/Service, and the TLS Secret
# after the webhook configuration: when the CA changes, the API server must trust the new CA
# (old + new in the caBundle) before any replica can serve a certificate signed by it. The
# Deployment last, so its pods start with their Secret and ConfigMap in place.
APPLY_ORDER = (
    "Namespace",
    "PodSecurityPolicy",
    "ClusterRole",
    "ClusterRoleBinding",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "PodDisruptionBudget",
    "Issuer",
    "Certificate",
    # --admission policy (install/admission_policy.py): each policy before its binding.
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Secret",
    "Deployment",
)


def find_deploy_dir() -> Path:
    """``deploy/`` of this installation: inside the package (wheel), else the checkout's."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "deploy", package.parent / "deploy"):
        if (candidate / "base" / "kustomization.yaml").is_file():
            return candidate
    raise VsphereKaleError(
        f"cannot find the manifests (deploy/base) next to {package}; reinstall vsphere-kale "
        "from a wheel that ships them or run from a source checkout"
    )


def read_documents(path: Path) -> list[Obj]:
    """The YAML documents of one manifest file under deploy/ (empty documents dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            "deploy/base", f"cannot read {path}: {exc.strerror}; run from a source checkout"
        ) from exc
    return [doc for doc in yaml.safe_load_all(text) if doc]


def build_kustomization(deploy_dir: Path, workdir: Path, components: Sequence[str]) -> str:
    """The throwaway kustomization (kustomize refuses absolute paths, hence relpath)."""
    base = os.path.relpath(deploy_dir / "base", workdir)
    comps = [os.path.relpath(deploy_dir / "components" / c, workdir) for c in components]
    doc: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
    }
    if comps:
        doc["components"] = comps
    return yaml.safe_dump(doc, sort_keys=False)


def check_components(components: Iterable[str]) -> tuple[str, ...]:
    """Known, de-duplicated, in a stable order (the order kustomize applies them)."""
    chosen = set(components)
    unknown = sorted(chosen - set(COMPONENTS))
    if unknown:
        raise ConfigError(
            "--overlay", f"unknown overlay {unknown[0]!r} (one of: {', '.join(COMPONENTS)})"
        )
    return tuple(c for c in COMPONENTS if c in chosen)


def fetch_rendered(
    components: Sequence[str], *, deploy_dir: Path | None = None, kubectl: str = "kubectl"
) -> list[Obj]:
    """``kubectl kustomize`` of deploy/base + ``components`` -> objects (runs a subprocess)."""
    directory = deploy_dir or find_deploy_dir()
    binary = shutil.which(kubectl)
    if binary is None:
        raise VsphereKaleError(
            f"{kubectl} is not on PATH: install kubectl (>= 1.21, for its built-in kustomize)"
        )
    with tempfile.TemporaryDirectory(prefix="vsphere-kale-render-") as tmp:
        workdir = Path(tmp)
        (workdir / "kustomization.yaml").write_text(
            build_kustomization(directory, workdir, components), encoding="utf-8"
        )
        try:
            done = subprocess.run(
                [binary, "kustomize", str(workdir)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise VsphereKaleError("kubectl kustomize did not finish within 60 s") from exc
    if done.returncode != 0:
        raise VsphereKaleError(f"kubectl kustomize failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if isinstance(d, dict)]


def base_settings(deploy_dir: Path | None = None) -> Settings:
    """The settings file the base ships (deploy/base/config.yaml)."""
    path = (deploy_dir or find_deploy_dir()) / "base" / CONFIG_KEY
    return settings_from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


# --- pure transforms ---------------------------------------------------------------------------


def kind_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("kind", ""))


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def find(objects: Iterable[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objects if kind_of(o) == kind and meta(o).get("name") == name), None)


def build_config_yaml(settings: Settings) -> str:
    body = yaml.safe_dump(settings_to_mapping(settings), sort_keys=False)
    return (
        "# Written by `vsphere-kale install` (schema and comments: deploy/base/config.yaml).\n"
        "# Re-running install keeps these values unless --config or a flag changes them.\n" + body
    )


def check_webhook_url(url: str) -> str:
    """An out-of-cluster webhook URL: ``https://<loopback address>:<port>/<path>``.

    For admins who run ``serve`` on the API server's own host while debugging (and for the
    real control plane of the tests, which cannot reach a Service's ClusterIP). Loopback only:
    anything else would send every claim in the cluster to a machine the cluster does not
    manage.
    """
    where = "--webhook-url"
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ConfigError(where, f"{url!r} must start with https:// (the API server uses TLS)")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            where, f"{url!r}: only a loopback host (127.0.0.1, ::1, localhost) is allowed"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ConfigError(where, f"{url!r} needs a port, e.g. https://127.0.0.1:8443/...")
    if not parts.path or parts.path == "/" or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            where, f"{url!r} needs a path (e.g. /mutate/persistentvolumeclaims) and no query"
        )
    return url


def build_manifests(
    rendered: Sequence[Obj],
    *,
    settings: Settings,
    image: str | None = None,
    webhook_url: str | None = None,
    admission: str = "webhook",
    policy_version: str = "v1",
    guard: bool = False,
) -> list[Obj]:
    """Our settings on top of the kustomize output (a new list; ``rendered`` is untouched).

    The namespace is ``settings.namespace``. With ``webhook_url`` (:func:`check_webhook_url`)
    the webhook's ``clientConfig`` names that URL instead of the Service. ``admission``
    ``policy``: admission policies instead of the webhook (install/admission_policy.py).
    ``guard``: the namespace guard too (install/namespace_guard.py).
    """
    ns = settings.namespace
    out = copy.deepcopy(list(rendered))
    for obj in out:
        md = meta(obj)
        kind = kind_of(obj)
        if md.get("namespace") == BASE_NAMESPACE:
            md["namespace"] = ns
        if kind == "Namespace" and md.get("name") == BASE_NAMESPACE:
            md["name"] = ns
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") in (
                BASE_NAMESPACE,
                None,
            ):
                subject["namespace"] = ns
        annotations = md.get("annotations") or {}
        if INJECT_CA_ANNOTATION in annotations:
            annotations[INJECT_CA_ANNOTATION] = f"{ns}/{NAME}"
        if kind == "Certificate" and md.get("name") == NAME:
            obj["spec"]["dnsNames"] = certs.service_dns_names(NAME, ns)
        if kind == "ConfigMap" and md.get("name") == CONFIG_MAP:
            obj["data"] = {CONFIG_KEY: build_config_yaml(settings)}
        if kind == "ClusterRole" and md.get("name") == NAME:
            for rule in obj.get("rules") or []:
                if rule.get("verbs") == ["bind"] and rule.get("resources") == ["clusterroles"]:
                    rule["resourceNames"] = [settings.pod_security.psp_cluster_role]
        if kind == "Deployment" and md.get("name") == NAME and image:
            # Both containers (serve and webhook) run the one image.
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
        if kind == "MutatingWebhookConfiguration" and md.get("name") == WEBHOOK_CONFIGURATION:
            _move_webhooks(obj, ns, settings)
            if webhook_url is not None:
                for hook in obj.get("webhooks") or []:
                    config = hook.setdefault("clientConfig", {})
                    config.pop("service", None)
                    config["url"] = check_webhook_url(webhook_url)
    if admission == "policy":
        out = admission_policy.build_policy_mode(
            out, settings, api_version=policy_version, deployment=NAME
        )
    if guard:
        out += namespace_guard.build_guard_objects(settings)
    return out


def _move_webhooks(obj: Obj, ns: str, settings: Settings) -> None:
    excluded = list(dict.fromkeys([*settings.storage.excluded_namespaces, ns]))
    for hook in obj.get("webhooks") or []:
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict) and service.get("name") == NAME:
            service["namespace"] = ns
        selector = hook.get("namespaceSelector") or {}
        for expression in selector.get("matchExpressions") or []:
            if expression.get("key") == METADATA_NAME_LABEL and expression.get("operator") == (
                "NotIn"
            ):
                # The API server never calls us for these: our outage cannot touch them.
                expression["values"] = excluded


def set_ca_bundle(objects: Sequence[Obj], ca_bundle_pem: bytes) -> None:
    """Put ``caBundle`` (base64 of the PEM bundle) on every webhook of ours, in place."""
    encoded = base64.b64encode(ca_bundle_pem).decode("ascii")
    hooks = find(objects, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
    if hooks is None and find(objects, "MutatingAdmissionPolicy", admission_policy.MUTATING_POLICY):
        return  # --admission policy: no webhook for the API server to trust
    if hooks is None:
        raise VsphereKaleError("the rendered manifests hold no MutatingWebhookConfiguration")
    for hook in hooks.get("webhooks") or []:
        hook.setdefault("clientConfig", {})["caBundle"] = encoded


def build_tls_secret(
    namespace: str, data: Mapping[str, bytes], *, annotations: Mapping[str, str] | None = None
) -> Obj:
    """The Secret the Deployment mounts: tls.crt, tls.key, ca.crt and ca.key.

    ``ca.key`` is here so the leader can renew the serving certificate without a person. The
    trade-off: the CA is trusted by nothing but our own webhook configuration's caBundle, so its
    key lets a thief impersonate our webhook -- what ``tls.key`` already allows -- but for as
    long as the CA lives instead of until the serving certificate expires. Only our own
    ServiceAccount may read the Secret (Role, resourceNames). With cert-manager no CA key
    leaves cert-manager's own Secret.
    """
    secret: Obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": TLS_SECRET,
            "namespace": namespace,
            "labels": dict(COMMON_LABELS),
        },
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(data.items())},
    }
    if annotations:
        secret["metadata"]["annotations"] = dict(annotations)
    return secret


def sort_for_apply(objects: Iterable[Obj]) -> list[Obj]:
    rank = {kind: i for i, kind in enumerate(APPLY_ORDER)}
    return sorted(objects, key=lambda o: rank.get(kind_of(o), len(rank)))


def dump_yaml(objects: Iterable[Obj]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False, explicit_start=True)


@dataclass(frozen=True)
class ObjectKey:
    """Identifies one object for apply/delete and for printing (``kind/name``)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectKey:
        md = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            kind_of(obj),
            str(md.get("name", "")),
            md.get("namespace"),
        )

    def describe(self) -> str:
        group = self.api_version.split("/")[0] if "/" in self.api_version else ""
        kind = self.kind.lower() + (f".{group}" if group else "")
        return f"{kind}/{self.name}"
