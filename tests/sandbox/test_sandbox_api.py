"""Contract tests: the real kubernetes client against the sandbox API server.

Each test gets its own sandbox (``sandbox`` fixture, tests/conftest.py): psa flavor, empty
seed, authorization off.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.sandbox.testing import RunningSandbox


def meta(name: str, **kw: Any) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, **kw)


def status_of(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return dict(body)


def expect_error(fn: Callable[[], Any], code: int, reason: str) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        fn()
    assert info.value.status == code, info.value.body
    status = status_of(info.value)
    assert status["reason"] == reason, status
    return status


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def api(sandbox: RunningSandbox) -> client.ApiClient:
    return sandbox.api_client()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    core.create_namespace(client.V1Namespace(metadata=meta("team")))
    return "team"


# --- discovery -----------------------------------------------------------------------------


def test_version_reports_the_flavor(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    psp = sandbox_factory(flavor="psp")
    psa = sandbox_factory(flavor="psa")
    assert client.VersionApi(psp.api_client()).get_code().git_version == "v1.24.17"
    assert client.VersionApi(psa.api_client()).get_code().git_version == "v1.30.4"


def test_discovery_lists_groups_and_resources(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    psp_sandbox = sandbox_factory(flavor="psp")
    psa_sandbox = sandbox_factory(flavor="psa")
    psp, psa = psp_sandbox.api_client(), psa_sandbox.api_client()
    groups = {g.name: g for g in client.ApisApi(psp).get_api_versions().groups}
    assert groups["kubeflow.org"].preferred_version.version == "v1"
    assert {v.version for v in groups["kubeflow.org"].versions} == {"v1", "v1beta1"}
    assert {v.version for v in groups["policy"].versions} == {"v1", "v1beta1"}
    assert "rbac.authorization.k8s.io" in groups and "events.k8s.io" in groups

    core = {r.name: r for r in client.CoreV1Api(psa).get_api_resources().resources}
    assert core["namespaces"].short_names == ["ns"] and not core["namespaces"].namespaced
    assert core["persistentvolumeclaims"].short_names == ["pvc"]
    assert core["persistentvolumeclaims"].namespaced
    assert "watch" in core["configmaps"].verbs
    assert core["serviceaccounts/token"].verbs == ["create"]

    # The client no longer ships policy/v1beta1: ask raw.
    raw = psp_sandbox.request("GET", "/apis/policy/v1beta1").body
    assert [r["name"] for r in raw["resources"]] == ["podsecuritypolicies"]
    with pytest.raises(ApiException) as info:
        psa_sandbox.request("GET", "/apis/policy/v1beta1")
    assert info.value.status == 404


def test_unknown_path_is_a_not_found_status(sandbox: RunningSandbox) -> None:
    with pytest.raises(ApiException) as info:
        sandbox.request("GET", "/api/v1/replicationcontrollers")
    status = status_of(info.value)
    assert status["reason"] == "NotFound"
    assert status["message"] == "the server could not find the requested resource"


# --- create / get / list / update / delete -------------------------------------------------


def test_create_fills_metadata_and_resource_versions_increase(
    core: client.CoreV1Api, ns: str
) -> None:
    first = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("a"), data={"k": "v"})
    )
    second = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"))
    )
    assert first.metadata.uid and first.metadata.creation_timestamp
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert second.metadata.name.startswith("gen-") and len(second.metadata.name) == 9
    listed = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in listed.items] == sorted(["a", second.metadata.name])
    assert int(listed.metadata.resource_version) >= int(second.metadata.resource_version)
    got = core.read_namespaced_config_map("a", ns)
    assert got.data == {"k": "v"} and got.metadata.uid == first.metadata.uid


def test_create_errors(core: client.CoreV1Api, ns: str) -> None:
    cm = client.V1ConfigMap(metadata=meta("a"))
    core.create_namespaced_config_map(ns, cm)
    status = expect_error(lambda: core.create_namespaced_config_map(ns, cm), 409, "AlreadyExists")
    assert status["message"] == 'configmaps "a" already exists'
    assert status["details"] == {"name": "a", "kind": "configmaps"}
    status = expect_error(lambda: core.create_namespaced_config_map("nowhere", cm), 404, "NotFound")
    assert status["message"] == 'namespaces "nowhere" not found'
    status = expect_error(
        lambda: core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(""))),
        422,
        "Invalid",
    )
    assert "name or generateName is required" in status["message"]
    expect_error(
        lambda: core.create_namespace(client.V1Namespace(metadata=meta("Bad_Name"))),
        422,
        "Invalid",
    )
    read_back = core.read_namespaced_config_map("a", ns)
    read_back.metadata.name = "copy"
    status = expect_error(
        lambda: core.create_namespaced_config_map(ns, read_back), 500, "InternalError"
    )
    assert "resourceVersion should not be set on objects to be created" in status["message"]
    wrong_ns = client.V1ConfigMap(metadata=meta("b", namespace="other"))
    expect_error(lambda: core.create_namespaced_config_map(ns, wrong_ns), 400, "BadRequest")


def test_kind_mismatch_is_a_bad_request(sandbox: RunningSandbox, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    with pytest.raises(ApiException) as info:
        sandbox.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=body)
    assert info.value.status == 400
    assert "does not match the expected kind" in status_of(info.value)["message"]


def test_update_conflicts_on_a_stale_resource_version(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("a"), data={"n": "1"})
    )
    created.data = {"n": "2"}
    updated = core.replace_namespaced_config_map("a", ns, created)
    assert updated.data == {"n": "2"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    created.data = {"n": "3"}  # still carries the old resourceVersion
    status = expect_error(
        lambda: core.replace_namespaced_config_map("a", ns, created), 409, "Conflict"
    )
    assert (
        "the object has been modified; please apply your changes to the latest version"
        in status["message"]
    )
    expect_error(
        lambda: core.replace_namespaced_config_map(
            "missing", ns, client.V1ConfigMap(metadata=meta("missing"))
        ),
        404,
        "NotFound",
    )


def test_noop_update_keeps_the_resource_version(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("a"), data={"n": "1"})
    )
    again = core.replace_namespaced_config_map("a", ns, created)
    assert again.metadata.resource_version == created.metadata.resource_version


def test_delete_and_not_found(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("a")))
    result = core.delete_namespaced_config_map("a", ns, propagation_policy="Foreground")
    assert result["status"] == "Success"  # the client hands a Status back as a dict
    status = expect_error(lambda: core.read_namespaced_config_map("a", ns), 404, "NotFound")
    assert status["message"] == 'configmaps "a" not found'
    expect_error(lambda: core.delete_namespaced_config_map("a", ns), 404, "NotFound")
    expect_error(
        lambda: core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}}), 404, "NotFound"
    )


def test_finalizers_hold_an_object_until_removed(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("held", finalizers=["example.com/hold"]))
    )
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    expect_error(lambda: core.read_namespaced_config_map("held", ns), 404, "NotFound")


def test_deletecollection_by_label(core: client.CoreV1Api, ns: str) -> None:
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=meta(name, labels={"tier": tier}))
        )
    core.delete_collection_namespaced_config_map(ns, label_selector="tier=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c"]


# --- namespaces ----------------------------------------------------------------------------


def test_namespace_deletion_cascades_and_waits_for_finalizers(
    core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("plain")))
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("held", finalizers=["example.com/hold"]))
    )
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=meta("sa")))
    core.delete_namespace(ns)
    terminating = core.read_namespace(ns)
    assert terminating.status.phase == "Terminating"
    status = expect_error(
        lambda: core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("new"))),
        403,
        "Forbidden",
    )
    assert status["message"] == (
        f'configmaps "new" is forbidden: unable to create new content in namespace {ns} '
        "because it is being terminated"
    )
    eventually(
        lambda: [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["held"]
    )
    assert core.list_namespaced_service_account(ns).items == []
    assert core.read_namespace(ns).status.phase == "Terminating"
    # A strategic merge patch merges finalizers as a set: [] would change nothing, null clears.
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone)


def test_namespace_defaults(core: client.CoreV1Api) -> None:
    created = core.create_namespace(client.V1Namespace(metadata=meta("fresh")))
    assert created.metadata.labels == {"kubernetes.io/metadata.name": "fresh"}
    assert created.spec.finalizers == ["kubernetes"]
    assert created.status.phase == "Active"


# --- selectors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["web1", "web2"]),
        ("app==web", ["web1", "web2"]),
        ("app!=web", ["db", "none"]),
        ("app in (web,db)", ["db", "web1", "web2"]),
        ("app notin (web)", ["db", "none"]),
        ("app", ["db", "web1", "web2"]),
        ("!app", ["none"]),
        ("app=web,tier=front", ["web1"]),
    ],
)
def test_label_selectors(
    core: client.CoreV1Api, ns: str, selector: str, expected: list[str]
) -> None:
    labels = {
        "web1": {"app": "web", "tier": "front"},
        "web2": {"app": "web"},
        "db": {"app": "db"},
        "none": {},
    }
    for name, lab in labels.items():
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(name, labels=lab)))
    found = core.list_namespaced_config_map(ns, label_selector=selector).items
    assert sorted(c.metadata.name for c in found) == expected


def test_field_selectors_and_all_namespaces(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=meta("other")))
    for namespace in (ns, "other"):
        for name in ("a", "b"):
            core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=meta(name)))
    everywhere = core.list_config_map_for_all_namespaces()
    assert len(everywhere.items) == 4
    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a")
    assert sorted(c.metadata.namespace for c in by_name.items) == sorted([ns, "other"])
    not_team = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace!={ns},metadata.name==b"
    )
    assert [(c.metadata.namespace, c.metadata.name) for c in not_team.items] == [("other", "b")]
    status = expect_error(
        lambda: core.list_config_map_for_all_namespaces(field_selector="spec.nope=1"),
        400,
        "BadRequest",
    )
    assert "is not a known field selector: only" in status["message"]
    expect_error(
        lambda: core.list_namespaced_config_map(ns, label_selector="a in (b"), 400, "BadRequest"
    )


# --- patches -------------------------------------------------------------------------------


def test_merge_and_json_patch(sandbox: RunningSandbox, core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("a", labels={"x": "1"}), data={"k": "v", "d": "x"})
    )

    # The client sends a dict body as a JSON merge patch... or strategic merge for
    # built-in types; force each content type through the low-level call.
    def patch(body: Any, content_type: str) -> dict[str, Any]:
        return dict(
            sandbox.request(
                "PATCH",
                f"/api/v1/namespaces/{ns}/configmaps/a",
                body=body,
                content_type=content_type,
            ).body
        )

    merged = patch({"data": {"d": None, "n": "new"}}, "application/merge-patch+json")
    assert merged["data"] == {"k": "v", "n": "new"}
    patched = patch(
        [{"op": "add", "path": "/metadata/labels/y", "value": "2"}], "application/json-patch+json"
    )
    assert patched["metadata"]["labels"] == {"x": "1", "y": "2"}
    with pytest.raises(ApiException) as info:
        patch([{"op": "test", "path": "/data/k", "value": "other"}], "application/json-patch+json")
    assert info.value.status == 422 and status_of(info.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as info:
        patch({"data": {}}, "application/yaml")
    assert info.value.status == 415
    assert status_of(info.value)["reason"] == "UnsupportedMediaType"


def test_strategic_merge_patch_on_a_deployment(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    container = client.V1Container(
        name="app",
        image="app:1",
        env=[client.V1EnvVar(name="A", value="1")],
        ports=[client.V1ContainerPort(container_port=80)],
    )
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=meta("web"),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=client.V1PodTemplateSpec(
                    metadata=meta("", labels={"app": "web"}),
                    spec=client.V1PodSpec(containers=[container]),
                ),
            ),
        ),
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                        {"name": "sidecar", "image": "proxy:1"},
                    ]
                }
            }
        }
    }
    result = apps.patch_namespaced_deployment("web", ns, patch)
    containers = result.spec.template.spec.containers
    assert [c.name for c in containers] == ["app", "sidecar"]
    assert containers[0].image == "app:2"
    assert [e.name for e in containers[0].env] == ["A", "B"]  # merged by name
    assert containers[0].ports[0].container_port == 80
    assert result.metadata.generation == 2
    removed = apps.patch_namespaced_deployment(
        "web",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
    )
    assert [c.name for c in removed.spec.template.spec.containers] == ["app"]


def test_strategic_merge_replaces_rbac_subjects(api: client.ApiClient, ns: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=meta("rb"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="User", name="alice", api_group="rbac.authorization.k8s.io"
                )
            ],
        ),
    )
    patched = rbac.patch_namespaced_role_binding(
        "rb",
        ns,
        {"subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]},
    )
    assert [s.name for s in patched.subjects] == ["bob"]


def test_server_side_apply_creates_then_prunes(sandbox: RunningSandbox, ns: str) -> None:
    def apply(body: str) -> dict[str, Any]:
        return dict(
            sandbox.request(
                "PATCH",
                f"/api/v1/namespaces/{ns}/configmaps/applied",
                body=body,
                query=[("fieldManager", "test")],
                content_type="application/apply-patch+yaml",
            ).body
        )

    created = apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    )
    assert created["data"] == {"a": "1"}
    # The same manager no longer applies data.a: kube prunes it (server-side apply).
    pruned = apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  b: '2'\n")
    assert pruned["data"] == {"b": "2"}


# --- dryRun and field validation -----------------------------------------------------------


def test_dry_run_stores_nothing_and_consumes_no_version(
    sandbox: RunningSandbox, core: client.CoreV1Api, ns: str
) -> None:
    before = sandbox.sandbox.store.resource_version
    result = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("dry")), dry_run="All"
    )
    assert result.metadata.name == "dry" and result.metadata.uid
    expect_error(lambda: core.read_namespaced_config_map("dry", ns), 404, "NotFound")
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("real"), data={}))
    rv = sandbox.sandbox.store.resource_version
    core.patch_namespaced_config_map("real", ns, {"data": {"x": "1"}}, dry_run="All")
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).data in ({}, None)
    assert sandbox.sandbox.store.resource_version == rv
    assert int(rv) == int(before) + 1
    expect_error(
        lambda: core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=meta("x")), dry_run="Some"
        ),
        422,  # kube-apiserver 1.36: CreateOptions.meta.k8s.io "" is invalid: dryRun: ...
        "Invalid",
    )


def test_field_validation(sandbox: RunningSandbox, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}

    def post(mode: str) -> Any:
        return sandbox.request(
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            body=dict(body),
            query=[("fieldValidation", mode)],
        )

    with pytest.raises(ApiException) as info:
        post("Strict")
    assert info.value.status == 400
    assert status_of(info.value)["message"] == 'strict decoding error: unknown field "bogus"'
    response = post("Warn")
    assert response.status == 201
    assert response.headers["Warning"] == '299 - "unknown field \\"bogus\\""'


# --- every resource family through its typed API -------------------------------------------


def test_crud_on_each_resource_family(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        ns,
        client.V1PersistentVolumeClaim(
            metadata=meta("data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    assert core.read_namespaced_persistent_volume_claim("data", ns).status.phase == "Pending"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=meta("pv1"),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                host_path=client.V1HostPathVolumeSource(path="/tmp"),
            ),
        )
    )
    core.create_namespaced_secret(ns, client.V1Secret(metadata=meta("s"), string_data={"a": "b"}))
    core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=meta("svc"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=443)])
        ),
    )
    core.create_namespaced_endpoints(ns, client.V1Endpoints(metadata=meta("svc")))
    core.create_namespaced_event(
        ns,
        client.CoreV1Event(
            metadata=meta("ev1"),
            involved_object=client.V1ObjectReference(kind="Pod", name="p"),
            reason="Tested",
            message="hello",
            type="Normal",
        ),
    )
    sa = core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=meta("sa")))
    assert sa.metadata.name == "sa"

    storage = client.StorageV1Api(api)
    storage.create_storage_class(
        client.V1StorageClass(metadata=meta("nfs-client"), provisioner="example.com/nfs")
    )
    assert storage.read_storage_class("nfs-client").provisioner == "example.com/nfs"

    rbac = client.RbacAuthorizationV1Api(api)
    rule = client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])
    rbac.create_namespaced_role(ns, client.V1Role(metadata=meta("r"), rules=[rule]))
    rbac.create_cluster_role(
        client.V1ClusterRole(metadata=meta("psp:vmware-system-privileged"), rules=[rule])
    )
    ref = client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="r")
    subject = client.RbacV1Subject(
        kind="Group", name="system:serviceaccounts:team", api_group="rbac.authorization.k8s.io"
    )
    rbac.create_namespaced_role_binding(
        ns, client.V1RoleBinding(metadata=meta("rb"), role_ref=ref, subjects=[subject])
    )
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=meta("crb"),
            subjects=[subject],
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name="psp:vmware-system-privileged",
            ),
        )
    )
    assert rbac.read_cluster_role("psp:vmware-system-privileged").rules[0].verbs == ["get"]

    coordination = client.CoordinationV1Api(api)
    lease = coordination.create_namespaced_lease(
        ns, client.V1Lease(metadata=meta("leader"), spec=client.V1LeaseSpec(holder_identity="a"))
    )
    lease.spec.holder_identity = "b"
    assert coordination.replace_namespaced_lease("leader", ns, lease).spec.holder_identity == "b"

    admission = client.AdmissionregistrationV1Api(api)
    admission.create_mutating_webhook_configuration(
        client.V1MutatingWebhookConfiguration(
            metadata=meta("vsphere-kale"),
            webhooks=[
                client.V1MutatingWebhook(
                    name="pvc.vsphere-kale.io",
                    admission_review_versions=["v1"],
                    side_effects="None",
                    client_config=client.AdmissionregistrationV1WebhookClientConfig(
                        url="https://127.0.0.1:1/mutate"
                    ),
                    rules=[
                        client.V1RuleWithOperations(
                            operations=["CREATE"],
                            api_groups=[""],
                            api_versions=["v1"],
                            resources=["persistentvolumeclaims"],
                        )
                    ],
                    failure_policy="Ignore",
                )
            ],
        )
    )
    assert admission.list_mutating_webhook_configuration().items[0].metadata.name == "vsphere-kale"

    policy = client.PolicyV1Api(api)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=meta("pdb"), spec=client.V1PodDisruptionBudgetSpec(min_available=1)
        ),
    )
    networking = client.NetworkingV1Api(api)
    networking.create_namespaced_network_policy(
        ns,
        client.V1NetworkPolicy(
            metadata=meta("np"),
            spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector()),
        ),
    )
    assert policy.read_namespaced_pod_disruption_budget("pdb", ns).spec.min_available == 1
    assert networking.list_namespaced_network_policy(ns).items[0].metadata.name == "np"


def test_events_are_served_by_both_apis(
    sandbox: RunningSandbox, api: client.ApiClient, ns: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_event(
        ns,
        client.CoreV1Event(
            metadata=meta("ev1"),
            involved_object=client.V1ObjectReference(
                kind="PersistentVolumeClaim", name="data", namespace=ns
            ),
            reason="ProvisioningFailed",
            message="no RWX",
            type="Warning",
            count=3,
        ),
    )
    events = client.EventsV1Api(api)
    # A core Event has no eventTime, which the typed events.k8s.io model requires (against
    # a real cluster too): read it raw.
    converted = sandbox.request("GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events/ev1").body
    assert converted["regarding"]["name"] == "data" and converted["note"] == "no RWX"
    assert converted["deprecatedCount"] == 3 and converted["reason"] == "ProvisioningFailed"
    events.create_namespaced_event(
        ns,
        client.EventsV1Event(
            metadata=meta("ev2"),
            event_time=datetime.datetime.now(datetime.timezone.utc),
            reason="Reconciled",
            note="done",
            type="Normal",
            regarding=client.V1ObjectReference(kind="Namespace", name=ns),
        ),
    )
    core_view = core.read_namespaced_event("ev2", ns)
    assert core_view.message == "done" and core_view.involved_object.kind == "Namespace"
    selected = core.list_namespaced_event(ns, field_selector="involvedObject.name=data")
    assert [e.metadata.name for e in selected.items] == ["ev1"]


def test_profiles_v1_and_v1beta1_are_one_object(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "alice"},
            "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
        },
    )
    old = custom.get_cluster_custom_object("kubeflow.org", "v1beta1", "profiles", "alice")
    assert old["apiVersion"] == "kubeflow.org/v1beta1"
    assert old["metadata"]["uid"] == created["metadata"]["uid"]
    assert old["spec"]["owner"]["name"] == "alice@example.com"
    listed = custom.list_cluster_custom_object("kubeflow.org", "v1beta1", "profiles")
    assert listed["kind"] == "ProfileList" and len(listed["items"]) == 1
    with pytest.raises(ApiException) as info:
        custom.create_cluster_custom_object(
            "kubeflow.org",
            "v1beta1",
            "profiles",
            {
                "apiVersion": "kubeflow.org/v1beta1",
                "kind": "Profile",
                "metadata": {"name": "alice"},
            },
        )
    assert status_of(info.value)["reason"] == "AlreadyExists"
    patched = custom.patch_cluster_custom_object(
        "kubeflow.org", "v1beta1", "profiles", "alice", {"metadata": {"labels": {"a": "b"}}}
    )
    assert patched["metadata"]["labels"] == {"a": "b"}
    custom.delete_cluster_custom_object("kubeflow.org", "v1", "profiles", "alice")
    assert custom.list_cluster_custom_object("kubeflow.org", "v1", "profiles")["items"] == []


def test_reviews_and_token_requests(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=meta("robot")))
    token = core.create_namespaced_service_account_token(
        "robot",
        ns,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    assert token.status.token
    review = client.AuthenticationV1Api(api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token.status.token))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{ns}:robot"
    sar = client.AuthorizationV1Api(api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user="bob",
                resource_attributes=client.V1ResourceAttributes(
                    verb="get", resource="configmaps", namespace=ns
                ),
            )
        )
    )
    assert sar.status.allowed  # authorization is off in this sandbox
    ssar = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="list", resource="pods")
            )
        )
    )
    assert ssar.status.allowed
    expect_error(
        lambda: core.create_namespaced_service_account_token(
            "ghost",
            ns,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        ),
        404,
        "NotFound",
    )


def test_unauthenticated_token_is_rejected(sandbox: RunningSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client(token="not-a-valid-token"))
    status = expect_error(core.list_namespace, 401, "Unauthorized")
    assert status["message"] == "Unauthorized"


# --- faults --------------------------------------------------------------------------------


def test_injected_faults(sandbox: RunningSandbox, core: client.CoreV1Api, ns: str) -> None:
    faults = sandbox.sandbox.faults
    faults.inject(verb="create", resource="configmaps", status=500, count=2)
    for _ in range(2):
        expect_error(
            lambda: core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("a"))),
            500,
            "InternalError",
        )
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("a")))
    # urllib3 honours Retry-After on a 429: the client waits and retries by itself.
    faults.inject(verb="list", resource="configmaps", status=429, retry_after=1)
    fired = faults.fired
    started = time.monotonic()
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["a"]
    assert faults.fired == fired + 1 and time.monotonic() - started >= 0.9
    # Without Retry-After the 429 reaches the caller as a TooManyRequests Status.
    faults.inject(verb="list", resource="configmaps", status=429)
    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map(ns)
    assert info.value.status == 429
    assert status_of(info.value)["reason"] == "TooManyRequests"
    faults.inject(verb="get", resource="configmaps", drop_connection=True, count=10)
    with pytest.raises(Exception) as dropped:  # urllib3 gives up after its retries
        core.read_namespaced_config_map("a", ns, _request_timeout=5)
    assert not isinstance(dropped.value, ApiException)
    faults.clear()
    assert core.read_namespaced_config_map("a", ns).metadata.name == "a"


# --- raw HTTP corners ------------------------------------------------------------------------


def raw_http(
    running: RunningSandbox, method: str, path: str, **headers: str
) -> urllib3.BaseHTTPResponse:
    headers = {"Authorization": f"Bearer {running.admin_token}", **headers}
    return urllib3.PoolManager().request(method, running.url + path, headers=headers, timeout=10)


def test_method_and_media_type_errors(sandbox: RunningSandbox, ns: str) -> None:
    put_collection = raw_http(sandbox, "PUT", f"/api/v1/namespaces/{ns}/configmaps")
    assert put_collection.status == 405
    assert json.loads(put_collection.data)["reason"] == "MethodNotAllowed"
    yaml_only = raw_http(sandbox, "GET", "/api/v1/namespaces", Accept="application/yaml")
    assert yaml_only.status == 406
    assert json.loads(yaml_only.data)["reason"] == "NotAcceptable"
    post_to_name = raw_http(sandbox, "POST", f"/api/v1/namespaces/{ns}/configmaps/x")
    assert post_to_name.status == 405


def test_legacy_watch_path_streams_json_lines(
    sandbox: RunningSandbox, core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("a")))
    response = raw_http(
        sandbox, "GET", f"/api/v1/watch/namespaces/{ns}/configmaps?timeoutSeconds=1"
    )
    assert response.status == 200
    events = [json.loads(line) for line in response.data.decode().splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    one = raw_http(sandbox, "GET", f"/api/v1/watch/namespaces/{ns}/configmaps/a?timeoutSeconds=1")
    assert [json.loads(line)["type"] for line in one.data.decode().splitlines()] == ["ADDED"]


def test_send_initial_events_is_refused_not_ignored(sandbox: RunningSandbox, ns: str) -> None:
    response = raw_http(
        sandbox,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps?watch=1"
        "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    )
    assert response.status == 422
    assert "WatchList" in json.loads(response.data)["message"]


def test_pods_are_served_empty_and_read_only(
    sandbox: RunningSandbox, core: client.CoreV1Api, ns: str
) -> None:
    assert core.list_namespaced_pod(ns).items == []
    assert core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items == []
    status = expect_error(
        lambda: core.create_namespaced_pod(
            ns,
            client.V1Pod(
                metadata=meta("p"),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        ),
        405,
        "MethodNotAllowed",
    )
    assert "the sandbox runs no pods" in status["message"]


def test_write_defaults_kube_applies(core: client.CoreV1Api, ns: str) -> None:
    secret = core.create_namespaced_secret(
        ns, client.V1Secret(metadata=meta("s"), string_data={"pw": "hunter2"}, data={"a": "YQ=="})
    )
    assert secret.data == {"a": "YQ==", "pw": "aHVudGVyMg=="} and secret.string_data is None
    svc = core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=meta("svc"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=443)])
        ),
    )
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.")
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 443
    patched = core.patch_namespaced_service("svc", ns, {"metadata": {"labels": {"a": "b"}}})
    assert patched.spec.cluster_ip == svc.spec.cluster_ip
    pvc = core.create_namespaced_persistent_volume_claim(
        ns,
        client.V1PersistentVolumeClaim(
            metadata=meta("p"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    assert pvc.spec.volume_mode == "Filesystem" and pvc.status.phase == "Pending"
