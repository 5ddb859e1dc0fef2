"""Reading kubeconfig files for the CLI's messages: which files, which credential (no I/O
beyond temporary files; the messages end to end are in tests/commands)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from vsphere_kale.errors import KubeError
from vsphere_kale.kube.kubeconfig import describe_credential, read_kubeconfig_source


@pytest.mark.parametrize(
    ("user", "described"),
    [
        ({"token": "s3cret"}, "a bearer token"),
        ({"tokenFile": "/run/token"}, "token file /run/token"),
        (
            {"client-certificate": "/pki/me.crt", "client-key": "/pki/me.key"},
            "client certificate /pki/me.crt",
        ),
        (
            {"client-certificate-data": "LS0t", "client-key-data": "LS0t"},
            "an embedded client certificate",
        ),
        (
            {"exec": {"command": "kubectl-vsphere", "apiVersion": "x"}},
            "exec plugin kubectl-vsphere",
        ),
        ({"username": "ops", "password": "pw"}, "basic auth as ops"),
        ({}, "no credential"),
    ],
)
def test_the_kind_of_credential_is_named_never_its_value(
    user: dict[str, object], described: str
) -> None:
    text = describe_credential(user)
    assert text == described
    assert "s3cret" not in text and "pw" not in text and "LS0t" not in text


def write(path: Path, *, context: str, user: str, server: str, secret: dict[str, str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": context, "cluster": {"server": server}}],
                "users": [{"name": user, "user": secret}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
                "current-context": context,
            }
        ),
        encoding="utf-8",
    )
    return path


def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a", context="lab", user="alice", server="https://a:6443", secret={"token": "x"}
    )
    second = write(
        tmp_path / "b",
        context="prod",
        user="bob",
        server="https://b:6443",
        secret={"tokenFile": "/t"},
    )
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])}
    source = read_kubeconfig_source(None, context="prod", environ=env)
    assert (source.context, source.user, source.server) == ("prod", "bob", "https://b:6443")
    assert source.credential == "token file /t"
    assert source.files.startswith("$KUBECONFIG (")
    # The first file's current-context is the default, as for kubectl.
    assert read_kubeconfig_source(None, context=None, environ=env).context == "lab"


def test_every_file_of_the_list_missing_is_named(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"{tmp_path / 'x'}{os.pathsep}{tmp_path / 'y'}"}
    with pytest.raises(KubeError, match="does not exist") as caught:
        read_kubeconfig_source(None, context=None, environ=env)
    assert str(tmp_path / "x") in str(caught.value) and str(tmp_path / "y") in str(caught.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"- just\n- a list\n", "is not a kubeconfig"),
        (b"\xff\xfe\x00binary", "is not UTF-8 text"),
        (b"clusters: [\n", "is not valid YAML"),
    ],
)
def test_a_file_that_is_not_a_kubeconfig_is_one_sentence(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "config"
    path.write_bytes(content)
    with pytest.raises(KubeError, match=problem) as caught:
        read_kubeconfig_source(str(path), context=None, environ={})
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
