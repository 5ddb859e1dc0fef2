"""``vsphere-kale reconcile``: one pass of the pod-security reconciler, from a laptop or CI.

The same plan/apply code as ``serve``'s leader-elected reconciler, without informers or a
Lease: it reads what it needs (one GET per question for ``--namespace``, one list per resource
type for ``--all``), prints per namespace what it did or would do and why, and exits non-zero
if anything failed. ``--dry-run`` sends no write at all (not even a server-side ``dryRun``),
so read access is enough to preview.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vsphere_kale.kube import Kube
from vsphere_kale.reconcile.applier import NamespaceResult
from vsphere_kale.reconcile.reconciler import reconcile_once
from vsphere_kale.settings import load_settings

_STYLE = {
    "created": "green",
    "repaired": "green",
    "labels-applied": "green",
    "ok": "",
    "skipped": "dim",
    "conflict": "yellow",
    "failed": "bold red",
    "would-create": "cyan",
    "would-repair": "cyan",
}


def _table(mode: str, results: list[NamespaceResult], *, dry_run: bool) -> Table:
    title = f"pod security ({mode} mode{', dry run: nothing changed' if dry_run else ''})"
    table = Table(title=title, title_justify="left")
    table.add_column("NAMESPACE", no_wrap=True)
    table.add_column("RESULT", no_wrap=True)
    table.add_column("ACTIONS")
    table.add_column("WHY")
    for r in results:
        style = _STYLE.get(r.outcome, "")
        outcome = f"[{style}]{r.outcome}[/]" if style else r.outcome
        table.add_row(r.namespace, outcome, "\n".join(r.actions) or "-", r.message)
    return table


@click.command("reconcile")
@click.option("--namespace", "-n", "namespace", metavar="NS", help="Reconcile this namespace.")
@click.option(
    "--all", "all_namespaces", is_flag=True, help="Every Profile's namespace and extraNamespaces."
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Settings YAML.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def reconcile_command(
    namespace: str | None,
    all_namespaces: bool,
    dry_run: bool,
    kubeconfig: str | None,
    config_path: str | None,
    output: str,
) -> None:
    """Make profile namespaces admit Kubeflow's pods: a RoleBinding to the PSP ClusterRole
    (psp mode) or pod-security.kubernetes.io labels (psa mode), once.

    Prints per namespace: created / repaired / labels-applied / ok / skipped / conflict /
    failed (or would-create / would-repair with --dry-run) and why. Exit code 1 when any
    namespace failed.
    """
    if bool(namespace) == all_namespaces:
        raise click.UsageError("give exactly one of --namespace NS or --all")
    settings = load_settings(config_path)
    kube = Kube.from_kubeconfig(kubeconfig)
    stderr = Console(stderr=True)
    try:
        if all_namespaces and output == "table" and stderr.is_terminal:
            with Progress(
                TextColumn("reconciling"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=stderr,
                transient=True,
            ) as progress:
                task = progress.add_task("reconcile", total=None)
                mode, results = reconcile_once(
                    kube,
                    settings,
                    dry_run=dry_run,
                    on_total=lambda n: progress.update(task, total=n),
                    on_result=lambda _: progress.advance(task),
                )
        else:
            mode, results = reconcile_once(
                kube,
                settings,
                namespaces=None if all_namespaces else [str(namespace)],
                dry_run=dry_run,
            )
    finally:
        kube.close()
    if output == "json":
        document = {
            "kind": "ReconcileResult",
            "mode": mode,
            "dryRun": dry_run,
            "results": [r.to_json() for r in results],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        console = Console(width=max(Console().width, 120), soft_wrap=False)
        if results:
            console.print(_table(mode, results, dry_run=dry_run))
        else:
            console.print(f"no profile namespaces found ({mode} mode)")
    failed = [r for r in results if r.failed]
    if failed:
        names = ", ".join(r.namespace for r in failed)
        click.echo(f"error: {len(failed)} namespace(s) failed: {names}", err=True)
        sys.exit(1)
