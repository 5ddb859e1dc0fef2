"""``psaLevel: auto`` on kube-apiserver 1.36 + the controller manager's StatefulSet controller.

- A profile namespace (istio-injection: enabled, no Istio CNI) whose notebook StatefulSet's
  pod Pod Security refuses: the StatefulSet controller's own ``FailedCreate`` Event carries
  exactly the text the kubeflow-demo seed writes; ``reconcile`` with ``psaLevel: auto`` picks
  ``privileged`` from it, and then the controller's retry creates the pod.
- A namespace with only a Kale 2 step pod gets ``restricted``; one with a root step pod too
  gets ``baseline``: decided from the API server's own dry-run warnings, recorded in
  tests/fixtures/podsecurity_dry_run_warnings.json (VSPHERE_KALE_RECORD_FIXTURES=1 rewrites).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from realcp_helpers import cli, default_service_account, wait_for
from test_realcp_podsecurity import kale2_step_pod, root_step_pod

from vsphere_kale.controlplane import KUBE_VERSION, RunningControlPlane
from vsphere_kale.health.psa_evidence import fetch_dry_run, fetch_server_minor
from vsphere_kale.kube import Kube
from vsphere_kale.playground.seed_kale import FAILED_CREATE_MESSAGE, notebook_statefulset
from vsphere_kale.policy.podsecurity_evidence import parse_dry_run_warnings

ENFORCE = "pod-security.kubernetes.io/enforce"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_dry_run_warnings.json"
PROFILE_LABELS = {"app.kubernetes.io/part-of": "kubeflow-profile", "istio-injection": "enabled"}


@pytest.fixture
def profile_namespace(profile_namespace_factory: Callable[..., str]) -> Callable[[], str]:
    """A profile namespace; notebook pods run as default-editor (the profile controller
    makes it)."""
    return lambda: profile_namespace_factory(
        "auto", PROFILE_LABELS, service_accounts=("default-editor",)
    )


def reconcile(
    cp: RunningControlPlane, namespace: str, tmp_path: Path, *, level: str, extra: str = ""
) -> dict[str, Any]:
    config = tmp_path / f"config-{namespace}-{level}.yaml"
    config.write_text(
        f"podSecurity:\n  mode: psa\n  psaLevel: {level}\n"
        + (f"  extraNamespaces: [{extra}]\n" if extra else ""),
        encoding="utf-8",
    )
    done = cli(
        "reconcile",
        "-n",
        namespace,
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--config",
        str(config),
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (result,) = json.loads(done.stdout)["results"]
    assert result["outcome"] != "failed", result
    return dict(result)


def enforce_of(api: client.ApiClient, namespace: str) -> str | None:
    labels = client.CoreV1Api(api).read_namespace(namespace).metadata.labels or {}
    return labels.get(ENFORCE)


def failed_creates(api: client.ApiClient, namespace: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="reason=FailedCreate"
    )
    return [e.message for e in events.items]


def test_auto_picks_privileged_for_a_notebook_pod_refused_for_istio_init(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    profile_namespace: Callable[[], str],
    tmp_path: Path,
) -> None:
    cp = real_control_plane
    ns = profile_namespace()
    # Given: the namespace at baseline (the reconciler's default level, labels ours).
    reconcile(cp, ns, tmp_path, level="baseline")
    assert enforce_of(admin_api, ns) == "baseline"
    # When: the notebook controller's StatefulSet (with Istio's init container) is created.
    sts = notebook_statefulset()
    sts["metadata"]["namespace"] = ns
    client.AppsV1Api(admin_api).create_namespaced_stateful_set(ns, sts)
    # Then: the StatefulSet controller's Event carries the text the seed writes, verbatim.
    messages = wait_for("a FailedCreate Event", lambda: failed_creates(admin_api, ns))
    assert messages[0] == FAILED_CREATE_MESSAGE

    # When: the reconciler runs with psaLevel auto.
    result = reconcile(cp, ns, tmp_path, level="auto")
    # Then: privileged, because of istio-init and the recorded rejection.
    assert enforce_of(admin_api, ns) == "privileged"
    assert "psaLevel auto chose privileged" in result["message"]
    assert "pod kale-nb-0 was rejected at baseline" in result["message"]
    assert "no istio-cni-node DaemonSet" in result["message"]
    # And the StatefulSet controller's retry now creates the pod.
    core = client.CoreV1Api(admin_api)

    def pod_exists() -> bool:
        # Nudge the controller (an annotation on the StatefulSet) rather than wait out its
        # backoff; the pod appearing is the proof.
        client.AppsV1Api(admin_api).patch_namespaced_stateful_set(
            "kale-nb", ns, {"metadata": {"annotations": {"nudge": secrets.token_hex(2)}}}
        )
        return bool(core.list_namespaced_pod(ns, field_selector="metadata.name=kale-nb-0").items)

    wait_for("pod kale-nb-0", pod_exists, timeout=90)


def test_auto_asks_the_api_server_about_existing_step_pods(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    namespace_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    cp = real_control_plane
    core = client.CoreV1Api(admin_api)
    kale2_only = namespace_factory("kale2", labels={ENFORCE: "baseline"})
    with_root = namespace_factory("rootstep", labels={ENFORCE: "baseline"})
    for ns in (kale2_only, with_root):
        default_service_account(admin_api, ns)
        core.create_namespaced_pod(ns, kale2_step_pod())
    core.create_namespaced_pod(with_root, root_step_pod())
    # The hand-set label goes (the cluster default, restricted, applies again); pods stay.
    for ns in (kale2_only, with_root):
        core.patch_namespace(ns, {"metadata": {"labels": {ENFORCE: None}}})

    # The API server's own judgement, as the reconciler asks for it.
    kube = Kube(admin_api)
    minor = fetch_server_minor(kube)
    assert minor == int(KUBE_VERSION.split(".")[1])
    recorded: dict[str, list[str]] = {}
    for ns, name in ((kale2_only, "kale2-only"), (with_root, "with-root-step")):
        labels = client.CoreV1Api(admin_api).read_namespace(ns).metadata.labels or {}
        for level in ("baseline", "restricted"):
            warnings, answered = fetch_dry_run(kube, ns, level, labels=labels, server_minor=minor)
            assert answered
            recorded[f"{name}-{level}"] = [w.replace(ns, "NAMESPACE") for w in warnings]
    assert recorded["kale2-only-baseline"] == recorded["kale2-only-restricted"] == [], recorded
    assert recorded["with-root-step-baseline"] == []
    (finding,) = parse_dry_run_warnings(recorded["with-root-step-restricted"])
    assert (finding.pod, finding.level) == ("root-step", "restricted")
    assert "runAsNonRoot != true" in finding.checks
    # Nothing was stored by the dry runs.
    assert enforce_of(admin_api, with_root) is None
    check_recorded(recorded)

    # psaLevel auto (both namespaces listed in extraNamespaces: no notebooks there).
    result = reconcile(cp, kale2_only, tmp_path, level="auto", extra=kale2_only)
    assert enforce_of(admin_api, kale2_only) == "restricted", result
    result = reconcile(cp, with_root, tmp_path, level="auto", extra=with_root)
    assert enforce_of(admin_api, with_root) == "baseline", result
    assert "root-step would violate restricted, not baseline" in result["message"]


def check_recorded(recorded: dict[str, list[str]]) -> None:
    if os.environ.get("VSPHERE_KALE_RECORD_FIXTURES") == "1":
        FIXTURE.write_text(
            json.dumps(
                {
                    "recordedFrom": f"kube-apiserver v{KUBE_VERSION} ({Path(__file__).name})",
                    "what": "Warning headers of a server-side dry-run merge patch of "
                    "pod-security.kubernetes.io/enforce=<level> with enforce-version "
                    "v1.<minor>; the namespace's name replaced by NAMESPACE",
                    "cases": recorded,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert fixture["cases"] == recorded, "the API server's dry-run warnings changed"
