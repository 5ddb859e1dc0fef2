"""deploy/ renders, validates against the Kubernetes schemas, and says what the code expects.

Real tools, no server: ``kubectl kustomize`` (kubectl's embedded kustomize) builds the base,
each overlay, and every combination of components the installer can ask for; the Python API of
``kubernetes-validate`` checks every rendered object strictly (unknown fields fail) against
Kubernetes 1.24 when PodSecurityPolicy is in the set, else 1.30 and the newest bundled version.
The rest pins down what the service's code and the issue rely on: least-privilege RBAC with no
wildcards, the Deployment's security settings, the webhook's fields, and a settings file that
``settings_from_mapping`` accepts.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

import vsphere_kale
from vsphere_kale.install import certs
from vsphere_kale.install.doctor import fetch_required_roles
from vsphere_kale.sandbox.selectors import selector_from_label_selector_object
from vsphere_kale.settings import Settings, settings_from_mapping, settings_to_mapping

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPONENTS = ("psp", "cert-manager", "kubeflow-only")
NAMESPACE = "vsphere-kale"
NAME = "vsphere-kale"
MANAGED_BY = {"app.kubernetes.io/managed-by": "vsphere-kale", "app.kubernetes.io/name": NAME}
# kubernetes-validate ships schemas for built-in kinds only; cert-manager's CRDs are checked
# field by field in test_cert_manager_objects instead.
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
# Every combination `vsphere-kale install --overlay ...` accepts: any subset of the components.
COMBINATIONS = [
    combo
    for size in range(len(COMPONENTS) + 1)
    for combo in itertools.combinations(COMPONENTS, size)
]

Doc = dict[str, Any]


def combo_id(combo: tuple[str, ...]) -> str:
    return "+".join(combo) or "base"


def kustomize(path: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its embedded kustomize) must be on PATH"
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def compose(workdir: Path, combo: tuple[str, ...]) -> Path:
    """A kustomization of the base plus ``combo``, the way an admin (or the installer) composes
    components. kustomize refuses absolute resource paths, hence relative ones."""
    workdir.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(DEPLOY, workdir))
    lines = [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        f"resources: [{rel / 'base'}]",
        f"components: [{', '.join(str(rel / 'components' / c) for c in combo)}]",
    ]
    (workdir / "kustomization.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return workdir


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], list[Doc]]:
    """Every combination, rendered once for the module (each build is a kubectl run)."""
    root = tmp_path_factory.mktemp("kustomize")
    return {combo: kustomize(compose(root / combo_id(combo), combo)) for combo in COMBINATIONS}


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def rules_table(
    role: Doc,
) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return [
        (
            tuple(rule.get("apiGroups", ())),
            tuple(rule.get("resources", ())),
            tuple(rule.get("verbs", ())),
            tuple(rule.get("resourceNames", ())),
        )
        for rule in role["rules"]
    ]


WEBHOOK = "webhook"
"""The second container: ``vsphere-kale webhook``, admission in a process of its own."""


def pod_containers(docs: list[Doc]) -> dict[str, Doc]:
    containers = find(docs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"]
    return {c["name"]: c for c in containers}


def deployment_container(docs: list[Doc], name: str = NAME) -> Doc:
    """The named container (default: the first, ``serve``; cert-manager patches it by index)."""
    containers = find(docs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"]
    if name == NAME:
        assert containers[0]["name"] == NAME
    return pod_containers(docs)[name]


def args_to_options(args: list[str], command: str = "serve") -> dict[str, str | None]:
    """``serve --config F --no-cert-rotation`` -> {"--config": "F", "--no-cert-rotation": None}."""
    assert args[0] == command, args
    options: dict[str, str | None] = {}
    rest = args[1:]
    i = 0
    while i < len(rest):
        flag = rest[i]
        assert flag.startswith("--"), f"unexpected positional argument {flag!r} in {args}"
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            options[flag] = rest[i + 1]
            i += 2
        else:
            options[flag] = None
            i += 1
    return options


def serve_option_names(command: str = "serve") -> set[str]:
    """The long option names `vsphere-kale serve` (or ``command``) really accepts (click's
    own definition)."""
    from vsphere_kale.cli import main

    serve = main.get_command(click.Context(main), command)
    assert serve is not None, f"`vsphere-kale {command}` is not registered in vsphere_kale.cli"
    names: set[str] = set()
    for param in serve.params:
        names.update(opt for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--"))
    return names


# --- building -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", *(f"overlays/{c}" for c in COMPONENTS)])
def test_base_and_each_overlay_build(overlay: str) -> None:
    docs = kustomize(DEPLOY / overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "MutatingWebhookConfiguration", "ClusterRole", "Role"} <= kinds


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_overlay_is_exactly_base_plus_its_component(
    component: str, rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    # The overlays are thin wrappers: all behaviour lives in the components, so what an admin
    # gets from overlays/X is what the installer composes for `--overlay X`.
    assert kustomize(DEPLOY / "overlays" / component) == rendered[(component,)]


def test_every_combination_builds_with_unique_objects(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    for combo, docs in rendered.items():
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), combo_id(combo)


def test_gitops_example_builds_with_its_own_image_and_settings() -> None:
    docs = kustomize(DEPLOY / "examples" / "gitops")
    images = {c["image"] for c in pod_containers(docs).values()}
    assert images == {"registry.example.com/platform/vsphere-kale:0.1.0"}
    config = yaml.safe_load(find(docs, "ConfigMap", "vsphere-kale-config")["data"]["config.yaml"])
    settings = settings_from_mapping(config)
    assert settings.storage.rwx_capable_classes == ("vsan-file",)
    mwc = find(docs, "MutatingWebhookConfiguration", NAME)
    assert mwc["webhooks"][0]["namespaceSelector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "kubeflow-profile"
    }


# --- schema validation ----------------------------------------------------------------------


def validation_versions(combo: tuple[str, ...]) -> list[str]:
    if "psp" in combo:
        # policy/v1beta1 PodSecurityPolicy was removed in Kubernetes 1.25.
        return ["1.24.0"]
    return ["1.30.0", kv_utils.latest_version()]


def test_validation_covers_1_24_and_a_version_newer_than_1_30() -> None:
    versions = kv_utils.all_versions()
    assert "1.24.0" in versions, "kubernetes-validate no longer bundles 1.24 (see pyproject pin)"
    assert Version(kv_utils.latest_version()) > Version("1.30.0")


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_every_rendered_object_validates_strictly(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    docs = rendered[combo]
    failures: list[str] = []
    checked = 0
    for version in validation_versions(combo):
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                failures.append(
                    f"{version} {doc['kind']}/{doc['metadata']['name']} {path}: {exc.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as exc:
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)
    built_in = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]
    assert checked == len(built_in) * len(validation_versions(combo))


def test_strict_validation_would_catch_a_misspelt_field(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    # Guards the guard: strict mode must reject an unknown field, or the test above proves nothing.
    deployment = find(rendered[()], "Deployment", NAME)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesytem"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# --- labels and namespaces ------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_everything_carries_our_labels_and_lives_in_our_namespace(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "PodSecurityPolicy",
    }
    for doc in rendered[combo]:
        meta = doc["metadata"]
        where = f"{doc['kind']}/{meta['name']}"
        assert MANAGED_BY.items() <= meta.get("labels", {}).items(), where
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta, where
        else:
            assert meta.get("namespace") == NAMESPACE, where
    pod_labels = find(rendered[combo], "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert MANAGED_BY.items() <= pod_labels.items()


def test_image_tag_is_the_package_version(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    images = {c["image"] for c in pod_containers(rendered[()]).values()}
    assert images == {f"ghcr.io/vsphere-kale/vsphere-kale:{vsphere_kale.__version__}"}


def test_our_namespace_enforces_the_restricted_pod_security_standard(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    labels = find(rendered[()], "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- RBAC -----------------------------------------------------------------------------------

# What `vsphere-kale serve` needs is not copied here: tests/install/test_rbac_usage.py runs the
# service as its ServiceAccount and holds every grant to a call the code makes. Here: the
# rendered roles are the ones doctor derives from deploy/base (one source, applied the same way
# for the cert-manager component), and the shape rules below.


def doctor_rules(kind: str, *, cert_manager: bool) -> list[tuple[tuple[str, ...], ...]]:
    """Our ClusterRole or Role as ``vsphere-kale doctor`` reads it from deploy/."""
    settings = settings_from_mapping({"storage": {"rwxStorageClass": "nfs-client"}})
    return rules_table(find(fetch_required_roles(settings, cert_manager=cert_manager), kind, NAME))


def roles(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in ("Role", "ClusterRole"))


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_rbac_has_no_wildcards(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    for role in roles(rendered[combo]):
        assert "aggregationRule" not in role, role["metadata"]["name"]
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                values = rule.get(field, [])
                assert not any("*" in value for value in values), (role["metadata"]["name"], rule)


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_privilege_verbs_only_on_named_objects(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    # bind/escalate/impersonate/use hand out other permissions: each must name its target.
    for role in roles(rendered[combo]):
        for rule in role["rules"]:
            if {"bind", "escalate", "impersonate", "use"} & set(rule["verbs"]):
                assert rule.get("resourceNames"), (role["metadata"]["name"], rule)
            assert "escalate" not in rule["verbs"] and "impersonate" not in rule["verbs"]


def test_rendered_service_rbac_is_what_doctor_reads_from_deploy_base(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[()]
    assert rules_table(find(docs, "ClusterRole", NAME)) == doctor_rules(
        "ClusterRole", cert_manager=False
    )
    role = find(docs, "Role", NAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_table(role) == doctor_rules("Role", cert_manager=False)


def test_bind_is_limited_to_the_configured_psp_cluster_role(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[()]
    settings = configmap_settings(docs)
    bind_rules = [r for r in find(docs, "ClusterRole", NAME)["rules"] if "bind" in r["verbs"]]
    assert [r["resourceNames"] for r in bind_rules] == [[settings.pod_security.psp_cluster_role]]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_bindings_grant_our_roles_to_our_service_account_only(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    docs = rendered[combo]
    sa = find(docs, "ServiceAccount", NAME)
    role_names = {(d["kind"], d["metadata"]["name"]) for d in roles(docs)}
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in role_names, binding["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]


def test_reconciler_role_aggregates_into_kubeflow_admin(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    role = find(rendered[()], "ClusterRole", "vsphere-kale-reconciler")
    assert (
        role["metadata"]["labels"]["rbac.authorization.kubeflow.org/aggregate-to-kubeflow-admin"]
        == "true"
    )
    assert rules_table(role) == [
        (("vsphere-kale.io",), ("reconciles", "pvcrecreations"), ("create",), ())
    ]
    # Only our service account is bound to anything; the reconciler role is bound by Kubeflow.
    bound = {d["roleRef"]["name"] for d in rendered[()] if d["kind"].endswith("Binding")}
    assert "vsphere-kale-reconciler" not in bound


def test_cert_manager_mode_drops_the_rotation_permissions(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    base_cluster = doctor_rules("ClusterRole", cert_manager=False)
    base_role = doctor_rules("Role", cert_manager=False)
    for combo, docs in rendered.items():
        cluster = rules_table(find(docs, "ClusterRole", NAME))
        namespaced = rules_table(find(docs, "Role", NAME))
        if "cert-manager" in combo:
            # cert-manager owns the Secret and the caBundle: no Secret rule, the webhook
            # configuration read-only; everything else as in the base.
            assert namespaced == [rule for rule in base_role if rule[1] != ("secrets",)]
            assert cluster == [
                (g, r, ("get",), n) if r == ("mutatingwebhookconfigurations",) else (g, r, v, n)
                for g, r, v, n in base_cluster
            ], combo_id(combo)
            assert (cluster, namespaced) == (
                doctor_rules("ClusterRole", cert_manager=True),
                doctor_rules("Role", cert_manager=True),
            ), combo_id(combo)
        else:
            assert cluster == base_cluster, combo_id(combo)
            assert namespaced == base_role, combo_id(combo)


# --- the settings file ----------------------------------------------------------------------


def configmap_settings(docs: list[Doc]) -> Settings:
    data = find(docs, "ConfigMap", "vsphere-kale-config")["data"]
    assert set(data) == {"config.yaml"}
    return settings_from_mapping(yaml.safe_load(data["config.yaml"]))


def test_configmap_holds_a_valid_settings_file_naming_every_key(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    data = yaml.safe_load(
        find(rendered[()], "ConfigMap", "vsphere-kale-config")["data"]["config.yaml"]
    )
    settings = settings_from_mapping(data)  # raises ConfigError on an unknown key or wrong type
    assert settings.storage.rwx_storage_class == "nfs-client"
    assert settings.namespace == NAMESPACE
    # The shipped file documents the whole schema: every key the code knows is present.
    every_key = settings_to_mapping(Settings())
    assert set(data) >= set(every_key)
    for section in ("storage", "podSecurity"):
        assert set(data[section]) >= set(every_key[section])
    assert "rwxStorageClass" in data["storage"]  # no default, so not in every_key
    # ...and only the documented defaults, apart from the class (which has no default).
    defaults = settings_to_mapping(Settings())
    defaults["storage"]["rwxStorageClass"] = "nfs-client"
    assert settings_to_mapping(settings) == defaults


def test_config_file_path_and_mount_agree(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    docs = rendered[()]
    container = deployment_container(docs)
    options = args_to_options(container["args"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v for v in find(docs, "Deployment", NAME)["spec"]["template"]["spec"]["volumes"]
    }
    config_mount = mounts["config"]
    assert options["--config"] == config_mount["mountPath"]
    assert volumes["config"]["configMap"]["name"] == "vsphere-kale-config"
    assert config_mount["subPath"] == "config.yaml"


# --- Deployment -----------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_deployment_runs_locked_down(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    pod = find(rendered[combo], "Deployment", NAME)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert pod["serviceAccountName"] == NAME
    # The token only where the API is called: the webhook container, open to anyone, has none.
    assert pod["automountServiceAccountToken"] is False
    (token,) = [v for v in pod["volumes"] if "projected" in v]
    sources = token["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert "audience" not in sources[0]["serviceAccountToken"]  # the API server's own
    for name, container in pod_containers(rendered[combo]).items():
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        if name == NAME:
            assert mounted[token["name"]] == "/var/run/secrets/kubernetes.io/serviceaccount"
        else:
            assert token["name"] not in mounted
    containers = pod_containers(rendered[combo])
    assert list(containers) == [NAME, WEBHOOK]
    for container in containers.values():
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Two budgets: a flood of admin calls cannot take the webhook's CPU or memory.
    assert containers[NAME]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert containers[WEBHOOK]["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "192Mi"},
    }


def test_deployment_is_highly_available(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    docs = rendered[()]
    deployment = find(docs, "Deployment", NAME)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = spec["selector"]["matchLabels"]
    template_labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    pdb = find(docs, "PodDisruptionBudget", NAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 10


@pytest.mark.parametrize(
    ("name", "port_name", "number", "probes"),
    [
        (NAME, "admin", 8444, ("readinessProbe", "livenessProbe", "startupProbe")),
        # The webhook starts in about a second and syncs nothing: no startup probe needed.
        (WEBHOOK, "https", 8443, ("readinessProbe", "livenessProbe")),
    ],
)
def test_probes_use_https_health_endpoints_on_each_containers_port(
    rendered: dict[tuple[str, ...], list[Doc]],
    name: str,
    port_name: str,
    number: int,
    probes: tuple[str, ...],
) -> None:
    container = deployment_container(rendered[()], name)
    (port,) = container["ports"]
    assert port == {"name": port_name, "containerPort": number, "protocol": "TCP"}
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    assert tuple(p for p in paths if p in container) == probes
    for probe in probes:
        get = container[probe]["httpGet"]
        assert (get["path"], get["scheme"], get["port"]) == (paths[probe], "HTTPS", port_name)
    command = container["args"][0]
    assert args_to_options(container["args"], command)["--port"] == str(number)


def test_pod_identity_comes_from_the_downward_api(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in deployment_container(rendered[()])["env"]
    }
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def test_tls_secret_is_mounted_as_a_directory_for_hot_reload(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[()]
    pod = find(docs, "Deployment", NAME)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod_containers(docs).values():
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        options = args_to_options(container["args"], container["args"][0])
        tls_dir = str(Path(str(options["--cert-file"])).parent)
        assert str(Path(str(options["--key-file"])).parent) == tls_dir
        tls = mounts[tls_dir]
        # subPath mounts never see a Secret update; the rotated certificate must reach both.
        assert "subPath" not in tls and tls["readOnly"] is True
        assert volumes[tls["name"]]["secret"]["secretName"] == "vsphere-kale-tls"
        assert volumes[tls["name"]]["secret"]["defaultMode"] == 0o440
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert options["--config"] == mounts[str(options["--config"])]["mountPath"]
    # No Secret object in the manifests: a GitOps re-apply must not overwrite a rotated one.
    for combo_docs in rendered.values():
        assert not [d for d in combo_docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_serve_arguments_are_options_the_cli_accepts(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    options = args_to_options(deployment_container(rendered[combo])["args"])
    assert set(options) <= serve_option_names()
    assert ("--no-cert-rotation" in options) == ("cert-manager" in combo)
    # The webhook has its own container; this one serves the admin API and the reconciler.
    assert "--no-webhook" in options
    webhook = args_to_options(deployment_container(rendered[combo], WEBHOOK)["args"], WEBHOOK)
    assert set(webhook) <= serve_option_names(WEBHOOK)


def test_service_routes_443_to_the_webhook_and_8444_to_the_admin_api(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[()]
    service = find(docs, "Service", NAME)
    ports = [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]]
    assert ports == [("https", 443, "https"), ("admin", 8444, "admin")]
    containers = pod_containers(docs)
    assert [p["name"] for p in containers[WEBHOOK]["ports"]] == ["https"]
    assert [p["name"] for p in containers[NAME]["ports"]] == ["admin"]
    # The webhook configuration names the Service port of the webhook container.
    (hook,) = find(docs, "MutatingWebhookConfiguration", NAME)["webhooks"]
    assert hook["clientConfig"]["service"]["port"] == 443
    template_labels = find(docs, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()


# --- MutatingWebhookConfiguration -----------------------------------------------------------


def the_webhook(docs: list[Doc]) -> Doc:
    (webhook,) = find(docs, "MutatingWebhookConfiguration", NAME)["webhooks"]
    assert webhook["name"] == "pvc-rwx.vsphere-kale.io"
    result: Doc = webhook
    return result


def test_webhook_fields(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    docs = rendered[()]
    webhook = the_webhook(docs)
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["persistentvolumeclaims"],
            "scope": "Namespaced",
        }
    ]
    service = find(docs, "Service", NAME)
    assert webhook["clientConfig"]["service"] == {
        "namespace": service["metadata"]["namespace"],
        "name": service["metadata"]["name"],
        "path": "/mutate/persistentvolumeclaims",
        "port": service["spec"]["ports"][0]["port"],
    }


def test_failure_policy_reason_is_written_next_to_it() -> None:
    lines = (DEPLOY / "base" / "mutatingwebhookconfiguration.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "failurePolicy: Ignore")
    comment: list[str] = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line.strip("# "))
    reason = " ".join(comment)
    assert "block" in reason and "doctor" in reason, reason


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_ca_bundle_is_left_to_the_installer_or_cainjector(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    docs = rendered[combo]
    mwc = find(docs, "MutatingWebhookConfiguration", NAME)
    assert "caBundle" not in the_webhook(docs)["clientConfig"]
    annotations = mwc["metadata"].get("annotations", {})
    if "cert-manager" in combo:
        assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{NAME}"}
    else:
        assert annotations == {}


def namespace_labels(name: str, **extra: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **extra}


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_namespace_selector_sends_only_the_right_namespaces(
    combo: tuple[str, ...], rendered: dict[tuple[str, ...], list[Doc]]
) -> None:
    selector = selector_from_label_selector_object(
        the_webhook(rendered[combo])["namespaceSelector"]
    )
    profile = {"app.kubernetes.io/part-of": "kubeflow-profile"}
    kubeflow_only = "kubeflow-only" in combo
    cases: list[tuple[Mapping[str, str], bool]] = [
        (namespace_labels("alice", **profile), True),
        (namespace_labels("team-data"), not kubeflow_only),
        (namespace_labels("kube-system"), False),
        (namespace_labels(NAMESPACE), False),
        (namespace_labels("alice", **profile, **{"vsphere-kale.io/webhook": "disabled"}), False),
        (
            namespace_labels("team-data", **{"vsphere-kale.io/webhook": "enabled"}),
            not kubeflow_only,
        ),
    ]
    for labels, called in cases:
        assert selector.matches(labels) is called, labels


def test_namespace_selector_mirrors_the_excluded_namespaces_setting(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[()]
    settings = configmap_settings(docs)
    (by_name,) = [
        e
        for e in the_webhook(docs)["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert by_name["operator"] == "NotIn"
    assert set(by_name["values"]) == settings.webhook_excluded_namespaces


# --- overlays' own objects ------------------------------------------------------------------


def test_cert_manager_objects(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    docs = rendered[("cert-manager",)]
    crds = [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS]
    assert {(d["kind"], d["metadata"]["name"]) for d in crds} == {
        ("Issuer", "vsphere-kale-selfsigned"),
        ("Certificate", "vsphere-kale-ca"),
        ("Issuer", "vsphere-kale-ca"),
        ("Certificate", NAME),
    }
    issuers = {d["metadata"]["name"]: d["spec"] for d in crds if d["kind"] == "Issuer"}
    assert issuers["vsphere-kale-selfsigned"] == {"selfSigned": {}}
    ca_cert = find(docs, "Certificate", "vsphere-kale-ca")["spec"]
    assert ca_cert["isCA"] is True
    assert ca_cert["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "Issuer",
        "name": "vsphere-kale-selfsigned",
    }
    assert issuers["vsphere-kale-ca"] == {"ca": {"secretName": ca_cert["secretName"]}}
    serving = find(docs, "Certificate", NAME)["spec"]
    assert serving["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "Issuer",
        "name": "vsphere-kale-ca",
    }
    # The Secret the pods mount, for the names the certs code puts in a self-managed certificate.
    assert serving["secretName"] == "vsphere-kale-tls"
    assert serving["dnsNames"] == certs.service_dns_names(NAME, NAMESPACE)
    assert "server auth" in serving["usages"]
    # Renewed 30 days ahead like the installer, and long before the CA itself expires.
    assert serving["renewBefore"] == "720h"
    assert int(ca_cert["duration"].rstrip("h")) > 10 * int(serving["duration"].rstrip("h"))


def test_psp_admits_exactly_our_pod(rendered: dict[tuple[str, ...], list[Doc]]) -> None:
    docs = rendered[("psp",)]
    psp = find(docs, "PodSecurityPolicy", "vsphere-kale-restricted")
    spec = psp["spec"]
    pod = find(docs, "Deployment", NAME)["spec"]["template"]["spec"]
    container = deployment_container(docs)
    # Restrictive...
    assert spec["privileged"] is False and spec["allowPrivilegeEscalation"] is False
    assert spec["requiredDropCapabilities"] == ["ALL"] and "allowedCapabilities" not in spec
    assert spec["runAsUser"] == {"rule": "MustRunAsNonRoot"}
    assert spec["readOnlyRootFilesystem"] is True
    assert not (spec["hostNetwork"] or spec["hostPID"] or spec["hostIPC"])
    assert set(spec["volumes"]) == {"configMap", "secret", "emptyDir", "projected", "downwardAPI"}
    # ...yet admits the Deployment's pod: every volume type, the ids, and the seccomp profile.
    kinds = {next(k for k in v if k != "name") for v in pod["volumes"]}
    assert kinds <= set(spec["volumes"])
    for strategy, value in (("runAsGroup", 10001), ("fsGroup", 10001)):
        ranges = spec[strategy]["ranges"]
        assert any(r["min"] <= value <= r["max"] for r in ranges), strategy
    allowed = psp["metadata"]["annotations"][
        "seccomp.security.alpha.kubernetes.io/allowedProfileNames"
    ]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert "runtime/default" in allowed.split(",")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_psp_use_is_granted_on_that_psp_only_in_our_namespace(
    rendered: dict[tuple[str, ...], list[Doc]],
) -> None:
    docs = rendered[("psp",)]
    role = find(docs, "ClusterRole", "psp:vsphere-kale-restricted")
    assert rules_table(role) == [
        (("policy",), ("podsecuritypolicies",), ("use",), ("vsphere-kale-restricted",))
    ]
    binding = find(docs, "RoleBinding", "psp:vsphere-kale-restricted")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # The base grants no PSP `use` at all.
    for doc in roles(rendered[()]):
        assert all("use" not in rule["verbs"] for rule in doc["rules"])


# --- optional NetworkPolicy component (issue 10, finding 6) -----------------------------------


def test_network_policy_component_admits_only_the_webhook_and_admin_ports(
    tmp_path: Path,
) -> None:
    docs = kustomize(compose(tmp_path / "np", ("network-policy",)))
    policy = find(docs, "NetworkPolicy", NAME)
    kubernetes_validate.validate(policy, "1.30.0", strict=True)
    deployment = find(docs, "Deployment", NAME)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    # It selects our server pods (and only through labels they carry),
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["metadata"]["namespace"] == NAMESPACE
    # and lets in exactly the container ports the Service targets, nothing else.
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    service = find(docs, "Service", NAME)
    by_name = {
        p["name"]: p["containerPort"] for c in pod_containers(docs).values() for p in c["ports"]
    }
    targets = [by_name[p["targetPort"]] for p in service["spec"]["ports"]]
    assert (
        ports
        == [{"protocol": "TCP", "port": port} for port in targets]
        == [
            {"protocol": "TCP", "port": 8443},
            {"protocol": "TCP", "port": 8444},
        ]
    )


def test_poddefault_example_mounts_an_audience_bound_token() -> None:
    from vsphere_kale.jupyter.admin_client import AUDIENCE_TOKEN_FILE
    from vsphere_kale.settings import AdminApiSettings

    doc = yaml.safe_load((DEPLOY / "examples" / "poddefault-admin-token.yaml").read_text())
    assert doc["kind"] == "PodDefault"
    (source,) = doc["spec"]["volumes"][0]["projected"]["sources"]
    # The audience the admin API asks TokenReview for, at the path the extension reads first.
    assert source["serviceAccountToken"]["audience"] == AdminApiSettings().audience
    mount = doc["spec"]["volumeMounts"][0]
    assert f"{mount['mountPath']}/{source['serviceAccountToken']['path']}" == AUDIENCE_TOKEN_FILE
