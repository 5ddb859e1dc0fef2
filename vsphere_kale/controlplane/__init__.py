"""Launcher for a real Kubernetes control plane: etcd + kube-apiserver (+ kube-controller-manager).

    with start_control_plane() as cp:
        subprocess.run(["kubectl", "--kubeconfig", str(cp.kubeconfig_path), "get", "ns"])

The binaries are upstream's, built by ``tools/control-plane/build`` into
``${XDG_CACHE_HOME:-~/.cache}/vsphere-kale/control-plane/<version>/``; as with
controller-runtime's envtest, ``KUBEBUILDER_ASSETS`` (e.g. from ``setup-envtest use 1.36``)
wins when set. Everything listens on free ports of 127.0.0.1 and lives in one temporary
directory, so several control planes run side by side.

What is configured, and why (docs/control-plane.md has the whole table):

- RBAC authorization only (no Node authorizer: no kubelets run), static bearer tokens for the
  same users and kubeconfig contexts as the sandbox's ``kubeflow-demo`` seed, so a kubeconfig
  context means the same person on both control planes;
- service-account signing keys from ``cryptography`` (TokenRequest and TokenReview work, with
  the audience ``vsphere-kale`` the admin API asks for);
- Pod Security admission with the cluster defaults of a TKR >= 1.26 (``restricted`` enforced,
  audited and warned; ``kube-system`` exempt) in the ``psa`` flavor;
- the default admission plugins (DefaultStorageClass, MutatingAdmissionWebhook,
  MutatingAdmissionPolicy...);
- kube-controller-manager with just the controllers our code depends on: namespace deletion,
  default ServiceAccounts, the ``kube-root-ca.crt`` ConfigMap and garbage collection.

This module imports no ``kubernetes``: processes, files and one HTTP client from the stdlib.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from vsphere_kale.controlplane.config import (
    ADMIN_USER,
    API_AUDIENCES,
    AUDIT_POLICY,
    CONTROLLER_MANAGER_USER,
    CONTROLLERS,
    ETCD_VERSION,
    FLAVORS,
    KUBE_VERSION,
    SERVICE_ACCOUNT_ISSUER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Binaries,
    ControlPlaneError,
    build_admission_config,
    build_apiserver_args,
    build_controller_manager_args,
    build_etcd_args,
    build_token_file,
    default_cache_dir,
    find_binaries,
    free_port,
    write_material,
)
from vsphere_kale.playground.seed import USERS
from vsphere_kale.sandbox.kubeconfig import context_name, write_kubeconfig

__all__ = [
    "ADMIN_USER",
    "API_AUDIENCES",
    "CONTROLLERS",
    "ETCD_VERSION",
    "FLAVORS",
    "KUBE_VERSION",
    "SERVICE_ACCOUNT_ISSUER",
    "Binaries",
    "ControlPlaneError",
    "RunningControlPlane",
    "build_admission_config",
    "build_token_file",
    "default_cache_dir",
    "find_binaries",
    "last_log_line",
    "start_control_plane",
]

# --- processes ---------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def last_log_line(path: Path, *, limit: int = 400) -> str:
    """The last non-empty line of a component's log, control characters removed."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if line.strip():
            return _CONTROL.sub("", line.strip())[:limit]
    return "(empty log)"


class _Component:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # A session of its own: Ctrl-C in a terminal reaches us, and we stop the children in
        # order (controller manager, API server, etcd) instead of all at once.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def died(self) -> str | None:
        """None while running; else a sentence with the exit code and the last log line."""
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"{self.name} exited with code {code}; its last log line: "
            f"{last_log_line(self.log_path)} (full log: {self.log_path})"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


class RunningControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1 until :meth:`stop`.

    ``url``, ``ca_path``, ``kubeconfig_path`` (admin context current; one context
    ``<user>@sandbox`` per user, as the sandbox writes), ``tokens`` (user -> token),
    ``token_for(user)``, ``pids``, ``workdir`` (logs: ``etcd.log``, ``kube-apiserver.log``,
    ``kube-controller-manager.log``).
    """

    def __init__(
        self,
        *,
        flavor: str = "psa",
        workdir: str | os.PathLike[str] | None = None,
        controller_manager: bool = True,
        binaries: Binaries | None = None,
        start_timeout: float = START_TIMEOUT,
        port: int | None = None,
    ) -> None:
        admission = build_admission_config(flavor)
        bins = binaries or find_binaries()
        if controller_manager and bins.kube_controller_manager is None:
            raise ControlPlaneError(
                f"no executable kube-controller-manager next to {bins.kube_apiserver} or in "
                f"{default_cache_dir()}: run tools/control-plane/build"
            )
        self.flavor = flavor
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vsphere-kale-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._components: list[_Component] = []
        self._stopped = False
        self.tokens: dict[str, str] = {"admin": "admin-" + os.urandom(24).hex()}
        identities: dict[str, tuple[str, Sequence[str]]] = {
            self.tokens["admin"]: (ADMIN_USER, ["system:masters"])
        }
        for user, seeded in USERS.items():
            self.tokens[user] = seeded.token
            identities[seeded.token] = (seeded.username, list(seeded.groups))
        kcm_token = "kcm-" + os.urandom(24).hex()
        identities[kcm_token] = (CONTROLLER_MANAGER_USER, ["system:masters"])
        atexit.register(self.stop)
        self.port = port or free_port()
        try:
            self._start(bins, admission, identities, kcm_token, controller_manager, start_timeout)
        except BaseException:
            self.stop()
            raise

    def _start(
        self,
        bins: Binaries,
        admission: dict[str, Any],
        identities: Mapping[str, tuple[str, Sequence[str]]],
        kcm_token: str,
        controller_manager: bool,
        timeout: float,
    ) -> None:
        started = time.monotonic()
        self.ca_pem = write_material(self.workdir, identities)
        self.ca_path = self.workdir / "ca.crt"
        admission_path = self.workdir / "admission.yaml"
        admission_path.write_text(yaml.safe_dump(admission, sort_keys=False), encoding="utf-8")
        (self.workdir / "audit-policy.yaml").write_text(
            yaml.safe_dump(AUDIT_POLICY, sort_keys=False), encoding="utf-8"
        )
        self.audit_log_path = self.workdir / "audit.log"
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(bins.etcd),
                *build_etcd_args(
                    data_dir=self.workdir / "etcd", client_port=client_port, peer_port=peer_port
                ),
            ],
        )
        self._wait(etcd, f"{self.etcd_url}/health", deadline=started + timeout, tls=False)
        self.url = f"https://127.0.0.1:{self.port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                *build_apiserver_args(
                    workdir=self.workdir,
                    etcd_url=self.etcd_url,
                    port=self.port,
                    admission_config=admission_path,
                ),
            ],
        )
        self._wait(apiserver, f"{self.url}/readyz", deadline=started + timeout, dependency=etcd)
        self.kubeconfig_path = write_kubeconfig(
            self.workdir / "kubeconfig", self.url, self.tokens, ca_pem=self.ca_pem
        )
        if controller_manager:
            assert bins.kube_controller_manager is not None
            kcm_kubeconfig = write_kubeconfig(
                self.workdir / "kcm.kubeconfig",
                self.url,
                {"kube-controller-manager": kcm_token},
                ca_pem=self.ca_pem,
            )
            kcm_port = free_port()
            kcm = self._spawn(
                "kube-controller-manager",
                [
                    str(bins.kube_controller_manager),
                    *build_controller_manager_args(
                        workdir=self.workdir, kubeconfig=kcm_kubeconfig, port=kcm_port
                    ),
                ],
            )
            self._wait(
                kcm,
                f"https://127.0.0.1:{kcm_port}/healthz",
                deadline=started + timeout,
                dependency=apiserver,
                verify=False,  # its serving certificate is self-signed at start, trusted by none
            )
        self.start_seconds = time.monotonic() - started

    def _spawn(self, name: str, argv: list[str]) -> _Component:
        component = _Component(name, argv, self.workdir / f"{name}.log")
        self._components.append(component)
        return component

    def _wait(
        self,
        component: _Component,
        url: str,
        *,
        deadline: float,
        tls: bool = True,
        verify: bool = True,
        dependency: _Component | None = None,
    ) -> None:
        """Poll ``url`` until 200; fail with the component's (or its dependency's) last line."""
        context = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        last = "no answer yet"
        delay = 0.05
        while True:
            for part in (dependency, component):
                why = part.died() if part is not None else None
                if why:
                    raise ControlPlaneError(why)
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{component.name} was not ready at {url} in time ({last}); its last log "
                    f"line: {last_log_line(component.log_path)} (full log: {component.log_path})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- what callers use --

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self._components}

    def check(self) -> None:
        """Raise :class:`ControlPlaneError` naming the first component that died (last log line)."""
        for component in self._components:
            why = component.died()
            if why:
                raise ControlPlaneError(why)

    def token_for(self, user: str) -> str:
        try:
            return self.tokens[user]
        except KeyError:
            raise ControlPlaneError(
                f"no user {user!r} on this control plane (users: {', '.join(self.tokens)})"
            ) from None

    def context_for(self, user: str) -> str:
        self.token_for(user)
        return context_name(user)

    def kubectl_args(self, user: str = "admin") -> list[str]:
        """``--kubeconfig ... --context ...`` for running kubectl as ``user``."""
        return ["--kubeconfig", str(self.kubeconfig_path), "--context", self.context_for(user)]

    def request_json(self, method: str, path: str, *, user: str = "admin", body: Any = None) -> Any:
        """One JSON request with ``user``'s token (stdlib only; for probes and scripts)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=data,
            headers={
                "Authorization": f"Bearer {self.token_for(user)}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_path))
        with urllib.request.urlopen(req, timeout=30, context=context) as response:
            return json.loads(response.read() or b"null")

    def audit_events(self, *, username: str | None = None) -> list[dict[str, Any]]:
        """The API server's audit events so far (ResponseComplete etc.), optionally one user's."""
        events = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.audit_log_path.read_text(encoding="utf-8").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line the server is still writing
                if username is None or (event.get("user") or {}).get("username") == username:
                    events.append(event)
        return events

    def stop(self) -> None:
        """SIGTERM each component (newest first), SIGKILL after a bound; remove the workdir."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        for component in reversed(self._components):
            with contextlib.suppress(OSError):
                component.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RunningControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_control_plane(
    *,
    flavor: str = "psa",
    workdir: str | os.PathLike[str] | None = None,
    controller_manager: bool = True,
    binaries: Binaries | None = None,
    start_timeout: float = START_TIMEOUT,
    port: int | None = None,
) -> RunningControlPlane:
    """Start etcd, kube-apiserver and (by default) kube-controller-manager; wait until ready.

    ``port``: kube-apiserver's secure port on 127.0.0.1 (default: a free one).
    Raises :class:`ControlPlaneError` with a sentence saying what to do when the binaries are
    missing or a component dies (with its last log line).
    """
    return RunningControlPlane(
        flavor=flavor,
        workdir=workdir,
        controller_manager=controller_manager,
        binaries=binaries,
        start_timeout=start_timeout,
        port=port,
    )
