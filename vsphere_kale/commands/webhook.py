"""``vsphere-kale webhook``: the HTTPS admission webhook on its own (no reconciler).

SIGTERM (what the kubelet sends on pod deletion) stops accepting connections, lets
in-flight reviews finish, and exits 0, so a rolling update drops no admission request.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from vsphere_kale.errors import ConfigError
from vsphere_kale.settings import load_settings
from vsphere_kale.webhook.server import WebhookServer, configure_logging

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECONDS = 10.0
"""Longest wait for in-flight reviews on SIGTERM; the API server's default webhook timeout is
10 s, so a request still running after that has been given up by its caller anyway."""


async def run_until_signalled(server: WebhookServer, *, address: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError("--port", f"cannot listen on {address}:{port}: {exc.strerror}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("termination signal received; draining")
    await server.stop(drain_timeout=DRAIN_TIMEOUT_SECONDS)


@click.command("webhook")
@click.option(
    "--cert-file",
    required=True,
    help="PEM serving certificate (chain); reloaded when it changes on disk.",
)
@click.option("--key-file", required=True, help="PEM private key of the serving certificate.")
@click.option("--port", type=click.IntRange(0, 65535), default=8443, show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--client-ca-file",
    default=None,
    help="Require client certificates signed by this CA (e.g. the API server's).",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="Settings YAML (default: $VSPHERE_KALE_CONFIG).",
)
@click.option(
    "--rwx-storage-class",
    default=None,
    help="Class that ReadWriteMany claims are moved to (overrides storage.rwxStorageClass).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (ts, level, logger, message, fields).",
)
def webhook_command(
    cert_file: str,
    key_file: str,
    port: int,
    address: str,
    client_ca_file: str | None,
    config_path: str | None,
    rwx_storage_class: str | None,
    log_format: str,
) -> None:
    """Run the PVC storage-class admission webhook over HTTPS.

    Routes: POST /mutate/persistentvolumeclaims (and /pvc/mutate), GET /healthz, /readyz,
    /metrics.
    """
    settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
    if settings.storage.rwx_storage_class is None:
        raise ConfigError(
            "storage.rwxStorageClass",
            "required for the webhook; set it in --config or pass --rwx-storage-class",
        )
    # Load the certificate first: a bad file is a one-line error before any logging setup.
    server = WebhookServer(
        settings,
        cert_file=cert_file,
        key_file=key_file,
        address=address,
        port=port,
        client_ca_file=client_ca_file,
    )
    # -vv on the main command asks for DEBUG; otherwise INFO, so rewrites are logged.
    level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
    configure_logging(log_format, level=level)
    asyncio.run(run_until_signalled(server, address=address, port=port))
