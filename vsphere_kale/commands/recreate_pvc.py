"""``vsphere-kale recreate-pvc NAME -n NAMESPACE [--yes]``: move a stuck claim to the RWX class.

A ReadWriteMany claim created on a block-only class (or on a class that does not exist)
stays Pending forever, and its class cannot be changed in place. This deletes it and
creates it again with the same name, labels, annotations, ownerReferences, size and modes
on ``storage.rwxStorageClass``, recording the original class in
``vsphere-kale.io/original-storage-class``. It refuses (exit 1, one sentence) when the claim
is Bound, comes from a data source, or is mounted by a running pod. Without ``--yes`` it
shows what it will do and asks first. It needs get/delete/create on persistentvolumeclaims,
list on pods and storageclasses, create on events in the namespace.

The RWX class comes from ``--rwx-storage-class`` or ``--config`` (or
``$VSPHERE_KALE_CONFIG``); with neither, from the installation itself: the settings
``vsphere-kale install`` wrote into its ConfigMap (``--install-namespace``, default
``vsphere-kale``), read as ``install`` and ``doctor`` read them, so the claim lands on the
class the webhook uses. That read needs get on that ConfigMap.
"""

from __future__ import annotations

import json
import os

import click
import yaml

from vsphere_kale.errors import ConfigError, KubeForbidden
from vsphere_kale.install import render
from vsphere_kale.install.installer import fetch_installed_settings
from vsphere_kale.kube import Kube
from vsphere_kale.policy.recreate import RecreateRefusal
from vsphere_kale.reconcile.recreate import RecreateRefused, apply_recreate, fetch_recreate_plan
from vsphere_kale.settings import CONFIG_ENV, Settings, load_settings

RWX_KEY = "storage.rwxStorageClass"


def _one_line(exc: BaseException) -> str:
    """A YAML parser error spans lines (context, the source, a caret): its problem and
    position; any other error, its text on one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def fetch_recreate_settings(
    kube: Kube,
    config_path: str | None,
    *,
    rwx_storage_class: str | None,
    install_namespace: str,
) -> Settings:
    """The settings to recreate with: the flag or file when given, else the installed ones.

    Raises :class:`ConfigError` with what to do when the installed settings are missing,
    unreadable, invalid or name no RWX class.
    """
    if rwx_storage_class or config_path or os.environ.get(CONFIG_ENV):
        settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
        if not settings.storage.rwx_storage_class:
            raise ConfigError(RWX_KEY, "not set in the settings file: pass --rwx-storage-class")
        return settings
    where = f"configmap {install_namespace}/{render.CONFIG_MAP}"
    fix = "pass --rwx-storage-class CLASS (or --config FILE)"
    try:
        installed = fetch_installed_settings(kube, install_namespace)
    except KubeForbidden as exc:
        raise ConfigError(
            "--rwx-storage-class",
            f"not given, and reading the installed settings ({where}) is forbidden: {fix}",
        ) from exc
    except ConfigError as exc:
        detail = _one_line(exc.__cause__ or exc)
        raise ConfigError(
            where,
            f"the installed {render.CONFIG_KEY} is invalid ({detail}): {fix}, or repair the "
            "installation with `vsphere-kale install`",
        ) from exc
    if installed is None:
        raise ConfigError(
            "--rwx-storage-class",
            f"not given, and there are no installed settings ({where} not found): {fix}, "
            "or --install-namespace NS where vsphere-kale is installed",
        )
    if not installed.storage.rwx_storage_class:
        raise ConfigError(RWX_KEY, f"not set in the installed settings ({where}): {fix}")
    return installed


@click.command("recreate-pvc")
@click.argument("name")
@click.option("--namespace", "-n", "namespace", required=True, metavar="NS", help="Namespace.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--rwx-storage-class", metavar="CLASS", help="Overrides storage.rwxStorageClass.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Settings YAML.")
@click.option(
    "--install-namespace",
    default=render.BASE_NAMESPACE,
    show_default=True,
    metavar="NS",
    help="Where vsphere-kale is installed: its settings are read from there when neither "
    "--rwx-storage-class nor --config is given.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
def recreate_pvc_command(
    name: str,
    namespace: str,
    yes: bool,
    rwx_storage_class: str | None,
    kubeconfig: str | None,
    config_path: str | None,
    install_namespace: str,
    output: str,
) -> None:
    """Delete a stuck ReadWriteMany claim and create it again on the RWX storage class.

    Exit code 0 when recreated, 1 when refused or failed (the reason is printed), 2 for
    bad usage or configuration.
    """
    api = Kube.from_kubeconfig(kubeconfig)
    try:
        settings = fetch_recreate_settings(
            api,
            config_path,
            rwx_storage_class=rwx_storage_class,
            install_namespace=install_namespace,
        )
        _, plan = fetch_recreate_plan(api, namespace, name, settings=settings)
        if isinstance(plan, RecreateRefusal):
            raise RecreateRefused(plan)
        if not yes:
            was = plan.original_class or "no class"
            click.echo(
                f"claim {namespace}/{name} ({', '.join(plan.claim['spec']['accessModes'])}, "
                f"on {was}) will be deleted and created again on {plan.target_class}."
            )
            click.confirm("Recreate it?", abort=True)
        result = apply_recreate(api, namespace, name, settings=settings)
    finally:
        api.close()
    if output == "json":
        click.echo(json.dumps({"kind": "RecreateResult", **result.to_json()}, indent=2))
    else:
        click.echo(result.message)
