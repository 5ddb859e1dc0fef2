"""``vsphere-kale recreate-pvc NAME -n NAMESPACE [--yes]``: move a stuck claim to the RWX class.

A ReadWriteMany claim created on a block-only class (or on a class that does not exist)
stays Pending forever, and its class cannot be changed in place. This deletes it and
creates it again with the same name, labels, annotations, ownerReferences, size and modes
on ``storage.rwxStorageClass``, recording the original class in
``vsphere-kale.io/original-storage-class``. It refuses (exit 1, one sentence) when the claim
is Bound, comes from a data source, or is mounted by a running pod. Without ``--yes`` it
shows what it will do and asks first. It needs get/delete/create on persistentvolumeclaims,
list on pods and storageclasses, create on events in the namespace.
"""

from __future__ import annotations

import json

import click

from vsphere_kale.kube import Kube
from vsphere_kale.policy.recreate import RecreateRefusal
from vsphere_kale.reconcile.recreate import RecreateRefused, apply_recreate, fetch_recreate_plan
from vsphere_kale.settings import load_settings


@click.command("recreate-pvc")
@click.argument("name")
@click.option("--namespace", "-n", "namespace", required=True, metavar="NS", help="Namespace.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--rwx-storage-class", metavar="CLASS", help="Overrides storage.rwxStorageClass.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Settings YAML.")
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
    output: str,
) -> None:
    """Delete a stuck ReadWriteMany claim and create it again on the RWX storage class.

    Exit code 0 when recreated, 1 when refused or failed (the reason is printed), 2 for
    bad usage or configuration.
    """
    settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
    api = Kube.from_kubeconfig(kubeconfig)
    try:
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
