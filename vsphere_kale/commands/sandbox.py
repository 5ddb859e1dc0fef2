"""``vsphere-kale sandbox``: the local playground.

``vsphere-kale sandbox apiserver`` serves the in-memory Kubernetes API server
(:mod:`vsphere_kale.sandbox`) until Ctrl-C and writes a kubeconfig for kubectl and the
kubernetes client. The group leaves room for more subcommands (a whole local system on the
sandbox): add them with ``@sandbox_group.command(...)`` in this module or
``sandbox_group.add_command(...)`` elsewhere.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from vsphere_kale.errors import ConfigError
from vsphere_kale.kube import Kube, build_api_client
from vsphere_kale.playground.controllers import start_controllers
from vsphere_kale.playground.runmode import run_from_options, run_options
from vsphere_kale.playground.seed import apply_seed_through_api
from vsphere_kale.sandbox.kubeconfig import context_name
from vsphere_kale.sandbox.resources import FLAVORS
from vsphere_kale.sandbox.server import SEEDS, build_sandbox
from vsphere_kale.sandbox.testing import RunningSandbox


@click.group("sandbox", invoke_without_command=True)
@run_options
@click.pass_context
def sandbox_group(ctx: click.Context, /, **options: Any) -> None:
    """A local, in-memory stand-in for a Kubeflow-on-TKG cluster (no pods run).

    Without a subcommand: the whole system (sandbox API server, webhook, admin API,
    reconciler, JupyterLab with the health notebook) until Ctrl-C."""
    if ctx.invoked_subcommand is None:
        run_from_options(**options)


@sandbox_group.command("apiserver")
@click.option(
    "--control-plane",
    type=click.Choice(["embedded", "real"]),
    default="embedded",
    show_default=True,
    help="embedded: the in-memory sandbox (pip only); real: upstream kube-apiserver + etcd "
    "(tools/control-plane/build or $KUBEBUILDER_ASSETS).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=6443,
    show_default=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--flavor",
    type=click.Choice(FLAVORS),
    default="psa",
    show_default=True,
    help="psp: a TKG 1.24 cluster with PodSecurityPolicy; psa: Kubernetes >= 1.25.",
)
@click.option(
    "--seed",
    type=click.Choice(SEEDS),
    default=None,
    help="Initial objects (default: kubeflow-demo embedded, empty on the real control plane).",
)
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, writable=True),
    default="sandbox.kubeconfig",
    show_default=True,
    help="Where to write the kubeconfig (admin context current, one context per seeded user).",
)
@click.option(
    "--tls/--no-tls",
    default=True,
    show_default=True,
    help="Serve HTTPS with a generated CA (written into the kubeconfig). kubectl "
    "sends no bearer token over plain HTTP, so with --no-tls it is anonymous.",
)
@click.option(
    "--no-kubeflow",
    is_flag=True,
    help="Do not run the Kubeflow profile controller and storage provisioners.",
)
@click.option(
    "--no-authz", is_flag=True, help="Switch RBAC off: every authenticated request is allowed."
)
def apiserver_command(
    control_plane: str,
    port: int,
    address: str,
    flavor: str,
    seed: str | None,
    kubeconfig_out: str,
    tls: bool,
    no_kubeflow: bool,
    no_authz: bool,
) -> None:
    """Serve the sandbox Kubernetes API server until Ctrl-C."""
    if control_plane == "real":
        _serve_real(
            port=port,
            address=address,
            flavor=flavor,
            seed=seed,
            kubeconfig_out=Path(kubeconfig_out),
            tls=tls,
            no_authz=no_authz,
            no_kubeflow=no_kubeflow,
        )
        return
    seed = seed or "kubeflow-demo"
    try:
        setup = build_sandbox(flavor=flavor, seed=seed, authorization=not no_authz)
    except ValueError as exc:
        raise ConfigError("", str(exc)) from exc
    try:
        running = RunningSandbox(
            setup.sandbox,
            setup.tokens,
            tls=tls,
            address=address,
            port=port,
            kubeconfig_path=Path(kubeconfig_out),
        )
    except OSError as exc:
        raise ConfigError("--port", f"cannot listen on {address}:{port}: {exc.strerror}") from exc
    # The profile controller and the provisioners are API clients of the server.
    controllers = None if no_kubeflow else start_controllers(Kube(running.api_client()))
    stop = _stop_on_signal()
    kubeconfig = running.kubeconfig_path
    click.echo(f"sandbox API server ({flavor}, seed {seed}) serving on {running.url}")
    click.echo(
        f"kubeconfig: {kubeconfig} (contexts: {', '.join(context_name(u) for u in running.tokens)})"
    )
    click.echo(f"try: kubectl --kubeconfig {kubeconfig} get profiles,namespaces,pvc -A")
    click.echo("press Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        if controllers is not None:
            controllers.stop()
        running.stop()
    click.echo("sandbox stopped")


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def _serve_real(
    *,
    port: int,
    address: str,
    flavor: str,
    seed: str | None,
    kubeconfig_out: Path,
    tls: bool,
    no_authz: bool,
    no_kubeflow: bool,
) -> None:
    """``--control-plane real``: upstream etcd + kube-apiserver + kube-controller-manager,
    with the same seed (written through the API) and the same playground controllers."""
    # Imported here: the embedded path must not pay for (or depend on) the launcher.
    from vsphere_kale.controlplane import ControlPlaneError, start_control_plane
    from vsphere_kale.sandbox.kubeconfig import write_kubeconfig

    if flavor == "psp":
        raise ConfigError(
            "--flavor",
            "psp needs --control-plane embedded: PodSecurityPolicy was removed in Kubernetes "
            "1.25, and the real control plane is 1.36",
        )
    if address != "127.0.0.1":
        raise ConfigError("--address", "the real control plane listens on 127.0.0.1 only")
    if not tls:
        raise ConfigError("--no-tls", "the real control plane serves HTTPS only; drop --no-tls")
    if no_authz:
        raise ConfigError("--no-authz", "the real control plane always runs RBAC; drop --no-authz")
    seed = seed or "kubeflow-demo"
    click.echo("starting etcd, kube-apiserver and kube-controller-manager...", err=True)
    try:
        running = start_control_plane(flavor=flavor, port=port or None)
    except ControlPlaneError as exc:
        raise ConfigError("--control-plane", str(exc)) from exc
    controllers = None
    api_client = None
    try:
        stop = _stop_on_signal()
        # The same playground as the embedded server: the seed through the API (Profile CRD
        # first), then the profile controller and the provisioners as API clients.
        api_client = build_api_client(str(running.kubeconfig_path))
        if seed != "empty":
            apply_seed_through_api(Kube(api_client), seed, flavor=flavor)
        if not no_kubeflow:
            controllers = start_controllers(Kube(api_client))
        kubeconfig = write_kubeconfig(
            kubeconfig_out, running.url, running.tokens, ca_pem=running.ca_pem
        )
        click.echo(
            f"kube-apiserver {running.url} ({flavor}, seed {seed}: Pod Security restricted by "
            f"default; started in {running.start_seconds:.1f} s; logs in {running.workdir})"
        )
        click.echo(
            f"kubeconfig: {kubeconfig} "
            f"(contexts: {', '.join(context_name(u) for u in running.tokens)})"
        )
        click.echo(f"try: kubectl --kubeconfig {kubeconfig} get profiles,namespaces,pvc -A")
        click.echo("press Ctrl-C to stop")
        while not stop.wait(0.5):
            running.check()
    except ControlPlaneError as exc:
        raise ConfigError("--control-plane", str(exc)) from exc
    finally:
        if controllers is not None:
            controllers.stop()
        if api_client is not None:
            api_client.close()
        running.stop()
    click.echo("control plane stopped")
