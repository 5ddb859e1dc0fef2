"""Rendering for install: settings on top of ``kubectl kustomize`` output, the comparison
that decides ``unchanged``, the rollout verdict behind ``--wait``, and that a wheel ships the
manifests it renders."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from vsphere_kale.install import render
from vsphere_kale.install.installer import contains
from vsphere_kale.install.wait import decide_rollout, decide_service_ready
from vsphere_kale.settings import PodSecuritySettings, Settings, StorageSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render.fetch_rendered(render.COMPONENTS)


def test_another_namespace_is_applied_everywhere_it_is_spelled(
    rendered: list[dict[str, Any]],
) -> None:
    settings = Settings(
        storage=StorageSettings(rwx_storage_class="nfs-client"),
        pod_security=PodSecuritySettings(psp_cluster_role="psp:vmware-system-restricted"),
        namespace="kale-system",
    )
    objects = render.build_manifests(rendered, settings=settings, image="reg.example/vk:2")
    text = yaml.safe_dump_all(objects)
    # No trace of the default namespace is left (names of cluster objects are not namespaces).
    for obj in objects:
        assert obj["metadata"].get("namespace") in (None, "kale-system"), obj["metadata"]
        for subject in obj.get("subjects") or []:
            assert subject["namespace"] == "kale-system"
    assert render.find(objects, "Namespace", "kale-system") is not None
    hooks = render.find(objects, "MutatingWebhookConfiguration", "vsphere-kale")
    assert hooks is not None
    (hook,) = hooks["webhooks"]
    assert hook["clientConfig"]["service"]["namespace"] == "kale-system"
    names = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert names == ["kube-system", "kube-public", "kube-node-lease", "kale-system"]
    assert hooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "kale-system/vsphere-kale"
    )
    certificate = render.find(objects, "Certificate", "vsphere-kale")
    assert certificate is not None
    assert "vsphere-kale.kale-system.svc" in certificate["spec"]["dnsNames"]
    config = yaml.safe_load(
        render.find(objects, "ConfigMap", "vsphere-kale-config")["data"]["config.yaml"]
    )  # type: ignore[index]
    assert config["namespace"] == "kale-system"
    assert config["podSecurity"]["pspClusterRole"] == "psp:vmware-system-restricted"
    role = render.find(objects, "ClusterRole", "vsphere-kale")
    assert role is not None
    (bind,) = [r for r in role["rules"] if r["verbs"] == ["bind"]]
    assert bind["resourceNames"] == ["psp:vmware-system-restricted"]
    deployment = render.find(objects, "Deployment", "vsphere-kale")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/vk:2"
    assert "reg.example/vk:2" in text
    # The input is left alone (install and uninstall render from the same output).
    assert render.find(rendered, "Namespace", "vsphere-kale") is not None


def test_apply_order_puts_the_webhook_before_its_secret_and_the_deployment_last(
    rendered: list[dict[str, Any]],
) -> None:
    secret = render.build_tls_secret("vsphere-kale", {"tls.crt": b"x"})
    kinds = [render.kind_of(o) for o in render.sort_for_apply([*rendered, secret])]
    assert kinds[0] == "Namespace" and kinds[-1] == "Deployment"
    assert kinds.index("MutatingWebhookConfiguration") < kinds.index("Secret")


def test_unknown_overlay_is_a_sentence() -> None:
    from vsphere_kale.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown overlay 'istio'"):
        render.check_components(["psp", "istio"])
    assert render.check_components(["kubeflow-only", "psp", "psp"]) == ("psp", "kubeflow-only")


@pytest.mark.parametrize(
    ("live", "want", "same"),
    [
        ({"a": 1, "server": "default"}, {"a": 1}, True),
        ({"a": {"b": [1, {"c": 2, "d": 3}]}}, {"a": {"b": [1, {"c": 2}]}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
        ({}, {"a": None}, False),
    ],
)
def test_contains_ignores_server_defaults_but_not_our_fields(
    live: Any, want: Any, same: bool
) -> None:
    assert contains(live, want) is same


def deployment(**status: int) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({}, "observe the new spec"),
        ({"observedGeneration": 2, "updatedReplicas": 1}, "1 of 2 replicas"),
        ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3}, "old replicas"),
        ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
         "1 of 2 updated replicas are available"),
        ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
         None),
    ],
)  # fmt: skip
def test_rollout_is_judged_like_kubectl_rollout_status(
    status: dict[str, int], why: str | None
) -> None:
    got = decide_rollout(deployment(**status))
    assert (got is None) if why is None else (got is not None and why in got)
    assert decide_rollout(None) == "the Deployment does not exist"
    assert decide_service_ready({"subsets": [{"addresses": [{"ip": "1.2.3.4"}]}]}) is None
    assert decide_service_ready({"subsets": [{"notReadyAddresses": [{"ip": "1.2.3.4"}]}]})


def test_the_wheel_ships_the_manifests_and_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path / "w"), str(ROOT)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "w").glob("vsphere_kale-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "vsphere_kale/deploy/base/kustomization.yaml" in names
    assert "vsphere_kale/deploy/components/psp/kustomization.yaml" in names
    assert not any(n.startswith("vsphere_kale/deploy/examples") for n in names)
    # The installed copy finds its own manifests, not this checkout's, and renders them.
    probe = subprocess.run(
        [sys.executable, "-c",
         "import vsphere_kale.install.render as r; d = r.find_deploy_dir(); print(d); "
         "print(len(r.fetch_rendered(['psp'], deploy_dir=d)))"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, count = probe.stdout.split()
    assert where == str(tmp_path / "site" / "vsphere_kale" / "deploy")
    assert int(count) == 15  # base + psp (install adds the TLS Secret)


def test_extra_sans_go_into_the_certificate_and_the_secret_and_stay_on_re_runs() -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509

    from vsphere_kale.install import rotation
    from vsphere_kale.install.installer import (
        InstallOptions,
        build_certificates,
        build_serving_names,
    )

    now = dt.datetime.now(dt.timezone.utc)
    options = InstallOptions(
        Settings(), webhook_url="https://127.0.0.1:9443/mutate/persistentvolumeclaims"
    )
    # The host the API server calls by URL is one of the names, without being asked
    assert options.serving_extras() == ("127.0.0.1",)
    tls = build_certificates(
        rotation.InstallCertPlan("new-ca", "first install"),
        None,
        {},
        namespace="vsphere-kale",
        now=now,
        extras=options.serving_extras(),
    )
    assert tls.annotations[rotation.EXTRA_SANS_ANNOTATION] == "127.0.0.1"
    cert = x509.load_pem_x509_certificate(tls.data["tls.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "vsphere-kale.vsphere-kale.svc" in sans.get_values_for_type(x509.DNSName)
    # A re-run without the flag keeps the installed names (read back from the Secret)...
    assert "127.0.0.1" in build_serving_names("vsphere-kale", tls.annotations, ())
    # ...and a certificate that lacks one is renewed, by install and by the leader alike
    names = rotation.serving_names(["vsphere-kale"], {rotation.EXTRA_SANS_ANNOTATION: "::1"})
    plan = rotation.plan_install_certs(tls.data, tls.bundle, now=now, dns_names=names)
    assert plan.action == "renew-serving" and "::1" in plan.reason
