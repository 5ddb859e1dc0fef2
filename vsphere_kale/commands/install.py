"""``vsphere-kale install`` and ``vsphere-kale uninstall``."""

from __future__ import annotations

import logging

import click

from vsphere_kale.errors import ConfigError
from vsphere_kale.install import admission_policy, render
from vsphere_kale.install.installer import (
    InstallOptions,
    fetch_installed_settings,
    install,
    render_offline,
)
from vsphere_kale.install.uninstall import uninstall
from vsphere_kale.install.wait import wait_ready
from vsphere_kale.kube import Kube
from vsphere_kale.settings import Settings, load_settings, with_overrides

log = logging.getLogger(__name__)


def resolve_settings(
    *,
    config_path: str | None,
    rwx_storage_class: str | None,
    namespace: str | None,
    api: Kube | None,
) -> tuple[Settings, str]:
    """--config, else the installed ConfigMap (re-runs keep their settings), else the base's
    config.yaml; flags on top. Returns the settings and where they came from."""
    if config_path:
        settings = load_settings(config_path, environ={})
        source = config_path
    else:
        target = namespace or render.BASE_NAMESPACE
        live = fetch_installed_settings(api, target) if api is not None else None
        if live is not None:
            settings, source = live, f"configmap {target}/{render.CONFIG_MAP}"
        else:
            settings, source = render.base_settings(), "deploy/base/config.yaml"
    settings = with_overrides(settings, rwx_storage_class=rwx_storage_class, namespace=namespace)
    return settings, source


def fetch_policy_version(kube: Kube) -> str:
    """The MutatingAdmissionPolicy version this cluster serves (discovery), or a sentence."""
    version = kube.discovery().mutating_admission_policy_version
    if version is None:
        raise ConfigError(
            "--admission",
            "this cluster serves no MutatingAdmissionPolicy (GA in Kubernetes 1.36; on 1.34-1.35 "
            "enable the MutatingAdmissionPolicy feature gate and "
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true): use --admission webhook",
        )
    return version


@click.command("install")
@click.option("--rwx-storage-class", default=None, help="Class ReadWriteMany claims are moved to.")
@click.option("--namespace", default=None, help="Namespace to install into (default vsphere-kale).")
@click.option("--image", default=None, help="Container image, e.g. REGISTRY/vsphere-kale:0.1.0.")
@click.option(
    "--overlay",
    "overlays",
    multiple=True,
    type=click.Choice(render.COMPONENTS),
    help="Optional component; repeat to combine.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="Settings YAML (default: the installed ConfigMap's, else deploy/base/config.yaml).",
)
@click.option(
    "--webhook-url",
    default=None,
    metavar="https://127.0.0.1:PORT/mutate/persistentvolumeclaims",
    help="Call a webhook outside the cluster (`serve` on the API server's host, while "
    "debugging) instead of the Service; loopback addresses only.",
)
@click.option(
    "--admission",
    type=click.Choice(admission_policy.ADMISSION_MODES),
    default="webhook",
    show_default=True,
    help="How claims are rewritten: our webhook, or a MutatingAdmissionPolicy evaluated by "
    "kube-apiserver itself (Kubernetes >= 1.34; no webhook, TLS or pod on the path).",
)
@click.option(
    "--admission-policy-version",
    type=click.Choice(admission_policy.POLICY_VERSIONS),
    default=None,
    help="With --admission policy: v1 (Kubernetes >= 1.36) or v1beta1 (1.34-1.35). "
    "Default: from the cluster's discovery; v1 with -o yaml.",
)
@click.option(
    "--extra-san",
    "extra_sans",
    multiple=True,
    metavar="NAME|IP",
    help="Another name or address for the serving certificate (repeatable; kept on re-runs "
    "and renewals). The host of --webhook-url is added by itself.",
)
@click.option("--dry-run", is_flag=True, help="Server-side dry run: show what would change.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml"]),
    default=None,
    help="Print the manifests instead of applying (offline; no Secret, no caBundle).",
)
@click.option(
    "--with-certificates",
    is_flag=True,
    help="With -o yaml: also generate and print the TLS Secret (PRIVATE KEYS) and caBundle.",
)
@click.option("--wait", is_flag=True, help="Wait until the Deployment is available.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=180.0,
    show_default=True,
    help="Seconds --wait waits.",
)
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
def install_command(
    rwx_storage_class: str | None,
    namespace: str | None,
    image: str | None,
    overlays: tuple[str, ...],
    config_path: str | None,
    webhook_url: str | None,
    admission: str,
    admission_policy_version: str | None,
    extra_sans: tuple[str, ...],
    dry_run: bool,
    output: str | None,
    with_certificates: bool,
    wait: bool,
    timeout: float,
    kubeconfig: str | None,
) -> None:
    """Install (or update) vsphere-kale: render deploy/ with your settings and apply it.

    Idempotent: a second run prints `unchanged` for every object. Certificates are kept
    unless they expire within 30 days (then renewed; a new CA keeps the old one trusted
    until every replica has reloaded).
    """
    components = render.check_components(overlays)
    if webhook_url is not None:
        render.check_webhook_url(webhook_url)
        if admission == "policy":
            raise click.UsageError(
                "--webhook-url configures the webhook: drop it with --admission policy"
            )
    if admission_policy_version is not None and admission != "policy":
        raise click.UsageError("--admission-policy-version only goes with --admission policy")
    if with_certificates and output != "yaml":
        raise click.UsageError("--with-certificates only goes with -o yaml")
    if output == "yaml":
        if wait or dry_run:
            raise click.UsageError("-o yaml prints and applies nothing: drop --wait/--dry-run")
        settings, _ = resolve_settings(
            config_path=config_path,
            rwx_storage_class=rwx_storage_class,
            namespace=namespace,
            api=None,
        )
        options = InstallOptions(
            settings,
            components,
            image,
            webhook_url=webhook_url,
            extra_sans=extra_sans,
            admission=admission,
            policy_version=admission_policy_version or admission_policy.POLICY_VERSIONS[0],
        )
        objects = render_offline(
            options,
            rendered=render.fetch_rendered(components),
            with_certificates=with_certificates,
        )
        click.echo(render.dump_yaml(objects), nl=False)
        return
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        settings, source = resolve_settings(
            config_path=config_path,
            rwx_storage_class=rwx_storage_class,
            namespace=namespace,
            api=kube,
        )
        if settings.storage.rwx_storage_class is None:
            raise ConfigError(
                "storage.rwxStorageClass",
                "required; pass --rwx-storage-class (e.g. nfs-client) or set it in --config",
            )
        click.echo(
            f"# namespace {settings.namespace}, RWX class {settings.storage.rwx_storage_class}, "
            f"overlays: {', '.join(components) or 'none'}, admission {admission} "
            f"(settings from {source})",
            err=True,
        )
        policy_version = admission_policy_version or admission_policy.POLICY_VERSIONS[0]
        if admission == "policy" and admission_policy_version is None:
            # Before the first write: a cluster without MAP gets a sentence, not half an install.
            policy_version = fetch_policy_version(kube)
        options = InstallOptions(
            settings,
            components,
            image,
            dry_run=dry_run,
            webhook_url=webhook_url,
            extra_sans=extra_sans,
            admission=admission,
            policy_version=policy_version,
        )
        result = install(kube, options, rendered=render.fetch_rendered(components), echo=click.echo)
        if result.cert_plan is not None:
            click.echo(f"# certificates: {result.cert_plan.reason}", err=True)
        if wait and not dry_run:
            wait_ready(kube, settings.namespace, timeout=timeout, echo=click.echo)
            click.echo(f"deployment.apps/{render.NAME} available")
    finally:
        kube.close()


@click.command("uninstall")
@click.option("--namespace", default=None, help="Namespace installed into (default vsphere-kale).")
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
@click.option("--dry-run", is_flag=True, help="Server-side dry run: show what would be deleted.")
@click.option(
    "--purge",
    is_flag=True,
    help="Also delete the per-namespace PSP RoleBindings the reconciler created "
    "(pods in those namespaces can then no longer start on PSP clusters).",
)
def uninstall_command(
    namespace: str | None, kubeconfig: str | None, dry_run: bool, purge: bool
) -> None:
    """Remove what `vsphere-kale install` created, and only that.

    Deletes objects that carry app.kubernetes.io/managed-by=vsphere-kale and have a name
    install renders; the namespace only if install created it. The reconciler's RoleBindings
    in profile namespaces stay unless --purge.
    """
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        settings, _ = resolve_settings(
            config_path=None, rwx_storage_class=None, namespace=namespace, api=kube
        )
        rendered = render.fetch_rendered(render.COMPONENTS)
        changes = uninstall(
            kube,
            settings=settings,
            rendered=rendered,
            dry_run=dry_run,
            purge=purge,
            echo=click.echo,
        )
        if not changes:
            click.echo(f"nothing of vsphere-kale found in namespace {settings.namespace}")
    finally:
        kube.close()
