"""The ``vsphere-kale`` command.

Each subcommand lives next to the code it drives (``vsphere_kale/commands/*.py``) and is
registered here. Errors from our tree become one sentence on stderr and a non-zero exit code;
a traceback is a bug.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from vsphere_kale import __version__
from vsphere_kale.errors import ConfigError, VsphereKaleError

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Group(click.Group):
    """Loads subcommands lazily and turns our errors into a sentence and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: configuration: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except VsphereKaleError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="vsphere-kale")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Kubeflow and Kale on VMware vSphere with Tanzu: RWX storage webhook, pod-security
    reconciler, health in Jupyter."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- subcommands: name -> "module:attribute", each owned by its module ---
# Imported on first use: most subcommands pull in the kubernetes client (seconds to import),
# which the offline ones (review, certs) must not pay for.
COMMANDS: dict[str, str] = {
    "review": "vsphere_kale.commands.review:review",
    "certs": "vsphere_kale.commands.certs:certs_command",
    "webhook": "vsphere_kale.commands.webhook:webhook_command",
    "serve": "vsphere_kale.commands.serve:serve_command",
    "reconcile": "vsphere_kale.commands.reconcile:reconcile_command",
    "recreate-pvc": "vsphere_kale.commands.recreate_pvc:recreate_pvc_command",
    "install": "vsphere_kale.commands.install:install_command",
    "uninstall": "vsphere_kale.commands.install:uninstall_command",
    "doctor": "vsphere_kale.commands.doctor:doctor_command",
    "sandbox": "vsphere_kale.commands.sandbox:sandbox_group",
    "check-notebook": "vsphere_kale.commands.check_notebook:check_notebook_command",
}
# --- end of subcommands ---

if __name__ == "__main__":
    main()
