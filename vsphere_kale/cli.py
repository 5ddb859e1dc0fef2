"""The ``vsphere-kale`` command.

Each subcommand lives next to the code it drives (``vsphere_kale/commands/*.py``) and is
registered here. Errors from our tree become one sentence on stderr and a non-zero exit code;
a traceback is a bug.
"""

from __future__ import annotations

import logging
import sys

import click

from vsphere_kale import __version__
from vsphere_kale.errors import ConfigError, VsphereKaleError

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Group(click.Group):
    """Turns our errors into a sentence and an exit code, for every subcommand."""

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


# --- subcommands: one import + add_command per line, each owned by its module ---
from vsphere_kale.commands.certs import certs_command  # noqa: E402
from vsphere_kale.commands.doctor import doctor_command  # noqa: E402
from vsphere_kale.commands.install import install_command, uninstall_command  # noqa: E402
from vsphere_kale.commands.reconcile import reconcile_command  # noqa: E402
from vsphere_kale.commands.review import review  # noqa: E402
from vsphere_kale.commands.sandbox import sandbox_group  # noqa: E402
from vsphere_kale.commands.serve import serve_command  # noqa: E402
from vsphere_kale.commands.webhook import webhook_command  # noqa: E402

main.add_command(review)
main.add_command(reconcile_command)
main.add_command(serve_command)
main.add_command(sandbox_group)
main.add_command(certs_command)
main.add_command(webhook_command)
main.add_command(install_command)
main.add_command(uninstall_command)
main.add_command(doctor_command)
# --- end of subcommands ---

if __name__ == "__main__":
    main()
