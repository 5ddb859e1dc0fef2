"""Scenarios run on either control plane, each returning a normalised outcome to compare.

A scenario is ``fn(target) -> JSON-able outcome``: status codes, reasons, the first line of
messages, the Status ``details`` our code reads, names of what a list returned. Volatile
values (uids, resourceVersions, timestamps, generated names) never enter an outcome. Each
scenario works in a namespace of its own (``target.namespace()``), since the real control
plane is shared by the session, and removes the cluster-scoped objects it creates.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from reconcile_helpers import ensure_profile_crd

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.sandbox.testing import RunningSandbox

Outcome = Any
RBAC_GROUP = "rbac.authorization.k8s.io"


class Target(Protocol):
    name: str

    def api(self, user: str = "admin") -> client.ApiClient: ...

    def kubectl(self, *args: str, user: str = "admin") -> subprocess.CompletedProcess[str]: ...


def _client_from(kubeconfig: Path, context: str | None) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig), context=context, client_configuration=configuration
    )
    return client.ApiClient(configuration)


class SandboxTarget:
    name = "embedded"

    def __init__(self, running: RunningSandbox) -> None:
        self.running = running

    def api(self, user: str = "admin") -> client.ApiClient:
        return self.running.api_client(None if user == "admin" else self.running.tokens[user])

    def kubectl(self, *args: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
        return _run(["kubectl", "--kubeconfig", str(self.running.kubeconfig_path),
                     "--context", f"{user}@sandbox", *args])  # fmt: skip


class ControlPlaneTarget:
    name = "real"

    def __init__(self, cp: RunningControlPlane) -> None:
        self.cp = cp

    def api(self, user: str = "admin") -> client.ApiClient:
        return _client_from(self.cp.kubeconfig_path, self.cp.context_for(user))

    def kubectl(self, *args: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
        return _run(["kubectl", *self.cp.kubectl_args(user), *args])


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# --- normalisation ------------------------------------------------------------------------


def status_outcome(exc: ApiException) -> Outcome:
    """A Status error as our code reads it: code, reason, message's first line, details."""
    try:
        body = json.loads(exc.body)
    except (TypeError, ValueError):
        return {"code": exc.status, "body": "not JSON"}
    details = body.get("details")
    out: dict[str, Any] = {
        "code": body.get("code"),
        "reason": body.get("reason"),
        "message": str(body.get("message", "")).split("\n")[0],
        "keys": list(body),
    }
    if details is not None:
        out["details"] = {
            **{k: v for k, v in details.items() if k in ("name", "group", "kind")},
            "causes": [
                {"reason": c.get("reason"), "field": c.get("field")}
                for c in details.get("causes") or []
            ],
        }
    return out


def attempt(call: Callable[[], Any]) -> Outcome:
    """``"ok"`` or the normalised Status of the ApiException the call raised."""
    try:
        call()
    except ApiException as exc:
        return status_outcome(exc)
    return "ok"


def attempt_once_granted(call: Callable[[], Any], *, timeout: float = 10.0) -> Outcome:
    """:func:`attempt` right after an RBAC grant: kube-apiserver's authorizer reads Roles and
    bindings from its informers, so a grant takes effect when their watch delivers it (a few
    milliseconds, more on a busy machine). Retried while refused, within ``timeout``; the
    last outcome (a refusal that outlives the timeout is a real difference)."""
    deadline = time.monotonic() + timeout
    outcome = attempt(call)
    while outcome != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
        outcome = attempt(call)
    return outcome


def _prefix(outcome: Outcome, prefix: str) -> Outcome:
    """Keep only ``prefix`` of the message when it starts with it (the rest is the decoder's
    own error text: Go's encoding/json there, Python's json here)."""
    if isinstance(outcome, dict) and str(outcome.get("message", "")).startswith(prefix):
        outcome["message"] = prefix
    return outcome


def new_namespace(target: Target) -> str:
    name = f"diff-{secrets.token_hex(4)}"
    client.CoreV1Api(target.api()).create_namespace({"metadata": {"name": name}})
    return name


def _pvc(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    body.update(spec)
    return {"metadata": {"name": name}, "spec": {k: v for k, v in body.items() if v is not None}}


# --- scenarios ----------------------------------------------------------------------------


def crud_and_conflict(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    created = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    stale = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="a", resource_version=created.metadata.resource_version),
        data={"k": "3"},
    )
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "2"}})
    return {
        "again": attempt(
            lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
        ),
        "stale": attempt(lambda: core.replace_namespaced_config_map("a", ns, stale)),
        "missing": attempt(lambda: core.read_namespaced_config_map("b", ns)),
        "delete": attempt(lambda: core.delete_namespaced_config_map("a", ns)),
        "gone": attempt(lambda: core.read_namespaced_config_map("a", ns)),
        "missing_namespace": attempt(
            lambda: core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "a"}})
        ),
    }


def selectors(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": name, "labels": {"tier": tier}}}
        )

    def names(**kw: Any) -> list[str]:
        items = core.list_namespaced_config_map(ns, **kw).items
        return sorted(i.metadata.name for i in items if i.metadata.name != "kube-root-ca.crt")

    return {
        "web": names(label_selector="tier=web"),
        "not_web": names(label_selector="tier!=web"),
        "set": names(label_selector="tier in (db)"),
        "by_name": names(field_selector="metadata.name=b"),
        "bad_field": attempt(
            lambda: core.list_namespaced_config_map(ns, field_selector="data.k=1")
        ),
    }


def pagination(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    for i in range(5):
        core.create_namespaced_secret(ns, {"metadata": {"name": f"s-{i}"}})
    first = core.list_namespaced_secret(ns, limit=2)
    second = core.list_namespaced_secret(ns, limit=2, _continue=first.metadata._continue)
    rest = core.list_namespaced_secret(ns, _continue=second.metadata._continue)
    return {
        "pages": [[s.metadata.name for s in page.items] for page in (first, second, rest)],
        "remaining": [first.metadata.remaining_item_count, second.metadata.remaining_item_count],
        "last_continue": rest.metadata._continue,
        "same_version": first.metadata.resource_version == second.metadata.resource_version,
        "garbage": _prefix(
            attempt(lambda: core.list_namespaced_secret(ns, limit=2, _continue="bm90LWEtdG9rZW4")),
            "invalid continue token: continue key is not valid",
        ),
    }


def dry_run(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    return {
        "stored": attempt(lambda: core.read_namespaced_config_map("dry", ns)),
        "bad_value": attempt(
            lambda: core.create_namespaced_config_map(
                ns, {"metadata": {"name": "x"}}, dry_run="Some"
            )
        ),
    }


def pvc_validation(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    core.create_namespaced_persistent_volume_claim(ns, _pvc("data", storageClassName="vsan"))
    patch = core.patch_namespaced_persistent_volume_claim
    return {
        "no_storage": attempt(
            lambda: core.create_namespaced_persistent_volume_claim(ns, _pvc("x", resources={}))
        ),
        "no_modes": attempt(
            lambda: core.create_namespaced_persistent_volume_claim(ns, _pvc("y", accessModes=[]))
        ),
        "class": attempt(lambda: patch("data", ns, {"spec": {"storageClassName": "nfs-client"}})),
        "modes": attempt(lambda: patch("data", ns, {"spec": {"accessModes": ["ReadWriteMany"]}})),
        "size": attempt(
            lambda: patch("data", ns, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
        ),
        "labels": attempt(lambda: patch("data", ns, {"metadata": {"labels": {"a": "b"}}})),
    }


def default_storage_class(target: Target) -> Outcome:
    """The newest default class wins; names sort ours first should a second tie."""
    storage = client.StorageV1Api(target.api())
    name = f"0diff-{secrets.token_hex(4)}"
    storage.create_storage_class(
        {
            "metadata": {
                "name": name,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "example.com/none",
        }
    )
    try:
        ns = new_namespace(target)
        core = client.CoreV1Api(target.api())
        classless = core.create_namespaced_persistent_volume_claim(ns, _pvc("classless"))
        empty = core.create_namespaced_persistent_volume_claim(
            ns, _pvc("empty", storageClassName="")
        )
        return {
            "classless_got_ours": classless.spec.storage_class_name == name,
            "empty": empty.spec.storage_class_name,
        }
    finally:
        storage.delete_storage_class(name, _preload_content=False)


def delete_options(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    return {
        "bogus": attempt(
            lambda: core.delete_namespaced_config_map("a", ns, propagation_policy="Bogus")
        ),
        "still_there": attempt(lambda: core.read_namespaced_config_map("a", ns)),
        "background": attempt(
            lambda: core.delete_namespaced_config_map("a", ns, propagation_policy="Background")
        ),
    }


def _grant_reader(target: Target, ns: str, user: str) -> None:
    rbac = client.RbacAuthorizationV1Api(target.api())
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "cm-reader"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "cm-reader"},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
        },
    )


def impersonation(target: Target) -> Outcome:
    ns = new_namespace(target)
    alice = "alice@example.com"
    as_alice = target.api()
    as_alice.set_default_header("Impersonate-User", alice)
    before = attempt(lambda: client.CoreV1Api(as_alice).list_namespaced_config_map(ns))
    _grant_reader(target, ns, alice)
    after = attempt_once_granted(lambda: client.CoreV1Api(as_alice).list_namespaced_config_map(ns))
    alice_as_bob = target.api("alice")
    alice_as_bob.set_default_header("Impersonate-User", "bob@example.com")
    can_i = target.kubectl(
        "auth", "can-i", "create", "clusterrolebindings",
        "--as=system:serviceaccount:alice:default-editor",
    )  # fmt: skip
    get = target.kubectl("get", "configmaps", "-n", ns, f"--as={alice}", "-o", "name")
    return {
        "before": before,
        "after": after,
        "alice_as_bob": attempt(lambda: client.CoreV1Api(alice_as_bob).list_namespace()),
        "can_i": can_i.stdout.strip(),
        "kubectl_get_rc": get.returncode,
    }


def rbac_escalation(target: Target) -> Outcome:
    ns = new_namespace(target)
    alice = "alice@example.com"
    rbac = client.RbacAuthorizationV1Api(target.api())
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "role-admin"},
            "rules": [
                {"apiGroups": [RBAC_GROUP], "resources": ["roles"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "role-admin"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "role-admin"},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": alice}],
        },
    )
    as_alice = client.RbacAuthorizationV1Api(target.api("alice"))

    def role(name: str, resource: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}],
        }

    # First the Role she may create, retried until the grant has reached the authorizer; only
    # then is the refusal below about escalation and not about a grant still on its way.
    held = attempt_once_granted(
        lambda: as_alice.create_namespaced_role(ns, role("cms", "configmaps"))
    )
    refused = attempt(lambda: as_alice.create_namespaced_role(ns, role("secrets", "secrets")))
    if isinstance(refused, dict):
        # The groups printed next come from each control plane's token set-up (the real
        # one's static token file adds an empty group), not from the API server.
        refused["message"] = refused["message"].split(" (groups=")[0]
    return {
        "held": held,
        "not_held": refused,
    }


def server_side_apply(target: Target) -> Outcome:
    ns = new_namespace(target)
    api = target.api()
    path = f"/api/v1/namespaces/{ns}/configmaps/applied"

    def apply(data: dict[str, str], manager: str, *, force: bool = False) -> Any:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
                "data": data}  # fmt: skip
        query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
        m, url, headers, payload, post = api.param_serialize(
            "PATCH", path, query_params=query, body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/apply-patch+yaml",
                           "Accept": "application/json"},
        )  # fmt: skip
        response = api.call_api(m, url, headers, payload, post)
        response.read()
        return api.response_deserialize(response, {"2XX": "object"}).data

    apply({"a": "1", "b": "1"}, "one")
    conflict = attempt(lambda: apply({"a": "2"}, "two"))
    forced = apply({"a": "2"}, "two", force=True)
    pruned = apply({"b": "1"}, "one")  # "one" stops applying a (now owned by "two" anyway)
    dropped = apply({}, "one")
    return {
        "conflict": conflict,
        "forced": forced["data"],
        "managers": sorted(
            (e["manager"], e["operation"], sorted(e["fieldsV1"].get("f:data", {})))
            for e in forced["metadata"]["managedFields"]
        ),
        "pruned": pruned["data"],
        "dropped": dropped.get("data"),
        "no_manager": attempt(lambda: apply({"a": "1"}, "")),
    }


def namespace_deletion(target: Target) -> Outcome:
    ns = new_namespace(target)
    core = client.CoreV1Api(target.api())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    core.delete_namespace(ns)
    phase = core.read_namespace(ns).status.phase
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            if exc.status == 404:
                return {"phase_after_delete": phase, "finally": 404}
            raise
        time.sleep(0.2)
    return {"phase_after_delete": phase, "finally": "still there after 60 s"}


def explain_pvc_spec(target: Target) -> Outcome:
    done = target.kubectl("explain", "pvc.spec")
    fields = sorted(
        line.split()[0]
        for line in done.stdout.split("FIELDS:", 1)[-1].splitlines()
        if line.startswith("  ") and not line.startswith("   ") and line.strip()
    )
    return {"rc": done.returncode, "has_core_fields": {
        f: f in fields for f in ("accessModes", "resources", "storageClassName", "volumeMode")
    }}  # fmt: skip


def _raw(api: client.ApiClient, method: str, path: str, body: Any, content_type: str) -> Any:
    """One request with a body the generated client would refuse to build (its models are
    typed): what kubectl sends for ``enabled: true`` in a ConfigMap's YAML."""
    m, url, headers, payload, post = api.param_serialize(
        method, path, body=body, auth_settings=["BearerToken"],
        header_params={"Content-Type": content_type, "Accept": "application/json"},
    )  # fmt: skip
    response = api.call_api(m, url, headers, payload, post)
    response.read()
    return api.response_deserialize(response, {"2XX": "object"}).data


_PATCHED_OBJECT = re.compile(r'Invalid value: "\{.*\}": ')


def _without_patched_object(outcome: Outcome) -> Outcome:
    """The patched object kube prints in a merge or JSON patch refusal carries uids and
    timestamps (and Go's key order); the code, reason, cause and decoder error are compared."""
    if isinstance(outcome, dict) and "message" in outcome:
        outcome["message"] = _PATCHED_OBJECT.sub('Invalid value: "<object>": ', outcome["message"])
    return outcome


def typed_field_decoding(target: Target) -> Outcome:
    """Values of the wrong type in typed fields, refused by kube's decoder on every write path
    (create and update 400, merge/JSON/strategic patch 422, apply 500), and what the decoder
    makes of nulls, empty maps and base64 with newlines."""
    ns = new_namespace(target)
    api = target.api()
    cms, secrets_path = f"/api/v1/namespaces/{ns}/configmaps", f"/api/v1/namespaces/{ns}/secrets"

    def post(path: str, body: Any) -> Outcome:
        return attempt(lambda: _raw(api, "POST", path, body, "application/json"))

    def patch(path: str, body: Any, content_type: str) -> Outcome:
        return _without_patched_object(
            attempt(lambda: _raw(api, "PATCH", path, body, content_type))
        )

    def full_message(call: Callable[[], Any]) -> Outcome:
        """The whole message, its lines sorted: kube lists several typed-patch errors in the
        order of a Go map walk, which varies from run to run."""
        try:
            call()
        except ApiException as exc:
            return sorted(str(json.loads(exc.body).get("message")).split("\n"))
        return "ok"

    _raw(api, "POST", cms, {"metadata": {"name": "cm"}, "data": {"k": "v"}}, "application/json")
    normalised = _raw(api, "POST", secrets_path, {
        "metadata": {"name": "nulls", "labels": {"b": None, "a": "x"}, "annotations": {}},
        "data": {"z": "YWJj\nZA==", "k": None}, "stringData": {"j": None},
    }, "application/json")  # fmt: skip
    apply_path = f"{cms}/cm?fieldManager=diff"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    return {
        "data_bool": post(cms, {"metadata": {"name": "a"}, "data": {"k": True}}),
        "data_list": post(cms, {"metadata": {"name": "a"}, "data": ["x"]}),
        "first_in_document_order": post(
            cms, {"data": {"k": 1}, "metadata": {"name": "a", "labels": {"l": 1}}}
        ),
        "labels_string": post(cms, {"metadata": {"name": "a", "labels": "x"}}),
        "metadata_string": post(cms, {"metadata": "x"}),
        "name_number": post(cms, {"metadata": {"name": 5}}),
        "binary_data_number": post(cms, {"metadata": {"name": "a"}, "binaryData": {"k": 1}}),
        "secret_base64": {
            text: post(secrets_path, {"metadata": {"name": "b"}, "data": {"k": text}})
            for text in ("not base64!", "abc", "YQ=", "ab=c", "YWJj====", "YWJjZA==YQ==")
        },
        "string_data_number": post(
            secrets_path, {"metadata": {"name": "b"}, "stringData": {"k": 7}}
        ),
        "role_label": post(
            f"/apis/{RBAC_GROUP}/v1/namespaces/{ns}/roles",
            {"metadata": {"name": "r", "labels": {"a": 1}}, "rules": []},
        ),
        "normalised": {
            "labels": normalised["metadata"].get("labels"),
            "annotations": normalised["metadata"].get("annotations"),
            "data": normalised.get("data"),
        },
        "update": attempt(
            lambda: _raw(
                api,
                "PUT",
                f"{cms}/cm",
                {"metadata": {"name": "cm"}, "data": {"k": 5}},
                "application/json",
            )
        ),
        "merge_patch": patch(f"{cms}/cm", {"data": {"k": 5}}, "application/merge-patch+json"),
        "json_patch": patch(
            f"{cms}/cm",
            [{"op": "add", "path": "/data/k", "value": True}],
            "application/json-patch+json",
        ),
        "strategic_int": patch(
            f"{cms}/cm",
            {"metadata": {"labels": {"a": 1}}, "data": {"k": True}},
            "application/strategic-merge-patch+json",
        ),
        "strategic_float": patch(
            f"{cms}/cm", {"data": {"j": "x", "k": 2.0}}, "application/strategic-merge-patch+json"
        ),
        "strategic_not_a_map": patch(
            f"{cms}/cm", {"data": True}, "application/strategic-merge-patch+json"
        ),
        "strategic_base64": patch(
            f"{secrets_path}/nulls",
            {"data": {"k": "abc"}},
            "application/strategic-merge-patch+json",
        ),
        "apply": full_message(
            lambda: _raw(
                api,
                "PATCH",
                apply_path,
                {**config, "metadata": {"name": "cm", "labels": {"a": 1}}, "data": {"k": {"x": 1}}},
                "application/apply-patch+yaml",
            )
        ),
        "apply_not_a_map": full_message(
            lambda: _raw(
                api, "PATCH", apply_path, {**config, "data": ["x"]}, "application/apply-patch+yaml"
            )
        ),
        "apply_base64": full_message(
            lambda: _raw(
                api,
                "PATCH",
                f"{cms}/new?fieldManager=diff",
                {**config, "metadata": {"name": "new"}, "binaryData": {"k": "abc"}},
                "application/apply-patch+yaml",
            )
        ),
        "unchanged": _raw(api, "GET", f"{cms}/cm", None, "application/json")["data"],
    }


def custom_resource_decoding(target: Target) -> Outcome:
    """A custom resource is decoded unstructured, only its metadata into ObjectMeta: kube's
    words name ``ObjectMeta.labels`` there (``ObjectMeta.metadata.labels`` for built-ins)."""
    if target.name == "real":  # the sandbox serves Profiles built in
        ensure_profile_crd(target.api())
    api = target.api()
    path = "/apis/kubeflow.org/v1/profiles"
    name = f"diff-{secrets.token_hex(4)}"

    def post(metadata: Any) -> Outcome:
        body = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": metadata,
                "spec": {}}  # fmt: skip
        return attempt(lambda: _raw(api, "POST", path, body, "application/json"))

    outcome = {
        "label_number": post({"name": name, "labels": {"a": 1}}),
        "name_number": post({"name": 5}),
        "metadata_string": post("x"),
    }
    created = _raw(api, "POST", path, {
        "apiVersion": "kubeflow.org/v1", "kind": "Profile", "spec": {},
        "metadata": {"name": name, "labels": {"b": None, "a": "1"}},
    }, "application/json")  # fmt: skip
    client.CustomObjectsApi(api).delete_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", name
    )
    return {**outcome, "null_label": created["metadata"]["labels"]}


def discovery(target: Target) -> Outcome:
    resources = client.CoreV1Api(target.api()).get_api_resources().resources
    pvc = next(r for r in resources if r.name == "persistentvolumeclaims")
    return {"kind": pvc.kind, "namespaced": pvc.namespaced, "short": pvc.short_names}


SCENARIOS: dict[str, Callable[[Target], Outcome]] = {
    f.__name__: f
    for f in (
        crud_and_conflict,
        selectors,
        pagination,
        dry_run,
        pvc_validation,
        default_storage_class,
        delete_options,
        impersonation,
        rbac_escalation,
        server_side_apply,
        namespace_deletion,
        explain_pvc_spec,
        discovery,
        typed_field_decoding,
        custom_resource_decoding,
    )
}
