"""``vsphere-kale doctor``: check an installation, one line per check with a fix."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.console import Console
from rich.table import Table

from vsphere_kale.install.doctor import Check, decide_exit_code, fetch_facts, run_checks
from vsphere_kale.kube import Kube
from vsphere_kale.settings import load_settings

MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def print_table(checks: list[Check], *, header: str) -> None:
    probe = Console()
    # Piped into a file or CI log: wide enough that fixes stay on one line.
    console = Console(width=probe.width if probe.is_terminal else 160)
    table = Table(title=header, title_justify="left", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Result")
    table.add_column("Fix")
    for check in checks:
        mark, colour = MARKS[check.status]
        table.add_row(f"[{colour}]{mark}[/]", check.name, check.message, check.hint)
    console.print(table)


@click.command("doctor")
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
@click.option(
    "--namespace", default="vsphere-kale", show_default=True, help="Namespace installed into."
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="Settings YAML to assume when the installed ConfigMap cannot be read.",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def doctor_command(
    kubeconfig: str | None, namespace: str, config_path: str | None, output: str
) -> None:
    """Check the installation: RWX class, webhook + caBundle + endpoints, served certificate,
    pod security of managed namespaces, stuck RWX claims, the service account's RBAC.

    Exit code 1 when any check fails.
    """
    fallback = load_settings(config_path, environ={}, namespace=namespace)
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        facts = fetch_facts(kube, namespace=namespace, fallback=fallback)
    finally:
        kube.close()
    checks = run_checks(facts, now=dt.datetime.now(dt.timezone.utc))
    code = decide_exit_code(checks)
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "ok": code == 0,
                    "namespace": namespace,
                    "settingsFrom": facts.settings_source,
                    "checks": [c.to_json() for c in checks],
                },
                indent=2,
            )
        )
    else:
        print_table(
            checks,
            header=f"vsphere-kale doctor: namespace {namespace} (settings from "
            f"{facts.settings_source})",
        )
    sys.exit(code)
