"""Real kubectl (1.32, /usr/bin/kubectl) against the sandbox API server.

Over plain HTTP kubectl sends no bearer token (it is anonymous), which the default sandbox
(authorization off) allows; the TLS tests use the admin token and RBAC for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from vsphere_kale.playground.seed import USERS
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.sandbox.types import AdmissionAttributes, AdmissionResult, JSONObject

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def kubectl(
    running: RunningSandbox,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    kubeconfig: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig or running.kubeconfig_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result


CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  mode: "{mode}"
"""


def test_create_namespace_get_and_yaml(sandbox: RunningSandbox) -> None:
    assert "namespace/demo created" in kubectl(sandbox, "create", "namespace", "demo").stdout
    listed = kubectl(sandbox, "get", "ns").stdout
    assert listed.splitlines()[0].split() == ["NAME", "STATUS", "AGE"] and "demo" in listed
    doc = yaml.safe_load(kubectl(sandbox, "get", "namespace", "demo", "-o", "yaml").stdout)
    assert doc["kind"] == "Namespace" and doc["status"]["phase"] == "Active"
    assert doc["metadata"]["labels"] == {"kubernetes.io/metadata.name": "demo"}
    missing = kubectl(sandbox, "get", "namespace", "nope", check=False)
    assert missing.returncode != 0
    assert 'Error from server (NotFound): namespaces "nope" not found' in missing.stderr


def test_create_apply_label_annotate_delete(sandbox: RunningSandbox) -> None:
    kubectl(sandbox, "create", "namespace", "demo")
    out = kubectl(sandbox, "create", "-f", "-", stdin=CONFIGMAP.format(mode="a")).stdout
    assert "configmap/settings created" in out
    again = kubectl(sandbox, "create", "-f", "-", stdin=CONFIGMAP.format(mode="a"), check=False)
    assert "Error from server (AlreadyExists)" in again.stderr

    kubectl(sandbox, "delete", "configmap", "settings", "-n", "demo")
    assert (
        "created" in kubectl(sandbox, "apply", "-f", "-", stdin=CONFIGMAP.format(mode="a")).stdout
    )
    assert (
        "configured"
        in kubectl(sandbox, "apply", "-f", "-", stdin=CONFIGMAP.format(mode="b")).stdout
    )
    unchanged = kubectl(sandbox, "apply", "-f", "-", stdin=CONFIGMAP.format(mode="b"))
    assert "unchanged" in unchanged.stdout
    assert unchanged.stderr == ""  # no warnings from the OpenAPI document

    kubectl(sandbox, "label", "configmap", "settings", "-n", "demo", "team=ml")
    kubectl(sandbox, "annotate", "configmap", "settings", "-n", "demo", "note=hello")
    doc = json.loads(kubectl(sandbox, "get", "cm", "settings", "-n", "demo", "-o", "json").stdout)
    assert doc["data"] == {"mode": "b"}
    assert doc["metadata"]["labels"] == {"team": "ml"}
    assert doc["metadata"]["annotations"]["note"] == "hello"
    assert "kubectl.kubernetes.io/last-applied-configuration" in doc["metadata"]["annotations"]
    selected = kubectl(sandbox, "get", "cm", "-A", "-l", "team=ml", "-o", "name").stdout
    assert selected.split() == ["configmap/settings"]

    assert (
        'configmap "settings" deleted'
        in kubectl(sandbox, "delete", "configmap", "settings", "-n", "demo").stdout
    )
    assert kubectl(sandbox, "get", "cm", "-n", "demo", "-o", "name").stdout == ""


def test_apply_profile_custom_resource(sandbox: RunningSandbox) -> None:
    profile = (
        "apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata:\n  name: carol\n"
        "spec:\n  owner:\n    kind: User\n    name: {owner}\n"
    )
    kubectl(sandbox, "apply", "-f", "-", stdin=profile.format(owner="carol@example.com"))
    kubectl(sandbox, "apply", "-f", "-", stdin=profile.format(owner="c@example.com"))
    doc = json.loads(
        kubectl(sandbox, "get", "profiles.v1beta1.kubeflow.org", "carol", "-o", "json").stdout
    )
    assert doc["apiVersion"] == "kubeflow.org/v1beta1"
    assert doc["spec"]["owner"]["name"] == "c@example.com"


def test_strict_field_validation_through_kubectl(sandbox: RunningSandbox) -> None:
    kubectl(sandbox, "create", "namespace", "demo")
    bad = CONFIGMAP.format(mode="a") + "bogus: 1\n"
    result = kubectl(sandbox, "create", "-f", "-", stdin=bad, check=False)
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "bogus"' in result.stderr


def test_admission_warnings_reach_kubectl(sandbox: RunningSandbox) -> None:
    async def warn(
        attrs: AdmissionAttributes, obj: JSONObject, old: JSONObject | None
    ) -> AdmissionResult:
        return AdmissionResult(obj, warnings=(f"{attrs.kind} looks fine",))

    sandbox.sandbox.admit = warn
    result = kubectl(sandbox, "create", "namespace", "warned")
    assert "Warning: Namespace looks fine" in result.stderr


def test_get_watch_streams_changes(sandbox: RunningSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="first")))
    proc = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(sandbox.kubeconfig_path),
            "get",
            "ns",
            "-w",
            "--no-headers",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # Server-side Tables in the watch too: NAME STATUS AGE per line.
        lines = [proc.stdout.readline().split()[:2]]
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="second")))
        lines.append(proc.stdout.readline().split()[:2])
        core.delete_namespace("second")
        lines.append(proc.stdout.readline().split()[:2])
    finally:
        proc.kill()
        proc.wait(5)
    assert lines == [["first", "Active"], ["second", "Active"], ["second", "Terminating"]]


def test_delete_namespace_waits_until_it_is_gone(sandbox: RunningSandbox) -> None:
    kubectl(sandbox, "create", "namespace", "demo")
    kubectl(sandbox, "create", "-f", "-", stdin=CONFIGMAP.format(mode="a"))
    # kubectl waits for the namespace to be gone (failing after --timeout if it never is),
    # and it is gone when kubectl returns.
    deleted = kubectl(sandbox, "delete", "namespace", "demo", "--timeout=25s")
    assert 'namespace "demo" deleted' in deleted.stdout
    assert kubectl(sandbox, "get", "ns", "-o", "name").stdout == ""


def test_auth_can_i_without_authorization(sandbox: RunningSandbox) -> None:
    assert (
        kubectl(sandbox, "auth", "can-i", "create", "rolebindings", "-n", "x").stdout.strip()
        == "yes"
    )


def test_tls_with_rbac(sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    running = sandbox_factory(tls=True, authorization=True)
    assert running.url.startswith("https://127.0.0.1:")
    kubectl(running, "create", "namespace", "secure")
    assert kubectl(running, "auth", "can-i", "delete", "namespaces").stdout.strip() == "yes"
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_service_account(
        "secure", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    token = core.create_namespaced_service_account_token(
        "robot",
        "secure",
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    robot = running.write_kubeconfig(tmp_path / "robot.yaml", token=token, user="robot")
    can = kubectl(
        running,
        "auth",
        "can-i",
        "list",
        "configmaps",
        "-n",
        "secure",
        kubeconfig=robot,
        check=False,
    )
    assert can.stdout.strip() == "no"
    denied = kubectl(running, "get", "configmaps", "-n", "secure", kubeconfig=robot, check=False)
    assert "Error from server (Forbidden)" in denied.stderr
    assert (
        'configmaps is forbidden: User "system:serviceaccount:secure:robot" cannot list '
        'resource "configmaps" in API group "" in the namespace "secure"'
    ) in denied.stderr


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_discovery_by_flavor(sandbox_factory: Callable[..., RunningSandbox], flavor: str) -> None:
    running = sandbox_factory(flavor=flavor)
    resources = kubectl(running, "api-resources", "--no-headers").stdout
    has_psp = any(line.split()[0] == "podsecuritypolicies" for line in resources.splitlines())
    assert has_psp == (flavor == "psp")
    assert "profiles" in resources and "persistentvolumeclaims" in resources


def test_get_prints_kube_columns(sandbox: RunningSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="alice")))
    core.create_namespaced_persistent_volume_claim(
        "alice",
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="marshal"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                storage_class_name="block",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    client.StorageV1Api(sandbox.api_client()).create_storage_class(
        client.V1StorageClass(
            metadata=client.V1ObjectMeta(
                name="block",
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner="csi.vsphere.vmware.com",
        )
    )
    pvcs = kubectl(sandbox, "get", "pvc", "-A").stdout.splitlines()
    assert pvcs[0].split() == [
        "NAMESPACE",
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS",
        "MODES",
        "STORAGECLASS",
        "AGE",
    ]
    assert pvcs[1].split()[:4] == ["alice", "marshal", "Pending", "block"]
    classes = kubectl(sandbox, "get", "storageclasses").stdout.splitlines()
    assert classes[1].split()[:3] == ["block", "(default)", "csi.vsphere.vmware.com"]


def test_create_generators_protobuf_bodies(sandbox: RunningSandbox) -> None:
    # kubectl's generators post protobuf; the sandbox decodes these kinds (protobuf.py).
    kubectl(sandbox, "create", "namespace", "g")
    kubectl(sandbox, "create", "configmap", "c", "-n", "g", "--from-literal=a=1")
    kubectl(sandbox, "create", "secret", "generic", "s", "-n", "g", "--from-literal=pw=x")
    kubectl(sandbox, "create", "serviceaccount", "robot", "-n", "g")
    kubectl(sandbox, "create", "role", "r", "-n", "g", "--verb=get,list", "--resource=configmaps")
    kubectl(
        sandbox, "create", "rolebinding", "rb", "-n", "g", "--role=r", "--serviceaccount=g:robot"
    )
    core = client.CoreV1Api(sandbox.api_client())
    assert core.read_namespaced_config_map("c", "g").data == {"a": "1"}
    assert core.read_namespaced_secret("s", "g").data == {"pw": "eA=="}
    assert core.read_namespaced_service_account("robot", "g").metadata.generate_name is None
    rbac = client.RbacAuthorizationV1Api(sandbox.api_client())
    assert rbac.read_namespaced_role("r", "g").rules[0].verbs == ["get", "list"]
    binding = rbac.read_namespaced_role_binding("rb", "g")
    assert binding.role_ref.name == "r"
    assert [(s.kind, s.namespace, s.name) for s in binding.subjects] == [
        ("ServiceAccount", "g", "robot")
    ]


def test_deleting_the_seeded_marshal_claim_completes(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    # Given the demo's stuck marshal claim, protected by kubernetes.io/pvc-protection
    running = sandbox_factory(seed="kubeflow-demo")
    core = client.CoreV1Api(running.api_client())
    claim = core.read_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    assert claim.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    # When a user follows the panel's hint and deletes it (kubectl waits for it to be gone)
    kubectl(running, "delete", "pvc", "wf-1-kale-marshal-pvc", "-n", "alice", "--timeout=10s")
    # Then it is gone: no pod uses it, so the protection finalizer is released as on a cluster
    listed = core.list_namespaced_persistent_volume_claim("alice").items
    assert [c.metadata.name for c in listed] == ["raw-data"]  # the seed's Kale 2 claim stays


def test_auth_whoami_and_can_i_list(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    # Given the demo cluster with RBAC, and alice's kubeconfig (tokens travel only over TLS)
    running = sandbox_factory(tls=True, authorization=True, seed="kubeflow-demo")
    alice = running.write_kubeconfig(
        tmp_path / "alice.yaml", token=USERS["alice"].token, user="alice"
    )
    # When alice asks who she is, and what she may do in her namespace and in bob's
    whoami = kubectl(running, "auth", "whoami", "-o", "json", kubeconfig=alice)
    own = kubectl(running, "auth", "can-i", "--list", "-n", "alice", kubeconfig=alice)
    other = kubectl(running, "auth", "can-i", "--list", "-n", "bob", kubeconfig=alice)
    # Then the answers come from the same users and RBAC the API server enforces
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == "alice@example.com"
    assert "system:authenticated" in user["groups"]
    assert "persistentvolumeclaims" in own.stdout
    assert "persistentvolumeclaims" not in other.stdout
    assert "selfsubjectaccessreviews.authorization.k8s.io" in other.stdout  # everyone's
