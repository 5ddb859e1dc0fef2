"""One Settings object for every face of vsphere-kale.

The YAML file (``--config`` or ``VSPHERE_KALE_CONFIG``) is the same file the Deployment
mounts from a ConfigMap. Keys are camelCase like Kubernetes; fields are snake_case. Unknown
keys and wrong types fail at start with a :class:`~vsphere_kale.errors.ConfigError` that
names the key, e.g. ``storage.accessModes[1]: 'ReadWriteLots' is not an access mode``.

This module is pure apart from :func:`load_settings`, the only place that reads a file or
the environment for configuration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

import yaml

from vsphere_kale.errors import ConfigError

CONFIG_ENV = "VSPHERE_KALE_CONFIG"

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
POD_SECURITY_MODES = ("auto", "psp", "psa", "off")
PSA_LEVELS = ("privileged", "baseline", "restricted")

# RFC 1123 subdomain: storage class, ClusterRole and RoleBinding names. ClusterRole names
# may also hold ':' (``psp:vmware-system-privileged``), which RBAC allows (path segment names).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RBAC_NAME = re.compile(r"^[^/%]+$")


def _subdomain(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return f"{value!r} is not a valid name (lower-case RFC 1123 subdomain)"
    return None


def _label(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return f"{value!r} is not a valid namespace name (lower-case RFC 1123 label)"
    return None


def _rbac_name(value: str) -> str | None:
    if not value or not _RBAC_NAME.match(value):
        return f"{value!r} is not a valid RBAC object name (no '/' or '%')"
    return None


def _one_of(choices: tuple[str, ...], what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value not in choices:
            return f"{value!r} is not {what} (one of: {', '.join(choices)})"
        return None

    return check


def _key(name: str, check: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """Field metadata: the YAML key and an optional per-string validator."""
    return {"key": name, "check": check}


@dataclass(frozen=True)
class StorageSettings:
    """The ReadWriteMany storage-class rewrite done by the admission webhook."""

    rwx_storage_class: str | None = field(
        default=None, metadata=_key("rwxStorageClass", _subdomain)
    )
    """Class that RWX claims are moved to (usually an NFS provisioner's ``nfs-client``).
    No default: guessing a class would silently send data to the wrong storage. Without it
    the webhook answers every review unchanged."""

    access_modes: tuple[str, ...] = field(
        default=("ReadWriteMany",),
        metadata=_key("accessModes", _one_of(ACCESS_MODES, "an access mode")),
    )
    """Claims asking for any of these modes are rewritten. ReadWriteMany alone by default:
    vSphere CSI block volumes already serve ReadWriteOnce and ReadOnlyMany is rare."""

    rwx_capable_classes: tuple[str, ...] = field(
        default=(), metadata=_key("rwxCapableClasses", _subdomain)
    )
    """Classes that already support RWX (vSAN File Services, another NFS class): never
    rewritten. The earlier tool rewrote these too, moving working claims off their driver."""

    excluded_namespaces: tuple[str, ...] = field(
        default=("kube-system", "kube-public", "kube-node-lease"),
        metadata=_key("excludedNamespaces", _label),
    )
    """Namespaces whose claims are never touched; the controller's own namespace is always
    added. System namespaces hold claims whose storage an admin chose deliberately."""


@dataclass(frozen=True)
class PodSecuritySettings:
    """The reconciler that lets pods run in Kubeflow profile namespaces."""

    mode: str = field(
        default="auto", metadata=_key("mode", _one_of(POD_SECURITY_MODES, "a pod-security mode"))
    )
    """``auto`` picks ``psp`` when the API serves policy/v1beta1 podsecuritypolicies
    (TKG up to 1.24), else ``psa``; ``off`` disables the reconciler."""

    psp_cluster_role: str = field(
        default="psp:vmware-system-privileged", metadata=_key("pspClusterRole", _rbac_name)
    )
    """ClusterRole granting ``use`` of a PSP. Privileged by default because Kale steps run as
    root and Istio's init container needs NET_ADMIN; TKG ships this role."""

    role_binding_name: str = field(
        default="vsphere-kale-psp", metadata=_key("roleBindingName", _rbac_name)
    )
    """Name of the RoleBinding created in each managed namespace (psp mode)."""

    psa_level: str = field(
        default="baseline", metadata=_key("psaLevel", _one_of(PSA_LEVELS, "a Pod Security level"))
    )
    """``pod-security.kubernetes.io/enforce`` in psa mode. ``baseline`` admits Kale steps
    (root is allowed) while still refusing host namespaces and privileged pods."""

    psa_warn_level: str = field(
        default="restricted",
        metadata=_key("psaWarnLevel", _one_of(PSA_LEVELS, "a Pod Security level")),
    )
    """``warn`` and ``audit`` level: users still see what ``restricted`` would refuse."""

    extra_namespaces: tuple[str, ...] = field(default=(), metadata=_key("extraNamespaces", _label))
    """Managed even without a Profile (e.g. ``kubeflow``, ``istio-system``)."""

    excluded_namespaces: tuple[str, ...] = field(
        default=(), metadata=_key("excludedNamespaces", _label)
    )
    """Never managed, even with a Profile."""

    override_existing: bool = field(default=False, metadata=_key("overrideExisting"))
    """Overwrite PSA labels an admin set by hand. Off by default: an explicit choice on a
    namespace beats our default."""

    resync_seconds: int = field(default=600, metadata=_key("resyncSeconds"))
    """Full resync period. Watches already make the reconciler level-triggered; the resync
    only catches what a lost watch event could hide."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, grouped as in the YAML file."""

    storage: StorageSettings = field(default_factory=StorageSettings, metadata=_key("storage"))
    pod_security: PodSecuritySettings = field(
        default_factory=PodSecuritySettings, metadata=_key("podSecurity")
    )
    namespace: str = field(default="vsphere-kale", metadata=_key("namespace", _label))
    """The controller's own namespace: never rewritten by the webhook, home of its Lease."""

    @cached_property
    def webhook_excluded_namespaces(self) -> frozenset[str]:
        """Computed once: the webhook asks on every review."""
        return frozenset(self.storage.excluded_namespaces) | {self.namespace}


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _convert(
    path: str, value: object, default: object, check: Callable[[str], str | None] | None
) -> object:
    """Check one YAML value against the type of the field's default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_type_name(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_type_name(value)}")
        if value <= 0:
            raise ConfigError(path, f"must be positive, got {value}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_type_name(value)}")
        return tuple(_convert(f"{path}[{i}]", item, "", check) for i, item in enumerate(value))
    # str or Optional[str] (default None)
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_type_name(value)}")
    if check is not None and (problem := check(value)) is not None:
        raise ConfigError(path, problem)
    return value


def _build(cls: type[Any], data: object, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "(top level)", f"expected a mapping, got {_type_name(data)}")
    by_key = {f.metadata["key"]: f for f in fields(cls)}
    unknown = [k for k in data if k not in by_key]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(where, f"unknown key (known keys: {', '.join(sorted(by_key))})")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = by_key[key]
        path = f"{prefix}.{key}" if prefix else key
        default = getattr(defaults, f.name)
        if value is None and f.default is None:
            values[f.name] = None
        elif isinstance(default, StorageSettings | PodSecuritySettings):
            values[f.name] = _build(type(default), value, path)
        else:
            values[f.name] = _convert(path, value, default, f.metadata["check"])
    return cls(**values)


def settings_from_mapping(data: object) -> Settings:
    """Validate parsed YAML into Settings; an empty document means all defaults."""
    if data is None:
        return Settings()
    settings: Settings = _build(Settings, data, "")
    return settings


def with_overrides(
    settings: Settings,
    *,
    rwx_storage_class: str | None = None,
    namespace: str | None = None,
) -> Settings:
    """Apply CLI flags over file values (flags win), validating them like file values."""
    if rwx_storage_class is not None:
        if (problem := _subdomain(rwx_storage_class)) is not None:
            raise ConfigError("--rwx-storage-class", problem)
        settings = replace(
            settings, storage=replace(settings.storage, rwx_storage_class=rwx_storage_class)
        )
    if namespace is not None:
        if (problem := _label(namespace)) is not None:
            raise ConfigError("--namespace", problem)
        settings = replace(settings, namespace=namespace)
    return settings


def load_settings(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    rwx_storage_class: str | None = None,
    namespace: str | None = None,
) -> Settings:
    """Read the settings file (``config_path``, else ``$VSPHERE_KALE_CONFIG``, else none)."""
    env = os.environ if environ is None else environ
    path = config_path or env.get(CONFIG_ENV) or None
    data: object = None
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
    return with_overrides(
        settings_from_mapping(data), rwx_storage_class=rwx_storage_class, namespace=namespace
    )


def settings_to_mapping(settings: Settings) -> dict[str, Any]:
    """The YAML form (camelCase keys), e.g. for the ConfigMap the installer renders."""

    def dump(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, StorageSettings | PodSecuritySettings):
                out[f.metadata["key"]] = dump(value)
            elif isinstance(value, tuple):
                out[f.metadata["key"]] = list(value)
            elif value is not None:
                out[f.metadata["key"]] = value
        return out

    return dump(settings)
