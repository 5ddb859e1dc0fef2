"""``vsphere-kale certs``: a CA and a serving certificate for the webhook's Service.

Replaces the earlier tool's cfssl + Go + CSR-API install steps with one command that needs
nothing but this package.
"""

from __future__ import annotations

import re

import click

from vsphere_kale.install import certs

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")  # \Z: no trailing newline


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Service and namespace names are RFC 1123 labels; anything else cannot be a name the
    # API server would ever dial.
    if not _DNS_LABEL.match(value):
        raise click.BadParameter(f"{value!r} is not a valid name (lower-case RFC 1123 label)")
    return value


@click.command("certs")
@click.option("--service", required=True, callback=_check_name, help="The webhook's Service name.")
@click.option("--namespace", required=True, callback=_check_name, help="The Service's namespace.")
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, writable=True),
    help="Directory for ca.crt, ca.key, tls.crt, tls.key (created if missing).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1, max=3650),
    default=365,
    show_default=True,
    help="Lifetime of the CA and the serving certificate.",
)
@click.option(
    "--extra-san",
    "extra_sans",
    multiple=True,
    metavar="NAME|IP",
    help="Another DNS name or IP address for the serving certificate (repeatable).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def certs_command(
    service: str,
    namespace: str,
    out_dir: str,
    days: int,
    extra_sans: tuple[str, ...],
    force: bool,
) -> None:
    """Create a CA and a serving certificate for SERVICE.NAMESPACE.svc.

    The serving certificate is valid for NAME, NAME.NS, NAME.NS.svc and
    NAME.NS.svc.cluster.local plus every --extra-san. Keys are written with mode 0600.
    Put ca.crt (base64) in the webhook configuration's caBundle and tls.crt/tls.key in a
    kubernetes.io/tls Secret.
    """
    bundle = certs.build_cert_bundle(service, namespace, extra_sans=extra_sans, days=days)
    written = certs.write_cert_files(out_dir, bundle, force=force)
    dns_names, ips = certs.split_sans(extra_sans)
    sans = certs.service_dns_names(service, namespace)
    sans += [name for name in dns_names if name not in sans]
    sans += [str(ip) for ip in ips]
    expiry = certs.not_after(bundle.tls_cert).strftime("%Y-%m-%d %H:%M UTC")
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"serving certificate for {', '.join(sans)}; valid until {expiry}")
