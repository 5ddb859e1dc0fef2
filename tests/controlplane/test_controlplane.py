"""The real control plane's launcher, without binaries: lookup, errors, the files it writes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vsphere_kale import controlplane as cp


def make_binaries(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)


def test_missing_binaries_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(cp.ControlPlaneError) as caught:
        cp.find_binaries({"XDG_CACHE_HOME": str(tmp_path)})
    assert "run tools/control-plane/build" in str(caught.value)
    assert "KUBEBUILDER_ASSETS" in str(caught.value)


def test_kubebuilder_assets_wins_over_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = cp.default_cache_dir({"XDG_CACHE_HOME": str(cache)})
    make_binaries(built, "etcd", "kube-apiserver", "kube-controller-manager")
    assets = tmp_path / "envtest"
    make_binaries(assets, "etcd", "kube-apiserver")  # setup-envtest ships no controller manager
    found = cp.find_binaries({"XDG_CACHE_HOME": str(cache), "KUBEBUILDER_ASSETS": str(assets)})
    assert found.etcd == assets / "etcd"
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.kube_controller_manager == built / "kube-controller-manager"


def test_assets_without_etcd_name_the_variable(tmp_path: Path) -> None:
    make_binaries(tmp_path, "kube-apiserver")
    with pytest.raises(cp.ControlPlaneError, match=r"no executable etcd in KUBEBUILDER_ASSETS="):
        cp.find_binaries({"KUBEBUILDER_ASSETS": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})


def test_the_cache_dir_is_the_build_scripts() -> None:
    script = (Path(__file__).parents[2] / "tools" / "control-plane" / "build").read_text()
    assert "vsphere-kale/control-plane/${kube_version}-etcd${etcd_version}" in script
    gomod = (
        Path(__file__).parents[2] / "tools" / "control-plane" / "apiserver" / "go.mod"
    ).read_text()
    assert f"k8s.io/kubernetes v{cp.KUBE_VERSION}" in gomod
    etcd_mod = (
        Path(__file__).parents[2] / "tools" / "control-plane" / "etcd" / "go.mod"
    ).read_text()
    assert f"go.etcd.io/etcd/server/v3 v{cp.ETCD_VERSION}" in etcd_mod


def test_psp_flavor_is_one_sentence() -> None:
    with pytest.raises(cp.ControlPlaneError) as caught:
        cp.build_admission_config("psp")
    assert "PodSecurityPolicy was removed in Kubernetes 1.25" in str(caught.value)


def test_admission_config_mirrors_tkr_1_26() -> None:
    config = cp.build_admission_config("psa")
    (plugin,) = config["plugins"]
    assert plugin["name"] == "PodSecurity"
    defaults = plugin["configuration"]["defaults"]
    assert {defaults[m] for m in ("enforce", "audit", "warn")} == {"restricted"}
    assert plugin["configuration"]["exemptions"]["namespaces"] == ["kube-system"]


def test_token_file_lines_and_refusal_of_csv_breaking_names() -> None:
    text = cp.build_token_file(
        {"t1": ("alice@example.com", []), "t2": ("root", ["system:masters"])}
    )
    assert text.splitlines() == [
        't1,alice@example.com,alice@example.com,""',
        't2,root,root,"system:masters"',
    ]
    with pytest.raises(ValueError):
        cp.build_token_file({"t,3": ("x", [])})


def test_last_log_line_strips_control_characters(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"first\nE1203 boom \x1b[31mred\x1b[0m\n\n")
    assert cp.last_log_line(log) == "E1203 boom [31mred[0m"
    assert cp.last_log_line(tmp_path / "missing.log") == "(no log)"


def test_free_ports_come_from_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    # The kernel's bind(0) pick comes from the range outgoing connections' source ports come
    # from; a server that binds minutes later (the playground's serve) lost one to a client.
    ephemeral = cp.config.ephemeral_port_range()
    held = []
    try:
        for _ in range(30):
            port = cp.free_port()
            assert port not in ephemeral
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))  # free when handed out
            listener.listen()
            held.append(listener)
        assert len({sock.getsockname()[1] for sock in held}) == len(held)
    finally:
        for sock in held:
            sock.close()


def test_a_port_somebody_listens_on_is_skipped() -> None:
    def bindable(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    handed_out = cp.config._handed_out  # this process's earlier picks are skipped too
    low = next(
        p
        for p in range(20000, 30000, 2)
        if bindable(p) and bindable(p + 1) and p + 1 not in handed_out
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", low))
        busy.listen()
        # Two candidates, one taken: the other is the only answer.
        assert cp.free_port(ephemeral=range(low + 2, 60999), lowest=low) == low + 1


def test_without_room_below_the_ephemeral_range_the_kernel_picks() -> None:
    port = cp.free_port(ephemeral=range(1024, 65535))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
