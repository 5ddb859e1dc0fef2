"""``vsphere-kale reconcile``: the one-shot pass, through the CLI, against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result
from kubernetes import client

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from reconcile_helpers import (
    ENFORCE,
    create_profile,
    ensure_namespace,
    ns_labels,
    read_binding,
    token_without_bind,
)

from vsphere_kale.cli import main
from vsphere_kale.sandbox.testing import RunningSandbox


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["reconcile", *args], catch_exceptions=False)


def run_json(running: RunningSandbox, *args: str, kubeconfig: str | None = None) -> tuple[int, Any]:
    result = run("--kubeconfig", kubeconfig or str(running.kubeconfig_path), "-o", "json", *args)
    return result.exit_code, json.loads(result.stdout)


def outcomes(document: Any) -> dict[str, str]:
    return {r["namespace"]: r["outcome"] for r in document["results"]}


def test_dry_run_writes_nothing(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo")
    store = running.sandbox.store
    before = store.resource_version
    code, document = run_json(running, "--all", "--dry-run")
    assert code == 0
    assert document["mode"] == "psp" and document["dryRun"] is True
    assert outcomes(document) == {"alice": "would-create", "bob": "would-create"}
    alice = next(r for r in document["results"] if r["namespace"] == "alice")
    assert alice["actions"] == [
        "create rolebinding alice/vsphere-kale-psp -> clusterrole/psp:vmware-system-privileged"
    ]
    # Not one write reached the API server (no object, no Event, no dryRun request either:
    # the resourceVersion counter moves on every stored change).
    assert store.resource_version == before
    assert read_binding(running.api_client(), "alice", "vsphere-kale-psp") is None


def test_all_applies_then_reports_ok(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo")
    code, document = run_json(running, "--all")
    assert code == 0
    assert outcomes(document) == {"alice": "created", "bob": "created"}
    api = running.api_client()
    assert read_binding(api, "alice", "vsphere-kale-psp") is not None
    events = client.CoreV1Api(api).list_namespaced_event("alice").items
    assert "PodSecurityBindingCreated" in {e.reason for e in events}
    # A second pass has nothing to do and writes nothing.
    before = running.sandbox.store.resource_version
    code, document = run_json(running, "--all")
    assert code == 0 and outcomes(document) == {"alice": "ok", "bob": "ok"}
    assert running.sandbox.store.resource_version == before


def test_one_namespace_table_output(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    ensure_namespace(api, "alice", **{ENFORCE: "privileged"})
    create_profile(api, "alice")
    ensure_namespace(api, "scratch")
    result = run("--kubeconfig", str(running.kubeconfig_path), "--namespace", "alice")
    assert result.exit_code == 0, result.output
    assert "psa mode" in result.stdout
    assert "conflict" in result.stdout and "overrideExisting" in result.stdout
    assert ns_labels(api, "alice")[ENFORCE] == "privileged"
    assert ns_labels(api, "alice")["pod-security.kubernetes.io/warn"] == "restricted"
    skipped = run("--kubeconfig", str(running.kubeconfig_path), "--namespace", "scratch")
    assert skipped.exit_code == 0 and "skipped" in skipped.stdout
    assert "no Kubeflow Profile" in skipped.stdout


def test_failure_exits_non_zero_with_what_to_grant(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
    token = token_without_bind(running.api_client())
    kubeconfig = str(running.kubeconfig_for(token))
    result = run("--kubeconfig", kubeconfig, "-o", "json", "--namespace", "alice")
    assert result.exit_code == 1
    (failed,) = json.loads(result.stdout)["results"]
    assert failed["outcome"] == "failed"
    assert "needs `bind` on clusterrole/psp:vmware-system-privileged" in failed["message"]
    assert "1 namespace(s) failed: alice" in result.stderr


def test_needs_exactly_one_target(sandbox: RunningSandbox) -> None:
    result = run("--kubeconfig", str(sandbox.kubeconfig_path))
    assert result.exit_code == 2
    assert "exactly one of --namespace NS or --all" in result.output


def test_unreachable_api_server_is_a_sentence(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
        "users: [{name: x, user: {token: t}}]\n"
    )
    result = CliRunner().invoke(main, ["reconcile", "--kubeconfig", str(kubeconfig), "--all"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "unreachable" in result.output
    assert "Traceback" not in result.output


def test_a_user_without_rights_is_told_the_rights_are_their_own(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    # Given alice, owner of her own profile only; when she reconciles bob's namespace
    running = sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)
    as_alice = str(running.kubeconfig_for(running.tokens["alice"], user="alice"))
    result = run("--kubeconfig", as_alice, "-o", "json", "--namespace", "bob")
    # Then the refusal names her as a user, and does not send her to grant a service account
    assert result.exit_code == 1
    (failed,) = json.loads(result.stdout)["results"]
    assert failed["outcome"] == "failed"
    assert "user alice@example.com lacks the permission named above" in failed["message"]
    assert "service account" not in failed["message"]
