"""``vsphere-kale sandbox`` (the run mode): start everything, print the banner, wait for Ctrl-C.

Start-up checks come first: the ports given by flag (``--lab-port``, ``--api-port``) must be
free -- one sentence naming the flag and a non-zero exit otherwise, before anything starts.
The banner is printed only once JupyterLab answers with our token (or at once with
``--no-lab``).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from vsphere_kale.errors import ConfigError, VsphereKaleError
from vsphere_kale.playground.banner import build_banner
from vsphere_kale.playground.lab import (
    NOTEBOOK,
    check_port_free,
    lab_command,
    lab_environment,
    stop_lab,
    wait_for_lab,
    write_lab_settings,
)
from vsphere_kale.playground.realplane import PSP_ON_REAL
from vsphere_kale.playground.seed_kale import write_kale2_notebook
from vsphere_kale.playground.system import LocalSystem


def _start_lab(
    system: LocalSystem, *, workdir: Path, lab_port: int, open_browser: bool, timeout: float
) -> tuple[subprocess.Popen[bytes], str]:
    notebooks = workdir / "notebooks"
    notebooks.mkdir(exist_ok=True)
    target = notebooks / NOTEBOOK.name
    if not target.exists():  # keep the user's edits across runs
        shutil.copyfile(NOTEBOOK, target)
    write_kale2_notebook(notebooks)  # the seed's Kale 2 notebook (raw-data is RWO)
    token = secrets.token_hex(16)
    command = lab_command(
        system.jupyter_traits(),
        root_dir=notebooks,
        settings_dir=write_lab_settings(workdir / "lab-settings"),
        port=lab_port,
        open_browser=open_browser,
    )
    # Own session: a terminal's Ctrl-C reaches only us, and we stop JupyterLab with SIGTERM
    # (its SIGINT handler would stop to ask a y/n question).
    process = subprocess.Popen(
        command, start_new_session=True, env=lab_environment(token, os.environ)
    )
    base = f"http://127.0.0.1:{lab_port}/"
    try:
        wait_for_lab(
            process, f"{base}vsphere-kale/api/status", token=token, timeout=timeout, port=lab_port
        )
    except BaseException:
        stop_lab(process)
        raise
    return process, f"{base}lab/tree/{NOTEBOOK.name}?token={token}"


def run_sandbox(
    *,
    flavor: str,
    workdir: Path,
    lab: bool,
    lab_port: int,
    open_browser: bool,
    control_plane: str = "embedded",
    api_port: int = 0,
    lab_timeout: float = 120.0,
    echo: Callable[[str], None] = click.echo,
) -> None:
    """Start everything, print what to try, wait for Ctrl-C (or SIGTERM), stop everything."""
    if lab:
        if importlib.util.find_spec("jupyterlab") is None:
            raise VsphereKaleError(
                "JupyterLab is not installed: pip install 'vsphere-kale[lab]', or run with --no-lab"
            )
        check_port_free(lab_port, flag="--lab-port")
    check_port_free(api_port, flag="--api-port")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    process: subprocess.Popen[bytes] | None = None
    system = LocalSystem(workdir, flavor=flavor, control_plane=control_plane, api_port=api_port)
    try:
        server = "etcd, kube-apiserver" if control_plane == "real" else "the sandbox API server"
        echo(f"starting {server}, the install and serve in {workdir} ...")
        system.start()
        lab_url = None
        if lab:
            process, lab_url = _start_lab(
                system,
                workdir=workdir,
                lab_port=lab_port,
                open_browser=open_browser,
                timeout=lab_timeout,
            )
        echo(build_banner(system, lab_url=lab_url))
        while not stop.wait(0.5):
            if process is not None and process.poll() is not None:
                raise VsphereKaleError(
                    f"JupyterLab exited (code {process.returncode}); everything is stopped"
                )
    finally:
        if process is not None:
            stop_lab(process)
        system.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("sandbox stopped")


F = TypeVar("F", bound=Callable[..., Any])


def run_options(command: F) -> F:
    """The run mode's options, for the ``sandbox`` group (``vsphere-kale sandbox [OPTIONS]``)."""
    for option in reversed(
        [
            click.option(
                "--flavor",
                type=click.Choice(["psp", "psa"]),
                default="psp",
                show_default=True,
                help="psp: TKG up to 1.24 (PodSecurityPolicy); psa: Kubernetes >= 1.25.",
            ),
            click.option(
                "--workdir",
                type=click.Path(file_okay=False, path_type=Path),
                default=Path(".vsphere-kale-sandbox"),
                show_default=True,
                help="Where the kubeconfig, certificates, tokens and the notebook copy go.",
            ),
            click.option("--no-lab", is_flag=True, help="Headless: do not start JupyterLab."),
            click.option(
                "--lab-port",
                type=click.IntRange(1, 65535),
                default=8888,
                show_default=True,
                help="JupyterLab's port on 127.0.0.1.",
            ),
            click.option(
                "--api-port",
                type=click.IntRange(0, 65535),
                default=0,
                show_default=True,
                help="The API server's port on 127.0.0.1 (0: any free port).",
            ),
            click.option(
                "--no-browser", is_flag=True, help="Do not open a browser on the notebook."
            ),
            click.option(
                "--control-plane",
                type=click.Choice(["embedded", "real"]),
                default="embedded",
                show_default=True,
                help="embedded: the in-memory sandbox (no Go needed); real: kube-apiserver + "
                "etcd 1.36 built by tools/control-plane/build (psa flavor only).",
            ),
        ]
    ):
        command = option(command)
    return command


def run_from_options(
    *,
    flavor: str,
    workdir: Path,
    no_lab: bool,
    lab_port: int,
    no_browser: bool,
    api_port: int = 0,
    control_plane: str = "embedded",
) -> None:
    if control_plane == "real" and flavor == "psp":
        raise ConfigError("--flavor", PSP_ON_REAL)
    run_sandbox(
        control_plane=control_plane,
        flavor=flavor,
        workdir=workdir.resolve(),
        lab=not no_lab,
        lab_port=lab_port,
        api_port=api_port,
        open_browser=not no_browser,
    )
