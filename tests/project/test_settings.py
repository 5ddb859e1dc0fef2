"""Settings: the YAML schema, defaults, flag overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsphere_kale.errors import ConfigError
from vsphere_kale.settings import (
    Settings,
    load_settings,
    settings_from_mapping,
    settings_to_mapping,
)


def test_defaults_match_the_design() -> None:
    s = Settings()
    assert s.storage.rwx_storage_class is None
    assert s.storage.access_modes == ("ReadWriteMany",)
    assert s.storage.excluded_namespaces == ("kube-system", "kube-public", "kube-node-lease")
    assert s.pod_security.mode == "auto"
    assert s.pod_security.psp_cluster_role == "psp:vmware-system-privileged"
    assert s.pod_security.role_binding_name == "vsphere-kale-psp"
    assert (s.pod_security.psa_level, s.pod_security.psa_warn_level) == ("baseline", "restricted")
    assert s.pod_security.resync_seconds == 600
    assert s.pod_security.namespace_guard == "auto"
    assert s.webhook_excluded_namespaces >= {"kube-system", "vsphere-kale"}


def test_full_file_round_trips(tmp_path: Path) -> None:
    data = {
        "storage": {
            "rwxStorageClass": "nfs-client",
            "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
            "rwxCapableClasses": ["vsan-file"],
            "excludedNamespaces": ["kube-system"],
        },
        "podSecurity": {
            "mode": "psa",
            "pspClusterRole": "psp:vmware-system-restricted",
            "roleBindingName": "rb",
            "psaLevel": "privileged",
            "psaWarnLevel": "baseline",
            "extraNamespaces": ["kubeflow"],
            "excludedNamespaces": ["bob"],
            "overrideExisting": True,
            "resyncSeconds": 60,
            "namespaceGuard": "never",
        },
        "namespace": "kale-system",
    }
    s = settings_from_mapping(data)
    assert settings_to_mapping(s) == data
    assert s.webhook_excluded_namespaces == {"kube-system", "kale-system"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"storage": {"accessModes": ["ReadWriteMany", "ReadWriteLots"]}},
            "storage.accessModes[1]: 'ReadWriteLots' is not an access mode",
        ),
        ({"storage": {"rwxClass": "x"}}, "storage.rwxClass: unknown key"),
        ({"stroage": {}}, "stroage: unknown key"),
        ({"storage": "nfs"}, "storage: expected a mapping, got a string"),
        ({"storage": {"accessModes": "ReadWriteMany"}}, "storage.accessModes: expected a list"),
        ({"storage": {"rwxStorageClass": 5}}, "storage.rwxStorageClass: expected a string"),
        (
            {"storage": {"rwxStorageClass": "NFS_Client"}},
            "storage.rwxStorageClass: 'NFS_Client' is not a valid name",
        ),
        (
            {"podSecurity": {"mode": "strict"}},
            "podSecurity.mode: 'strict' is not a pod-security mode",
        ),
        (
            {"podSecurity": {"psaLevel": "open"}},
            "podSecurity.psaLevel: 'open' is not a Pod Security level",
        ),
        (
            {"podSecurity": {"overrideExisting": "yes"}},
            "podSecurity.overrideExisting: expected true or false",
        ),
        (
            {"podSecurity": {"resyncSeconds": "600"}},
            "podSecurity.resyncSeconds: expected an integer",
        ),
        (
            {"podSecurity": {"resyncSeconds": 0}},
            "podSecurity.resyncSeconds: must be between 10 and 604800, got 0",
        ),
        (
            {"podSecurity": {"resyncSeconds": True}},
            "podSecurity.resyncSeconds: expected an integer",
        ),
        ({"podSecurity": {"extraNamespaces": ["Kubeflow"]}}, "podSecurity.extraNamespaces[0]"),
        (["storage"], "(top level): expected a mapping"),
    ],
)
def test_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert message in str(info.value)


def test_file_from_env_and_flag_override(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage:\n  rwxStorageClass: nfs-a\n")
    s = load_settings(environ={"VSPHERE_KALE_CONFIG": str(path)})
    assert s.storage.rwx_storage_class == "nfs-a"
    s = load_settings(str(path), environ={}, rwx_storage_class="nfs-b")
    assert s.storage.rwx_storage_class == "nfs-b"


def test_bad_flag_and_bad_file_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--rwx-storage-class"):
        load_settings(environ={}, rwx_storage_class="Bad Class")
    with pytest.raises(ConfigError, match="--config: cannot read"):
        load_settings(str(tmp_path / "missing.yaml"), environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(str(bad), environ={})


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_settings(str(path), environ={}) == Settings()


# --- bounds (issue 10, finding 7: resyncSeconds 1e20 killed the resync thread) -------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"podSecurity": {"resyncSeconds": 10**20}},
            "podSecurity.resyncSeconds: must be between 10 and 604800, got 1e+20",
        ),
        ({"podSecurity": {"resyncSeconds": 9}}, "podSecurity.resyncSeconds: must be between"),
        ({"server": {"bodyTimeoutSeconds": 0}}, "server.bodyTimeoutSeconds: must be between"),
        ({"server": {"bodyTimeoutSeconds": 1e9}}, "server.bodyTimeoutSeconds: must be between"),
        ({"server": {"bodyTimeoutSeconds": float("nan")}}, "server.bodyTimeoutSeconds: must be a"),
        ({"server": {"bodyTimeoutSeconds": float("inf")}}, "server.bodyTimeoutSeconds: must be a"),
        ({"server": {"idleTimeoutSeconds": -1}}, "server.idleTimeoutSeconds: must be between"),
        (
            {"server": {"idleTimeoutSeconds": "fast"}},
            "server.idleTimeoutSeconds: expected a number",
        ),
        ({"server": {"maxConnections": 0}}, "server.maxConnections: must be between"),
        ({"server": {"maxConnectionsPerAddress": 10**6}}, "server.maxConnectionsPerAddress"),
        ({"server": {"maxBodyBytes": 1024}}, "server.maxBodyBytes: must be between"),
        ({"server": {"maxBodyBytesPerAddress": 2**40}}, "server.maxBodyBytesPerAddress"),
        ({"server": {"adminMaxInFlight": 0}}, "server.adminMaxInFlight: must be between"),
        ({"server": {"maxConnections": 1.5}}, "server.maxConnections: expected an integer"),
    ],
)
def test_every_number_has_bounds_and_the_error_names_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert message in str(info.value)


def test_every_numeric_field_declares_bounds() -> None:
    from dataclasses import fields

    from vsphere_kale.settings import PodSecuritySettings, ServerSettings, StorageSettings

    for group in (StorageSettings, PodSecuritySettings, ServerSettings):
        for f in fields(group):
            default = getattr(group(), f.name)
            if isinstance(default, int | float) and not isinstance(default, bool):
                assert f.metadata["bounds"] is not None, f"{group.__name__}.{f.name}"


def test_server_budgets_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  bodyTimeoutSeconds: 0.5\n  maxConnections: 8\n")
    settings = load_settings(str(path), environ={})
    assert settings.server.body_timeout_seconds == 0.5
    assert settings.server.max_connections == 8


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("storage:\n  rwxStorageClass: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
        (bytes(range(256)) * 4, "is not UTF-8 text"),
        (b"storage: [\n", "is not valid YAML at line"),
        (b"a: \x00\n", "is not valid YAML"),
    ],
)
def test_unreadable_config_is_one_sentence(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(str(path), environ={})
    message = str(info.value)
    assert message.startswith("--config: ") and fragment in message
    assert "\n" not in message and "Traceback" not in message
