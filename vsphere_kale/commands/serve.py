"""``vsphere-kale serve``: the in-cluster process.

One process, two halves that share the API client and the ``/metrics`` registry:

- the HTTPS server of :mod:`vsphere_kale.webhook.server` (``/healthz``, ``/readyz``,
  ``/metrics``, and the PVC webhook unless ``--no-webhook``) plus the admin API of
  :mod:`vsphere_kale.health.adminapi`, on tornado's event loop in the main thread;
- the leader-elected pod-security :class:`~vsphere_kale.reconcile.reconciler.Reconciler`, on its own
  threads (the client's informers and leader election are thread-based), and, on the same
  leader, the serving certificate's :class:`~vsphere_kale.install.rotator.CertificateRotator`
  (unless ``--no-cert-rotation``, e.g. with cert-manager).

The installed Deployment runs ``serve --no-webhook`` and, in a second container,
``vsphere-kale webhook``: admission then has its own process, CPU and memory, untouched by
anything the admin API does (a flood of TokenReviews included). Without ``--no-webhook`` one
process serves both, which is enough on a laptop.

``/readyz`` answers 200 once the certificate is loaded (the server refuses to start without
it) and the informers have synced. SIGTERM marks the server not ready, drains in-flight
requests and, at the same time, stops the reconciler, which releases the Lease so another
replica takes over at once; then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vsphere_kale.errors import ConfigError
from vsphere_kale.install import certs
from vsphere_kale.install.rotator import CertificateRotator
from vsphere_kale.kube import Kube
from vsphere_kale.reconcile.leader import default_identity
from vsphere_kale.reconcile.reconciler import Reconciler
from vsphere_kale.settings import Settings, load_settings
from vsphere_kale.webhook.server import WebhookServer, configure_logging

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECONDS = 10.0
"""Longest wait for in-flight requests on SIGTERM (the API server's default webhook timeout)."""
RECONCILER_STOP_SECONDS = 10.0


def _admin_routes(kube: Kube, settings: Settings, reconciler: Reconciler) -> list[Any]:
    from vsphere_kale.health.adminapi import build_admin_routes

    return list(build_admin_routes(kube=kube, settings=settings, reconciler=reconciler))


def _synced_check(reconciler: Reconciler) -> Callable[[], str | None]:
    def informers_synced() -> str | None:
        if reconciler.has_synced():
            return None
        waiting = ", ".join(reconciler.unsynced())
        return f"the pod-security reconciler's informers have not synced yet ({waiting})"

    return informers_synced


async def _run(
    server: WebhookServer,
    reconciler: Reconciler,
    *,
    rotator: CertificateRotator | None,
    address: str,
    port: int,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Discovery and the first API calls block: keep them off the event loop.
    await loop.run_in_executor(None, reconciler.start)
    try:
        await server.start()
    except OSError as exc:
        await loop.run_in_executor(None, reconciler.stop)
        raise ConfigError("--port", f"cannot listen on {address}:{port}: {exc.strerror}") from exc
    if rotator is not None:
        rotator.start()  # acts only while this replica holds the leader Lease
    log.info(
        "serving; pod-security mode %s, leader election as %s", reconciler.mode, reconciler.identity
    )
    await stop.wait()
    log.info("termination signal received; draining and releasing the leader lease")
    if rotator is not None:
        await loop.run_in_executor(None, lambda: rotator.stop(timeout=5.0))
    await asyncio.gather(
        server.stop(drain_timeout=DRAIN_TIMEOUT_SECONDS),
        loop.run_in_executor(None, lambda: reconciler.stop(timeout=RECONCILER_STOP_SECONDS)),
    )
    log.info("stopped")


@click.command("serve")
@click.option("--config", "config_path", default=None, help="Settings YAML ($VSPHERE_KALE_CONFIG).")
@click.option(
    "--kubeconfig",
    default=None,
    help="Kubeconfig file (default: in-cluster service account, else $KUBECONFIG).",
)
@click.option("--cert-file", default=None, help="PEM serving certificate; reloaded on change.")
@click.option("--key-file", default=None, help="PEM private key of the serving certificate.")
@click.option("--port", type=click.IntRange(0, 65535), default=8443, show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--client-ca-file", default=None, help="Require client certificates from this CA.")
@click.option(
    "--rwx-storage-class",
    default=None,
    help="Class that ReadWriteMany claims are moved to (overrides storage.rwxStorageClass).",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--no-cert-rotation",
    is_flag=True,
    help="Do not rotate the self-managed certificate (Secret vsphere-kale-tls and the webhook's "
    "caBundle); use with cert-manager. The files are still reloaded when they change.",
)
@click.option(
    "--cert-rotation-interval",
    type=click.FloatRange(0.5, 86400),
    default=3600.0,
    show_default=True,
    help="Seconds between the leader's certificate checks (renewals happen 30 days ahead).",
)
@click.option(
    "--identity",
    default=None,
    help="Leader-election identity (default: $POD_NAME, else hostname plus a random suffix).",
)
@click.option(
    "--lease-duration",
    type=click.IntRange(1, 3600),
    default=15,
    show_default=True,
    help="Seconds a replica may be silent before another takes the leader Lease.",
)
@click.option(
    "--no-webhook",
    is_flag=True,
    help="Serve no webhook route: the Deployment's `webhook` container serves it (or, with "
    "install --admission policy, kube-apiserver rewrites claims itself); the reconciler, admin "
    "API, certificate rotation and probes stay.",
)
@click.option("--renew-deadline", type=float, default=10.0, show_default=True)
@click.option("--retry-period", type=float, default=2.0, show_default=True)
def serve_command(
    config_path: str | None,
    kubeconfig: str | None,
    cert_file: str | None,
    key_file: str | None,
    port: int,
    address: str,
    client_ca_file: str | None,
    rwx_storage_class: str | None,
    log_format: str,
    no_cert_rotation: bool,
    cert_rotation_interval: float,
    identity: str | None,
    lease_duration: int,
    no_webhook: bool,
    renew_deadline: float,
    retry_period: float,
) -> None:
    """Run the webhook, admin API and leader-elected pod-security reconciler.

    Without --cert-file/--key-file a throwaway self-signed certificate is made: enough to run
    the reconciler and the admin API locally, but the API server cannot call a webhook whose
    CA it was not given.
    """
    if (cert_file is None) != (key_file is None):
        raise click.UsageError("give both --cert-file and --key-file, or neither")
    if not 0 < retry_period < renew_deadline < lease_duration:
        raise click.UsageError("need 0 < --retry-period < --renew-deadline < --lease-duration")
    settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
    if settings.storage.rwx_storage_class is None and not no_webhook:
        raise ConfigError(
            "storage.rwxStorageClass",
            "required for the webhook; set it in --config or pass --rwx-storage-class",
        )
    # The CLI layer is the one place that reads the environment for the identity.
    identity = identity or default_identity(os.environ.get("POD_NAME"))
    scratch: Path | None = None
    if cert_file is None or key_file is None:
        scratch = Path(tempfile.mkdtemp(prefix="vsphere-kale-serve-"))
        bundle = certs.build_cert_bundle("vsphere-kale", settings.namespace, days=30)
        certs.write_cert_files(scratch, bundle, force=True)
        cert_file, key_file = str(scratch / "tls.crt"), str(scratch / "tls.key")
    try:
        kube = Kube.from_kubeconfig(kubeconfig)
        reconciler = Reconciler(
            kube,
            settings,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )
        server = WebhookServer(
            settings,
            cert_file=cert_file,
            key_file=key_file,
            address=address,
            port=port,
            client_ca_file=client_ca_file,
            extra_handlers=_admin_routes(kube, settings, reconciler),
            ready_checks=[_synced_check(reconciler)],
            mutate=not no_webhook,
        )
        reconciler.metrics.register_into(server.registry)
        rotator = None
        # install --admission policy renders --no-cert-rotation: the rotation's steps keep the
        # webhook's caBundle and the Secret in lock-step, and there is no webhook configuration
        # then; install renews a certificate that expires within 30 days and doctor warns before.
        if not no_cert_rotation and scratch is None:
            # The leader keeps the serving certificate and the webhook's caBundle current
            # (vsphere_kale.install.rotation); every replica reloads the mounted files.
            rotator = CertificateRotator(
                kube,
                namespace=settings.namespace,
                is_leader=reconciler.is_leader,
                interval=cert_rotation_interval,
                leader_poll=min(5.0, cert_rotation_interval),
            )
            reconciler.add_leader_callback(rotator.kick)
        level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
        configure_logging(log_format, level=level)
        # The client's leader election logs every renewal at INFO.
        logging.getLogger("leaderelection").setLevel(max(level, logging.WARNING))
        if no_webhook:
            log.info("no webhook route here: the webhook container or kube-apiserver admits claims")
        if scratch is not None:
            log.warning(
                "no --cert-file/--key-file: serving a throwaway self-signed certificate; "
                "the API server cannot call this webhook"
            )
        try:
            asyncio.run(_run(server, reconciler, rotator=rotator, address=address, port=port))
        finally:
            kube.close()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
