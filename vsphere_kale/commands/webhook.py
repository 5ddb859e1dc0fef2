"""``vsphere-kale webhook``: the HTTPS admission webhook on its own (no reconciler).

SIGTERM (what the kubelet sends on pod deletion) stops accepting connections, lets
in-flight reviews finish, and exits 0, so a rolling update drops no admission request.

``--workers N`` forks N processes that each bind the port with SO_REUSEPORT, so the kernel
spreads new connections over them: one Python process is one core (the GIL), and a review is
pure CPU. The parent only forwards SIGTERM/SIGINT and waits; each worker drains on its own.
Each worker's ``/metrics`` covers that worker only (scrape the pod, not a worker, or run one
worker per pod). Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the port together (SO_REUSEPORT); about one per core.",
)
@click.option(
    "--reuse-port",
    is_flag=True,
    help="Bind with SO_REUSEPORT so other processes may serve the same port (implied by "
    "--workers > 1).",
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
    workers: int,
    reuse_port: bool,
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
    if workers > 1 and port == 0:
        raise click.UsageError("--workers needs a fixed --port (each worker binds it)")

    def build() -> WebhookServer:
        # Loads the certificate: a bad file is a one-line error before any logging setup.
        return WebhookServer(
            settings,
            cert_file=cert_file,
            key_file=key_file,
            address=address,
            port=port,
            client_ca_file=client_ca_file,
            reuse_port=reuse_port or workers > 1,
        )

    build()  # in the parent too: a bad certificate fails once, not once per worker
    # -vv on the main command asks for DEBUG; otherwise INFO, so rewrites are logged.
    level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
    configure_logging(log_format, level=level)
    if workers == 1:
        asyncio.run(run_until_signalled(build(), address=address, port=port))
        return
    sys.exit(run_workers(workers, lambda: run_until_signalled(build(), address=address, port=port)))


def run_workers(count: int, serve: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Fork ``count`` workers that each run ``asyncio.run(serve())``; forward SIGTERM/SIGINT
    to them and wait. Returns 0 when every worker exited 0, else 1.

    Forked before any event loop or thread exists in this process (fork copies only the
    calling thread). A worker that fails (e.g. the port is taken) is not restarted: the
    kubelet restarts the pod, which is what a failing replica should get.
    """
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                asyncio.run(serve())
            except ConfigError as exc:
                log.error("worker %d: %s", os.getpid(), exc)
                code = 2
            except BaseException:  # the worker's boundary: report, never return into click
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    log.info("started %d webhook workers: %s", count, ", ".join(map(str, children)))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    failed = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0
