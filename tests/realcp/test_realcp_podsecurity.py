"""Pod Security admission for real: kube-apiserver 1.36 with a TKR >= 1.26's cluster default.

The control plane's AdmissionConfiguration enforces ``restricted`` on every namespace without
labels (as TKR 1.26+ does). A Kubeflow profile namespace then rejects Istio's init container
and root steps; the reconciler's labels are what lets them in, and a Kale 2 step pod that
asks for nothing is admitted even under ``restricted``.

The API server's exact rejection messages are recorded in
tests/fixtures/podsecurity_rejections.json (our health code parses that text); this test
checks the file against the live server. Re-record with VSPHERE_KALE_RECORD_FIXTURES=1.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from realcp_helpers import cli, default_service_account

from vsphere_kale.controlplane import KUBE_VERSION, RunningControlPlane

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_rejections.json"
PROFILE_LABEL = {"app.kubernetes.io/part-of": "kubeflow-profile"}

ISTIO_INIT = {
    # What istio's sidecar injector adds (istio/istio manifests/charts/istio-control, without
    # the Istio CNI plugin): iptables setup needs NET_ADMIN and NET_RAW, as root.
    "name": "istio-init",
    "image": "docker.io/istio/proxyv2:1.24.2",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "privileged": False,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "runAsUser": 0,
    },
}
ROOT_STEP = {"name": "step", "image": "python:3.12"}
KALE2_POD_SECURITY = {
    "runAsUser": 65534,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
KALE2_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def istio_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "istio-step"},
        "spec": {"initContainers": [ISTIO_INIT], "containers": [ROOT_STEP]},
    }


def root_step_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-step"},
        "spec": {"containers": [ROOT_STEP]},
    }


def kale2_step_pod() -> dict[str, Any]:
    # A deep copy: a caller that edits the pod must not edit the shared security contexts.
    return copy.deepcopy(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kale2-step"},
            "spec": {
                "securityContext": KALE2_POD_SECURITY,
                "containers": [
                    {
                        "name": "step",
                        "image": "ghcr.io/kubeflow-kale/kale-step:2.0",
                        "securityContext": KALE2_CONTAINER_SECURITY,
                    }
                ],
            },
        }
    )


def create_pod(api: client.ApiClient, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    """Create the pod; on a refusal return the API server's Status (code, reason, message)."""
    try:
        client.CoreV1Api(api).create_namespaced_pod(namespace, pod)
    except client.ApiException as exc:
        status = json.loads(exc.body)
        return {k: status[k] for k in ("code", "reason", "message")}
    return {"code": 201}


@pytest.fixture
def profile_namespace(profile_namespace_factory: Callable[..., str]) -> Callable[[], str]:
    """A Kubeflow profile namespace, as the profile controller makes it."""
    return lambda: profile_namespace_factory("psa", PROFILE_LABEL)


def reconcile(cp: RunningControlPlane, namespace: str, tmp_path: Path, level: str) -> None:
    settings = tmp_path / f"config-{level}.yaml"
    settings.write_text(
        f"podSecurity:\n  mode: psa\n  psaLevel: {level}\n  psaWarnLevel: restricted\n",
        encoding="utf-8",
    )
    done = cli(
        "reconcile",
        "-n",
        namespace,
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--config",
        str(settings),
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (result,) = json.loads(done.stdout)["results"]
    assert result["namespace"] == namespace


def labels_of(api: client.ApiClient, namespace: str) -> dict[str, str]:
    return dict(client.CoreV1Api(api).read_namespace(namespace).metadata.labels or {})


def check_recorded(recorded: dict[str, Any]) -> None:
    if os.environ.get("VSPHERE_KALE_RECORD_FIXTURES") == "1":
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "recordedFrom": f"kube-apiserver v{KUBE_VERSION} ({Path(__file__).name})",
            "clusterDefaults": "enforce/audit/warn restricted:latest, kube-system exempt",
            "pods": {
                "istio-init": "initContainer istio-init adding NET_ADMIN, NET_RAW as root; "
                "a root step container",
                "root-step": "one container without a securityContext (root)",
            },
            "cases": recorded,
        }
        FIXTURE.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for case, status in recorded.items():
        assert fixture["cases"][case] == status, f"{case}: the server's message changed"


def test_restricted_by_default_then_the_reconcilers_labels_decide(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    profile_namespace: Callable[[], str],
    tmp_path: Path,
) -> None:
    cp = real_control_plane
    recorded: dict[str, Any] = {}

    # Given: a new profile namespace, no labels: the cluster default `restricted` applies.
    ns = profile_namespace()
    assert not any(k.startswith("pod-security.kubernetes.io/") for k in labels_of(admin_api, ns))
    # Then: Istio's init container and a root step are refused, a Kale 2 step is admitted.
    recorded["restricted-istio-init"] = create_pod(admin_api, ns, istio_pod())
    recorded["restricted-root-step"] = create_pod(admin_api, ns, root_step_pod())
    for case in ("restricted-istio-init", "restricted-root-step"):
        assert recorded[case]["code"] == 403
        assert recorded[case]["reason"] == "Forbidden"
        assert 'violates PodSecurity "restricted:latest"' in recorded[case]["message"]
    assert "NET_ADMIN" in recorded["restricted-istio-init"]["message"]
    assert "runAsNonRoot != true" in recorded["restricted-root-step"]["message"]
    assert create_pod(admin_api, ns, kale2_step_pod()) == {"code": 201}

    # When: the reconciler labels the namespace with the default level (baseline).
    reconcile(cp, ns, tmp_path, "baseline")
    labels = labels_of(admin_api, ns)
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    # Then: a root step is admitted; NET_ADMIN is beyond baseline, so Istio's init is not.
    assert create_pod(admin_api, ns, root_step_pod()) == {"code": 201}
    recorded["baseline-istio-init"] = create_pod(admin_api, ns, istio_pod())
    assert recorded["baseline-istio-init"]["code"] == 403
    assert 'violates PodSecurity "baseline:latest"' in recorded["baseline-istio-init"]["message"]
    assert "NET_ADMIN" in recorded["baseline-istio-init"]["message"]

    # When: an admin configures psaLevel privileged (Istio without its CNI plugin needs it).
    ns_privileged = profile_namespace()
    reconcile(cp, ns_privileged, tmp_path, "privileged")
    assert labels_of(admin_api, ns_privileged)["pod-security.kubernetes.io/enforce"] == "privileged"
    # Then: Istio's init container is admitted.
    assert create_pod(admin_api, ns_privileged, istio_pod()) == {"code": 201}

    check_recorded(recorded)


def test_a_kale2_step_pod_is_admitted_under_restricted_even_when_labelled(
    admin_api: client.ApiClient, namespace_factory: Callable[..., str]
) -> None:
    ns = namespace_factory(
        "kale2",
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    default_service_account(admin_api, ns)
    assert create_pod(admin_api, ns, kale2_step_pod()) == {"code": 201}
    # One field short of restricted (no seccomp profile) and it is refused.
    pod = kale2_step_pod()
    del pod["spec"]["securityContext"]["seccompProfile"]
    refused = create_pod(admin_api, ns, pod)
    assert refused["code"] == 403
    assert "seccompProfile" in refused["message"]
