"""One Settings object for every face of vsphere-kale.

The YAML file (``--config`` or ``VSPHERE_KALE_CONFIG``) is the same file the Deployment
mounts from a ConfigMap. Keys are camelCase like Kubernetes; fields are snake_case. Unknown
keys and wrong types fail at start with a :class:`~vsphere_kale.errors.ConfigError` that
names the key, e.g. ``storage.accessModes[1]: 'ReadWriteLots' is not an access mode``.

This module is pure apart from :func:`load_settings`, the only place that reads a file or
the environment for configuration.
"""

from __future__ import annotations

import math
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
NAMESPACE_GUARD_CHOICES = ("auto", "always", "never")
"""Not on/off: YAML 1.1 reads those unquoted as booleans."""
PSA_LEVELS = ("privileged", "baseline", "restricted")
PSA_LEVEL_CHOICES = (*PSA_LEVELS, "auto")

# RFC 1123 subdomain: storage class, ClusterRole and RoleBinding names. ClusterRole names
# may also hold ':' (``psp:vmware-system-privileged``), which RBAC allows (path segment names).
# \Z, not $: "$" also matches before a trailing newline ("nfs-client\n" passed).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_RBAC_NAME = re.compile(r"[^/%\x00-\x1f\x7f]+\Z")


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


def _key(
    name: str,
    check: Callable[[str], str | None] | None = None,
    *,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Field metadata: the YAML key, an optional per-string validator, and for numbers the
    inclusive bounds (every number has some: ``resyncSeconds: 100000000000000000000`` once
    overflowed the timer of the resync thread and killed it)."""
    return {"key": name, "check": check, "bounds": bounds}


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
        default="baseline",
        metadata=_key("psaLevel", _one_of(PSA_LEVEL_CHOICES, "a Pod Security level or auto")),
    )
    """``pod-security.kubernetes.io/enforce`` in psa mode. ``baseline`` admits Kale steps
    (root is allowed) while still refusing host namespaces and privileged pods. ``auto``:
    per namespace, the least privileged level that admits what it runs (Istio's istio-init,
    recorded rejections, the API server's dry-run judgement; docs/reconciler.md)."""

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

    resync_seconds: int = field(
        default=600, metadata=_key("resyncSeconds", bounds=(10, 7 * 24 * 3600))
    )
    """Full resync period. Watches already make the reconciler level-triggered; the resync
    only catches what a lost watch event could hide. At least 10 s (each resync lists every
    managed namespace), at most a week."""

    namespace_guard: str = field(
        default="auto",
        metadata=_key(
            "namespaceGuard", _one_of(NAMESPACE_GUARD_CHOICES, "a namespace guard choice")
        ),
    )
    """Install the ValidatingAdmissionPolicy that lets our service account change only Pod
    Security labels, and only on namespaces it manages (install/namespace_guard.py). ``auto``:
    when the cluster serves ValidatingAdmissionPolicy v1 (Kubernetes >= 1.30); ``always``:
    refuse to install without it; ``never``."""


MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Budgets of the HTTPS server (webhook and admin API), against hostile clients: the
    webhook port takes unauthenticated connections. Measured defaults in docs/security.md."""

    body_timeout_seconds: float = field(
        default=10.0, metadata=_key("bodyTimeoutSeconds", bounds=(0.05, 300))
    )
    """From a request's headers to the end of its body. The API server sends a review in one
    write and gives up after its webhook timeout (10 s by default, at most 30 s)."""

    idle_timeout_seconds: float = field(
        default=120.0, metadata=_key("idleTimeoutSeconds", bounds=(0.05, 3600))
    )
    """How long a connection may wait for a request's headers (also bounds a slowloris header
    trickle and a stalled TLS handshake). Above Go's 90 s idle timeout, so the API server
    closes its idle keep-alive connections first."""

    max_connections: int = field(default=512, metadata=_key("maxConnections", bounds=(1, 65536)))
    """Open connections in total; more are closed on accept."""

    max_connections_per_address: int = field(
        default=256, metadata=_key("maxConnectionsPerAddress", bounds=(1, 65536))
    )
    """Open connections from one client address (each API server replica is one address)."""

    max_body_bytes: int = field(
        default=48 * MiB, metadata=_key("maxBodyBytes", bounds=(MiB, 4096 * MiB))
    )
    """Request body bytes buffered at once, all clients together; a request that does not fit
    gets 503 with Retry-After before its body is read."""

    max_body_bytes_per_address: int = field(
        default=24 * MiB, metadata=_key("maxBodyBytesPerAddress", bounds=(MiB, 4096 * MiB))
    )
    """Request body bytes buffered at once for one client address."""

    admin_max_in_flight: int = field(
        default=16, metadata=_key("adminMaxInFlight", bounds=(1, 1024))
    )
    """Admin API requests served at once; more get 429 with Retry-After, so a flood of admin
    calls (each one a TokenReview) cannot slow admission reviews on the same server."""


@dataclass(frozen=True)
class AdminApiSettings:
    """Who the admin API accepts tokens from."""

    audience: str = field(default="vsphere-kale", metadata=_key("audience", _subdomain))
    """The audience the admin API's TokenReview asks for. Notebook pods mount a projected
    service-account token for it (deploy/examples/poddefault-admin-token.yaml): such a token is
    useless against the Kubernetes API, so the service cannot act as the notebook with it."""

    require_audience: bool = field(default=False, metadata=_key("requireAudience"))
    """Refuse tokens not minted for ``audience`` (the notebooks' default API-audience token).
    Off by default for migration: turn it on once every notebook mounts the projected token."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, grouped as in the YAML file."""

    storage: StorageSettings = field(default_factory=StorageSettings, metadata=_key("storage"))
    pod_security: PodSecuritySettings = field(
        default_factory=PodSecuritySettings, metadata=_key("podSecurity")
    )
    server: ServerSettings = field(default_factory=ServerSettings, metadata=_key("server"))
    admin_api: AdminApiSettings = field(default_factory=AdminApiSettings, metadata=_key("adminApi"))
    namespace: str = field(default="vsphere-kale", metadata=_key("namespace", _label))
    """The controller's own namespace: never rewritten by the webhook, home of its Lease."""

    @cached_property
    def webhook_excluded_namespaces(self) -> frozenset[str]:
        """Computed once: the webhook asks on every review."""
        return frozenset(self.storage.excluded_namespaces) | {self.namespace}


_GROUPS = (StorageSettings, PodSecuritySettings, ServerSettings, AdminApiSettings)


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _check_bounds(path: str, value: float, bounds: tuple[float, float] | None) -> None:
    if not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number, got {value}")
    low, high = bounds if bounds is not None else (1, 2**31 - 1)
    if not low <= value <= high:
        raise ConfigError(path, f"must be between {low:g} and {high:g}, got {value:g}")


def _convert(
    path: str,
    value: object,
    default: object,
    check: Callable[[str], str | None] | None,
    bounds: tuple[float, float] | None = None,
) -> object:
    """Check one YAML value against the type of the field's default (and its bounds)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_type_name(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_type_name(value)}")
        _check_bounds(path, value, bounds)
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_type_name(value)}")
        _check_bounds(path, float(value), bounds)
        return float(value)
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
        elif isinstance(default, _GROUPS):
            values[f.name] = _build(type(default), value, path)
        else:
            values[f.name] = _convert(
                path, value, default, f.metadata["check"], f.metadata["bounds"]
            )
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


MAX_CONFIG_BYTES = 1024 * 1024
"""A settings file is a few hundred bytes; a huge one is a mistake (a binary, a log)."""


def _read_yaml(path: str) -> object:
    """Parse the settings file; every failure is one sentence naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("--config", f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "--config",
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 YAML",
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "it does not parse"
        raise ConfigError("--config", f"{path} is not valid YAML{where}: {problem}") from exc


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
        data = _read_yaml(path)
    return with_overrides(
        settings_from_mapping(data), rwx_storage_class=rwx_storage_class, namespace=namespace
    )


def settings_to_mapping(settings: Settings) -> dict[str, Any]:
    """The YAML form (camelCase keys), e.g. for the ConfigMap the installer renders."""

    def dump(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, ServerSettings | AdminApiSettings) and value == type(value)():
                continue  # budgets are written only when changed: rendered files stay short
            if isinstance(value, _GROUPS):
                out[f.metadata["key"]] = dump(value)
            elif isinstance(value, tuple):
                out[f.metadata["key"]] = list(value)
            elif value is not None:
                out[f.metadata["key"]] = value
        return out

    return dump(settings)
