"""``vsphere-kale check-notebook``: are the volumes a Kale 2 notebook mounts fit for its steps?

Reads the notebook's ``metadata.kubeflow_notebook.volumes``, fetches the claims it names (one
GET each: a user needs only ``get persistentvolumeclaims`` in the namespace), the
StorageClasses and, only for claims waiting for static binding, the PersistentVolumes (both
cluster-scoped: when the user may not list them the verdicts say so instead of guessing), and
prints one row per volume. The reads are the panel's Kale section's own
(:func:`vsphere_kale.health.kale_status.fetch_kale_inputs`). Exit 0 when every claim Kale will
mount is fit to be shared by its steps, 1 when not (or when the cluster cannot be asked), 2 on
bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vsphere_kale.health.kale_status import fetch_kale_inputs
from vsphere_kale.kube import Kube
from vsphere_kale.kube.namespace import default_namespace
from vsphere_kale.policy.kale import (
    KaleNotebook,
    NotebookError,
    VolumeCheck,
    build_kale_section,
    decide_fit,
    decide_notebook_volumes,
    parse_notebook,
)
from vsphere_kale.policy.kale_claims import build_storage_facts
from vsphere_kale.settings import load_settings

EXIT_FIT, EXIT_UNFIT, EXIT_BAD_INPUT = 0, 1, 2
MARKS = {
    "ok": ("✓", "green"),
    "info": ("✓", "green"),
    "warning": ("!", "yellow"),
    "error": ("✗", "red"),
}


class BadInput(click.ClickException):
    """Not a notebook, no Kale metadata, unreadable: one sentence, exit 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def read_notebook(path: str) -> tuple[Any, KaleNotebook]:
    """The decoded notebook and its Kale metadata, or :class:`BadInput`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadInput(f"{path} is a directory, not a notebook") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not a notebook: not a UTF-8 text file") from exc
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise BadInput(f"{path} is not a notebook: not valid JSON{where}") from exc
    try:
        return doc, parse_notebook(doc, source=path)
    except NotebookError as exc:
        raise BadInput(str(exc)) from exc


def _claim_cell(check: VolumeCheck) -> str:
    if check.phase is None:
        return "-"
    klass = {None: "(default)", "": '""'}.get(check.storage_class, check.storage_class)
    return f"{','.join(check.access_modes) or '-'}\n{klass}\n{check.phase}"


def print_table(checks: Sequence[VolumeCheck], *, header: str, fit: bool) -> None:
    """The table, then one ``Fix`` line per volume that has one (whole, never wrapped in a
    cell, so it can be copied)."""
    probe = Console()
    # Piped into a file or CI log: wide enough that sentences stay on one line.
    console = Console(width=probe.width if probe.is_terminal else 180)
    table = Table(title=Text(header), title_justify="left")
    for column in ("", "Volume", "Mount", "Claim", "Verdict", "Why"):
        table.add_column(column, no_wrap=column in ("", "Verdict"))
    for check in checks:
        mark, colour = MARKS[check.severity]
        table.add_row(
            f"[{colour}]{mark}[/]",
            Text(f"{check.volume.name or '-'} ({check.volume.type or '?'})"),
            Text(check.volume.mount_point or "-"),
            Text(_claim_cell(check)),
            check.verdict,
            Text(check.message),
        )
    console.print(table)
    fixes = [c for c in checks if c.hint and c.severity in ("warning", "error")]
    if fixes:
        console.print("Fix:")
        for c in fixes:
            console.print(Text(f"  {c.volume.name or c.volume.index}: {c.hint}"), soft_wrap=True)
    console.print(
        "[green]Every claim Kale mounts can be shared by all steps.[/]"
        if fit
        else "[red]Not every claim Kale mounts can be shared by all steps: see Fix.[/]"
    )


@click.command("check-notebook")
@click.argument("notebook")
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="Namespace of the claims (default: the kubeconfig context's, in a pod its own).",
)
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
@click.option("--context", default=None, help="Kubeconfig context (default: the current one).")
@click.option(
    "--rwx-storage-class",
    default=None,
    help="Class to suggest for RWX copies (overrides the config).",
)
@click.option(
    "--config", "config_path", default=None, help="Settings file (default $VSPHERE_KALE_CONFIG)."
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def check_notebook_command(
    notebook: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    rwx_storage_class: str | None,
    config_path: str | None,
    output: str,
) -> None:
    """Check that every volume a Kale 2 notebook mounts into its steps can be shared by them.

    Kale 2 mounts each ``pvc`` volume of the notebook on every step; steps may run on other
    nodes and in parallel, beside the notebook pod. Exit 0: every such claim is fit; 1: at
    least one is not (or the cluster could not be asked); 2: bad input.
    """
    doc, parsed = read_notebook(notebook)
    settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
    ns = namespace or default_namespace(kubeconfig, context=context)
    kube = Kube.from_kubeconfig(kubeconfig, context=context)
    try:
        inputs = fetch_kale_inputs(kube, parsed, namespace=ns)
    finally:
        kube.close()
    claims = list(inputs.claims)
    classes = None if inputs.classes is None else list(inputs.classes)
    pvs = None if inputs.pvs is None else list(inputs.pvs)
    facts = build_storage_facts(classes, pvs, settings.storage)
    checks = decide_notebook_volumes(parsed, claims, facts, namespace=ns)
    fit = decide_fit(checks)
    if output == "json":
        section = build_kale_section(
            doc, claims, classes, pvs, settings.storage, namespace=ns, source=notebook
        )
        click.echo(json.dumps({"notebook": notebook, **section}, indent=2))
    elif not checks:
        click.echo(f"{notebook}: no Kale volumes: the steps mount no claim, nothing to check.")
    else:
        unread = [
            w for w, v in (("StorageClasses", classes), ("PersistentVolumes", pvs)) if v is None
        ]
        note = f" (could not read {' or '.join(unread)})" if unread else ""
        print_table(checks, header=f"{notebook}: Kale volumes in namespace {ns}{note}", fit=fit)
    sys.exit(EXIT_FIT if fit else EXIT_UNFIT)
