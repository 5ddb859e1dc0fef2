"""``vsphere-kale install`` / ``uninstall`` / ``doctor`` against the sandbox API server.

The sandbox runs no pods, so what the Deployment would run -- ``vsphere-kale serve`` -- runs
here as a subprocess, authenticated as the installed ServiceAccount (a TokenRequest token)
and with the certificate and settings install put into the Secret and ConfigMap. The
sandbox routes the webhook's Service to it (``service_map``) and verifies it against the
caBundle install injected, exactly as kube-apiserver would.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.cli import main
from vsphere_kale.controlplane.config import free_port
from vsphere_kale.install import render
from vsphere_kale.install.installer import RESOURCES, fetch_served
from vsphere_kale.kube import Kube
from vsphere_kale.sandbox.testing import RunningSandbox

ROOT = Path(__file__).resolve().parents[2]
NS = "vsphere-kale"
SERVICE_KEY = f"{NS}/vsphere-kale:443"


def list_managed(api_client: Any, kinds: Iterable[tuple[str, str]]) -> list[str]:
    """``kind/namespace/name`` of every object with our managed-by label."""
    kube = Kube(api_client)
    found = []
    for api_version, kind in kinds:
        resource = RESOURCES[(api_version, kind)]
        # The group-version may be served without this kind (admission policies before 1.34).
        if not fetch_served(kube, api_version) or not kube.discovery().serves(resource):
            continue
        listing = kube.list(
            resource,
            label_selector=f"{render.MANAGED_BY_LABEL}={render.MANAGED_BY}",
        )
        for item in listing.get("items") or []:
            md = item.get("metadata") or {}
            found.append(f"{kind}/{md.get('namespace') or ''}/{md.get('name')}")
    return sorted(found)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """``vsphere-kale ARGS`` in this process (the real command; a new interpreter per call
    would cost seconds of imports)."""
    result = CliRunner(catch_exceptions=False).invoke(main, list(args))
    return Result(result.exit_code, result.stdout, result.stderr)


def install(running: RunningSandbox, *args: str) -> Result:
    done = cli("install", "--kubeconfig", str(running.kubeconfig_path), *args)
    return done


def outcomes(stdout: str) -> dict[str, str]:
    """``kind/name`` -> outcome from install's per-object lines."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "/" in parts[0]:
            found[parts[0]] = parts[1]
    return found


RBAC_GROUP = "rbac.authorization.k8s.io"


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def namespace_gone(api: client.ApiClient, name: str = NS) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(name)
    except ApiException as exc:
        return exc.status == 404
    return False


def service_account_token(running: RunningSandbox, namespace: str = NS) -> str:
    core = client.CoreV1Api(running.api_client())
    answer = core.create_namespaced_service_account_token(
        "vsphere-kale", namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    )
    return str(answer.status.token)


def secret_files(running: RunningSandbox, directory: Path, namespace: str = NS) -> Path:
    """Write the installed Secret's files as the kubelet would mount them."""
    core = client.CoreV1Api(running.api_client())
    secret = core.read_namespaced_secret("vsphere-kale-tls", namespace)
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in secret.data.items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory


def config_file(running: RunningSandbox, path: Path, namespace: str = NS) -> Path:
    core = client.CoreV1Api(running.api_client())
    cm = core.read_namespaced_config_map("vsphere-kale-config", namespace)
    path.write_text(cm.data["config.yaml"])
    return path


class Serve:
    """`vsphere-kale serve` as the pod would run it, but on 127.0.0.1:<port>."""

    def __init__(self, running: RunningSandbox, tmp: Path, port: int) -> None:
        self.port = port
        tls = secret_files(running, tmp / "tls")
        config = config_file(running, tmp / "config.yaml")
        kubeconfig = running.kubeconfig_for(service_account_token(running), user="vsphere-kale")
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "vsphere_kale.cli", "-v", "serve",
                "--kubeconfig", str(kubeconfig),
                "--config", str(config),
                "--cert-file", str(tls / "tls.crt"),
                "--key-file", str(tls / "tls.key"),
                "--address", "127.0.0.1",
                "--port", str(port),
                "--identity", "vsphere-kale-test-0",
                "--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.3",
            ],
            env={**os.environ, "POD_NAME": "vsphere-kale-test-0"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        # The certificate names the Service, not 127.0.0.1: verify the chain, not the name.
        self.ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        self.ctx.check_hostname = False

    def request(
        self, method: str, path: str, *, token: str | None = None
    ) -> tuple[int, dict[str, Any] | str]:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}",
            method=method,
            data=b"" if method == "POST" else None,
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self.ctx, timeout=30) as resp:
                body = resp.read().decode()
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), int(exc.code)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return self.request("GET", "/readyz")[0] == 200
        except (urllib.error.URLError, ConnectionError, ssl.SSLError):
            return False

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def record_denials(running: RunningSandbox, username: str) -> list[str]:
    """Every request of ``username`` the sandbox's RBAC authorizer denies, as a list."""
    denied: list[str] = []
    authorize = running.sandbox.authorize

    def observed(attrs: Any) -> Any:
        decision = authorize(attrs)
        if attrs.user.username == username and not decision.allowed:
            denied.append(f"{attrs.verb} {attrs.resource or attrs.path} {attrs.namespace or ''}")
        return decision

    running.sandbox.authorize = observed
    return denied


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def demo(sandbox_factory: Callable[..., RunningSandbox], port: int) -> RunningSandbox:
    """A TKG-like PSP cluster with Kubeflow (profiles alice, bob), RBAC on, our Service routed
    to 127.0.0.1:<port>."""
    return sandbox_factory(
        authorization=True,
        seed="kubeflow-demo",
        flavor="psp",
        # kubectl sends its bearer token over HTTPS only (anonymous over plain HTTP).
        tls=True,
        service_map={SERVICE_KEY: f"127.0.0.1:{port}"},
    )


@pytest.fixture
def serve_factory(tmp_path: Path, port: int) -> Iterator[Callable[[RunningSandbox], Serve]]:
    started: list[Serve] = []

    def start(running: RunningSandbox) -> Serve:
        serve = Serve(running, tmp_path, port)
        started.append(serve)
        wait_for("serve /readyz", serve.ready, timeout=30)
        return serve

    yield start
    for serve in started:
        serve.close()


ALL_KINDS = sorted(RESOURCES)


# --- the "done when" -------------------------------------------------------------------


def test_install_then_webhook_reconcile_admin_api_and_doctor_work_as_the_service_account(
    demo: RunningSandbox, serve_factory: Callable[[RunningSandbox], Serve], tmp_path: Path
) -> None:
    # Given: vsphere-kale installed with the psp overlay and serve running as its SA, every
    # authorization decision about that SA recorded (the real RBAC authorizer decides)
    denied = record_denials(demo, f"system:serviceaccount:{NS}:vsphere-kale")
    done = install(demo, "--rwx-storage-class", "nfs-client", "--overlay", "psp")
    assert done.returncode == 0, done.stderr
    assert set(outcomes(done.stdout).values()) == {"created"}
    serve = serve_factory(demo)

    # When: a user applies the earlier tool's example claim with real kubectl
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(demo.kubeconfig_path), "apply", "-f",
         str(ROOT / "deploy/examples/example-pvc.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    # Then: it is stored with the RWX class (the API server called serve over verified TLS)
    admin = demo.api_client()
    pvc = client.CoreV1Api(admin).read_namespaced_persistent_volume_claim("example-pvc", "default")
    assert pvc.spec.storage_class_name == "nfs-client"

    # The reconcile and admin-API flows work with exactly the installed RBAC: no 403 anywhere.
    status, body = serve.request("POST", "/api/v1/reconcile", token=demo.admin_token)
    assert status == 200, body
    assert isinstance(body, dict)
    results = {r["namespace"]: r for r in body["results"]}
    assert {"alice", "bob"} <= set(results)
    assert all(r["outcome"] != "failed" for r in results.values()), results
    binding = client.RbacAuthorizationV1Api(admin).read_namespaced_role_binding(
        "vsphere-kale-psp", "alice"
    )
    assert binding.role_ref.name == "psp:vmware-system-privileged"
    # An edited binding is repaired with a merge patch: the installed role must allow `patch`.
    rbac_api = client.RbacAuthorizationV1Api(admin)
    someone_else = {"kind": "Group", "name": "someone-else", "apiGroup": RBAC_GROUP}
    rbac_api.patch_namespaced_role_binding(
        "vsphere-kale-psp", "alice", {"subjects": [someone_else]}
    )

    def repaired() -> bool:
        subjects = rbac_api.read_namespaced_role_binding("vsphere-kale-psp", "alice").subjects
        return [s.name for s in subjects] == ["system:serviceaccounts:alice"]

    wait_for("alice's edited binding to be repaired", repaired)
    status, health = serve.request("GET", "/api/v1/namespaces/alice/status", token=demo.admin_token)
    assert status == 200, health
    assert isinstance(health, dict)
    assert health["podSecurity"]["verdict"] == "ok"
    assert health["webhook"]["verdict"] == "ok", health["webhook"]
    assert denied == [], denied
    assert "orbidden" not in serve.output()

    # doctor: everything green except the seed's marshal claim created before the webhook,
    # a warning (a workload to repair, not a broken installation)...
    first = cli("doctor", "--kubeconfig", str(demo.kubeconfig_path), "-o", "json")
    assert first.returncode == 0, first.stdout + first.stderr
    checks = {c["check"]: c for c in json.loads(first.stdout)["checks"]}
    assert checks["rwx-claims"]["status"] == "warn"
    assert "alice/wf-1-kale-marshal-pvc" in checks["rwx-claims"]["message"]
    assert [n for n, c in checks.items() if c["status"] != "ok"] == ["rwx-claims"], checks
    # ...which its hint says to recreate: then doctor is all green.
    core = client.CoreV1Api(admin)
    core.delete_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    second = cli("doctor", "--kubeconfig", str(demo.kubeconfig_path))
    assert second.returncode == 0, second.stdout + second.stderr
    # One ✓ per check; namespace-guard's is "not available" (the sandbox serves no
    # ValidatingAdmissionPolicy).
    assert "✗" not in second.stdout and second.stdout.count("✓") == 9, second.stdout


def test_a_removed_rule_is_the_403_it_guards_against(
    demo: RunningSandbox, serve_factory: Callable[[RunningSandbox], Serve]
) -> None:
    # Given: an installation whose ClusterRole lost the `bind` rule (e.g. a hand edit)
    assert install(demo, "--rwx-storage-class", "nfs-client", "--overlay", "psp").returncode == 0
    admin = demo.api_client()
    rbac = client.RbacAuthorizationV1Api(admin)
    role = rbac.read_cluster_role("vsphere-kale")
    kept = [r for r in role.rules if r.verbs != ["bind"]]
    assert len(kept) == len(role.rules) - 1
    role.rules = kept
    rbac.replace_cluster_role("vsphere-kale", role)
    serve = serve_factory(demo)

    # When: the reconciler must create alice's PSP RoleBinding
    status, body = serve.request(
        "POST", "/api/v1/namespaces/alice/reconcile", token=demo.admin_token
    )

    # Then: RBAC's escalation check refuses it (403), reported as a failed namespace...
    assert status == 200, body
    assert isinstance(body, dict)
    (result,) = body["results"]
    assert result["outcome"] == "failed"
    assert "bind" in result["message"], result
    with pytest.raises(ApiException):
        rbac.read_namespaced_role_binding("vsphere-kale-psp", "alice")
    # ...and doctor names the missing permission.
    doctor = cli("doctor", "--kubeconfig", str(demo.kubeconfig_path), "-o", "json")
    assert doctor.returncode == 1
    checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["rbac"]["status"] == "fail"
    assert (
        "bind clusterroles.rbac.authorization.k8s.io 'psp:vmware-system-privileged'"
        in (checks["rbac"]["message"])
    )
    # Re-running install restores the rule, and the same reconcile succeeds.
    again = install(demo)
    assert outcomes(again.stdout)["clusterrole.rbac.authorization.k8s.io/vsphere-kale"] == (
        "configured"
    )
    status, body = serve.request(
        "POST", "/api/v1/namespaces/alice/reconcile", token=demo.admin_token
    )
    # ("ok" when the reconciler's own retry of the failed namespace got there first.)
    assert isinstance(body, dict) and body["results"][0]["outcome"] in ("created", "ok"), body
    assert rbac.read_namespaced_role_binding("vsphere-kale-psp", "alice")


# --- idempotence -------------------------------------------------------------------------------


def test_install_twice_changes_nothing_the_second_time(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(authorization=True, seed="kubeflow-demo", flavor="psp")
    first = install(running, "--rwx-storage-class", "nfs-client", "--overlay", "psp")
    assert first.returncode == 0, first.stderr
    created = outcomes(first.stdout)
    assert len(created) == 17 and set(created.values()) == {"created"}, first.stdout
    secret_before = client.CoreV1Api(running.api_client()).read_namespaced_secret(
        "vsphere-kale-tls", NS
    )

    # When: the same install runs again (no flags: the installed settings are kept)
    second = install(running, "--overlay", "psp")

    # Then: every object is unchanged, the certificates were reused
    assert second.returncode == 0, second.stderr
    assert outcomes(second.stdout) == {k: "unchanged" for k in created}, second.stdout
    assert "certificates reused" in second.stderr
    secret_after = client.CoreV1Api(running.api_client()).read_namespaced_secret(
        "vsphere-kale-tls", NS
    )
    assert secret_after.metadata.resource_version == secret_before.metadata.resource_version
    # A server-side dry run agrees.
    dry = install(running, "--overlay", "psp", "--dry-run")
    assert set(outcomes(dry.stdout).values()) == {"unchanged"}, dry.stdout


def test_a_changed_flag_configures_only_what_it_touches(sandbox: RunningSandbox) -> None:
    assert install(sandbox, "--rwx-storage-class", "nfs-client").returncode == 0
    changed = install(sandbox, "--rwx-storage-class", "vsan-file", "--image", "reg.example/vk:1")
    assert changed.returncode == 0, changed.stderr
    touched = {k: v for k, v in outcomes(changed.stdout).items() if v != "unchanged"}
    assert touched == {
        "configmap/vsphere-kale-config": "configured",
        "deployment.apps/vsphere-kale": "configured",
    }
    core = client.CoreV1Api(sandbox.api_client())
    config = yaml.safe_load(
        core.read_namespaced_config_map("vsphere-kale-config", NS).data["config.yaml"]
    )
    assert config["storage"]["rwxStorageClass"] == "vsan-file"
    deployment = client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment(
        "vsphere-kale", NS
    )
    assert deployment.spec.template.spec.containers[0].image == "reg.example/vk:1"


def test_certificates_expiring_within_30_days_are_renewed_by_a_rerun(
    sandbox: RunningSandbox,
) -> None:
    from vsphere_kale.install import certs

    assert install(sandbox, "--rwx-storage-class", "nfs-client").returncode == 0
    core = client.CoreV1Api(sandbox.api_client())
    secret = core.read_namespaced_secret("vsphere-kale-tls", NS)
    ca_cert = base64.b64decode(secret.data["ca.crt"])
    ca_key = base64.b64decode(secret.data["ca.key"])
    # Given: a serving certificate with 10 days left (the CA is fine)
    tls_cert, tls_key = certs.build_serving_cert(
        ca_cert, ca_key, dns_names=certs.service_dns_names("vsphere-kale", NS), days=10
    )
    secret.data["tls.crt"] = base64.b64encode(tls_cert).decode()
    secret.data["tls.key"] = base64.b64encode(tls_key).decode()
    core.replace_namespaced_secret("vsphere-kale-tls", NS, secret)

    again = install(sandbox)

    changes = {k: v for k, v in outcomes(again.stdout).items() if v != "unchanged"}
    assert changes == {"secret/vsphere-kale-tls": "configured"}, again.stdout
    renewed = core.read_namespaced_secret("vsphere-kale-tls", NS)
    assert base64.b64decode(renewed.data["ca.crt"]) == ca_cert  # same CA: caBundle untouched
    renewed_until = certs.not_after(base64.b64decode(renewed.data["tls.crt"]))
    assert renewed_until > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)


# --- uninstall ---------------------------------------------------------------------------------


def test_uninstall_leaves_nothing_of_ours(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(authorization=True, seed="kubeflow-demo", flavor="psp")
    admin = running.api_client()
    before = list_managed(admin, ALL_KINDS)
    assert install(running, "--rwx-storage-class", "nfs-client", "--overlay", "psp").returncode == 0
    assert len(list_managed(admin, ALL_KINDS)) == len(before) + 17

    done = cli("uninstall", "--kubeconfig", str(running.kubeconfig_path))

    assert done.returncode == 0, done.stderr
    assert set(outcomes(done.stdout).values()) == {"deleted"}
    first = done.stdout.splitlines()[0]
    assert first.startswith("mutatingwebhookconfiguration"), first  # stop the calls first
    # (Deleting a namespace is asynchronous: it is Terminating until its content is gone.)
    wait_for("namespace vsphere-kale to go", lambda: namespace_gone(admin))
    assert list_managed(admin, ALL_KINDS) == before
    # Uninstalling again finds nothing and says so.
    again = cli("uninstall", "--kubeconfig", str(running.kubeconfig_path))
    assert again.returncode == 0 and "nothing of vsphere-kale" in again.stdout


def test_uninstall_keeps_a_namespace_install_did_not_create(sandbox: RunningSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client())
    core.create_namespace({"metadata": {"name": "platform", "labels": {"team": "infra"}}})
    core.create_namespaced_config_map(
        "platform", {"metadata": {"name": "theirs"}, "data": {"a": "b"}}
    )
    done = install(sandbox, "--rwx-storage-class", "nfs-client", "--namespace", "platform")
    assert done.returncode == 0, done.stderr
    assert outcomes(done.stdout)["namespace/platform"] == "unchanged"
    # Their namespace was not relabelled (no restricted enforcement forced on their pods).
    labels = core.read_namespace("platform").metadata.labels
    assert "pod-security.kubernetes.io/enforce" not in labels
    # Everything moved to the namespace: the webhook's Service and its self-exclusion too.
    hooks = client.AdmissionregistrationV1Api(
        sandbox.api_client()
    ).read_mutating_webhook_configuration("vsphere-kale")
    assert hooks.webhooks[0].client_config.service.namespace == "platform"
    assert "platform" in hooks.webhooks[0].namespace_selector.match_expressions[0].values

    gone = cli("uninstall", "--kubeconfig", str(sandbox.kubeconfig_path), "--namespace", "platform")

    assert gone.returncode == 0, gone.stderr
    assert outcomes(gone.stdout)["namespace/platform"] == "kept"
    assert core.read_namespace("platform").status.phase == "Active"
    assert core.read_namespaced_config_map("theirs", "platform").data == {"a": "b"}
    assert list_managed(sandbox.api_client(), ALL_KINDS) == []


# --- wait, dry run, GitOps output --------------------------------------------------------------


def test_wait_is_honest_about_a_deployment_that_is_not_available(
    demo: RunningSandbox, serve_factory: Callable[[RunningSandbox], Serve]
) -> None:
    # The sandbox has no deployment controller: nothing ever reports the pods available.
    slow = install(demo, "--rwx-storage-class", "nfs-client", "--wait", "--timeout", "2")
    assert slow.returncode == 1
    assert "not ready after 2 s" in slow.stderr, slow.stderr
    assert "deployment controller" in slow.stderr and "Traceback" not in slow.stderr

    # When the controller reports both replicas available (as kube-controller-manager would)
    apps = client.AppsV1Api(demo.api_client())
    deployment = apps.read_namespaced_deployment("vsphere-kale", NS)
    deployment.status = client.V1DeploymentStatus(
        observed_generation=deployment.metadata.generation,
        replicas=2,
        updated_replicas=2,
        available_replicas=2,
        ready_replicas=2,
    )
    apps.replace_namespaced_deployment("vsphere-kale", NS, deployment)
    # ...and the Service has ready endpoints (the sandbox gives a mapped Service some):
    serve_factory(demo)
    ready = install(demo, "--wait", "--timeout", "10")
    assert ready.returncode == 0, ready.stderr
    assert "deployment.apps/vsphere-kale available" in ready.stdout


def test_dry_run_writes_nothing(sandbox: RunningSandbox) -> None:
    done = install(sandbox, "--rwx-storage-class", "nfs-client", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "namespace/vsphere-kale created (server dry run)"
    assert all(" created (server dry run)" in line for line in lines), lines
    assert list_managed(sandbox.api_client(), ALL_KINDS) == []


def test_output_yaml_is_offline_and_prints_no_private_key_unless_asked() -> None:
    plain = cli(
        "install", "-o", "yaml", "--rwx-storage-class", "nfs-client", "--overlay", "kubeflow-only"
    )
    assert plain.returncode == 0, plain.stderr
    docs = list(yaml.safe_load_all(plain.stdout))
    assert "Secret" not in {d["kind"] for d in docs}
    assert "PRIVATE KEY" not in plain.stdout and "caBundle" not in plain.stdout
    (hooks,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert hooks["webhooks"][0]["namespaceSelector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "kubeflow-profile"
    }

    keyed = cli("install", "-o", "yaml", "--rwx-storage-class", "nfs-client", "--with-certificates")
    docs = list(yaml.safe_load_all(keyed.stdout))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    (hooks,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert base64.b64decode(hooks["webhooks"][0]["clientConfig"]["caBundle"]) == base64.b64decode(
        secret["data"]["ca.crt"]
    )


def test_cert_manager_overlay_needs_cert_manager(sandbox: RunningSandbox) -> None:
    done = install(sandbox, "--rwx-storage-class", "nfs-client", "--overlay", "cert-manager")
    assert done.returncode == 1
    assert "install cert-manager first" in done.stderr
    assert "Traceback" not in done.stderr
    assert list_managed(sandbox.api_client(), ALL_KINDS) == []


def test_psp_overlay_on_a_cluster_without_psp_is_refused(sandbox: RunningSandbox) -> None:
    done = install(sandbox, "--rwx-storage-class", "nfs-client", "--overlay", "psp")
    assert done.returncode == 1 and "removed in Kubernetes 1.25" in done.stderr


def test_uninstall_keeps_the_reconcilers_bindings_unless_purged(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    from vsphere_kale.policy.podsecurity import DesiredBinding, build_role_binding

    running = sandbox_factory(seed="kubeflow-demo", flavor="psp")
    assert install(running, "--rwx-storage-class", "nfs-client").returncode == 0
    rbac = client.RbacAuthorizationV1Api(running.api_client())
    for ns in ("alice", "bob"):  # what serve's reconciler creates in profile namespaces
        rbac.create_namespaced_role_binding(
            ns,
            build_role_binding(
                ns,
                DesiredBinding(
                    "vsphere-kale-psp",
                    "psp:vmware-system-privileged",
                    f"system:serviceaccounts:{ns}",
                ),
            ),
        )

    kept = cli("uninstall", "--kubeconfig", str(running.kubeconfig_path))
    assert kept.returncode == 0
    assert "vsphere-kale-psp" not in kept.stdout
    assert rbac.read_namespaced_role_binding("vsphere-kale-psp", "alice")

    purged = cli("uninstall", "--kubeconfig", str(running.kubeconfig_path), "--purge")
    assert purged.returncode == 0, purged.stderr
    assert outcomes(purged.stdout) == {
        "rolebinding.rbac.authorization.k8s.io/vsphere-kale-psp": "deleted"
    }
    assert purged.stdout.count("vsphere-kale-psp deleted") == 2
    wait_for("namespace vsphere-kale to go", lambda: namespace_gone(running.api_client()))
    assert list_managed(running.api_client(), ALL_KINDS) == []


def test_doctor_without_admin_rights_says_what_it_could_not_check(demo: RunningSandbox) -> None:
    assert install(demo, "--rwx-storage-class", "nfs-client", "--overlay", "psp").returncode == 0
    as_alice = demo.kubeconfig_for(demo.tokens["alice"], user="alice")

    done = cli("doctor", "--kubeconfig", str(as_alice), "-o", "json")

    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["settingsFrom"].startswith("defaults (cannot read configmap")
    checks = {c["check"]: c for c in report["checks"]}
    # The settings exist; alice may not read them: "cannot check", never "not set"
    assert checks["rwx-storage-class"]["message"].startswith("cannot check: reading configmap")
    assert "cannot check" in checks["webhook-endpoints"]["message"]
    assert "run doctor as a cluster admin" in checks["webhook-endpoints"]["hint"]
    # Her own rights are missing, not the installation's: named as a user, no re-install
    assert "user alice@example.com may not read it" in checks["webhook-endpoints"]["hint"]
    assert "cannot check the permissions of service account" in checks["rbac"]["message"]
    assert "user alice@example.com" in checks["rbac"]["message"]
    for check in checks.values():
        assert "vsphere-kale install" not in check["hint"], check
