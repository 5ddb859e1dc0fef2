"""The installed Deployment's pod, run as local processes: the kubelet's part for one pod.

The playground installs exactly what ``vsphere-kale install`` installs, Deployment included.
The embedded sandbox runs no pods and the real control plane here has no kubelet, so this
module does for one replica what a kubelet would:

- the volumes: the ConfigMap's ``config.yaml`` is written once (the Deployment mounts it with
  ``subPath``, which a kubelet never refreshes either); the Secret's items are written and then
  re-synced while the pod runs (:class:`SecretVolume`, as the kubelet refreshes Secret volumes),
  so a certificate the leader rotates reaches the served files and ``serve`` hot-reloads it;
- the containers, each a process (``serve --no-webhook`` and ``webhook``; ``install
  --admission policy`` leaves only the first): the Deployment's own ``args``
  (:func:`build_container_args`), with each mount path mapped to its local file, ``--port``
  set to the local port standing for that container port, ``--address 127.0.0.1``; the pod
  is ready when every container's readiness probe answers;
- the service account token: a TokenRequest token of the pod's ServiceAccount in a kubeconfig
  (what the projected token volume gives a pod), so exactly the installed RBAC applies to
  ``serve`` (``webhook`` makes no API calls).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsphere_kale.errors import KubeError, VsphereKaleError
from vsphere_kale.install import render
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r

log = logging.getLogger(__name__)

_STOP_TIMEOUT = 10.0
SECRET_SYNC_SECONDS = 2.0
"""How often the local "kubelet" re-reads the Secret (a real one: about a minute)."""


@dataclass(frozen=True)
class PodFiles:
    """Where the Deployment's mounts land locally."""

    paths: dict[str, str]
    """Mount path in the container -> local path (for the args)."""
    config_maps: dict[tuple[str, str], Path]
    """(ConfigMap name, key) -> local file."""
    secrets: dict[tuple[str, str], Path]
    """(Secret name, key) -> local file."""


def pod_containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pod template's containers, in order (pure)."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [dict(c) for c in pod.get("containers") or []]


def find_container(deployment: Mapping[str, Any], name: str = render.NAME) -> dict[str, Any]:
    for container in pod_containers(deployment):
        if container.get("name") == name:
            return container
    raise VsphereKaleError(f"deployment {render.NAME} has no container named {name}")


def build_pod_files(deployment: Mapping[str, Any], root: Path) -> PodFiles:
    """Map every container's ConfigMap and Secret mounts onto files under ``root`` (pure).

    A volume is one directory however many containers mount it, as on a node."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    paths: dict[str, str] = {}
    config_maps: dict[tuple[str, str], Path] = {}
    secret_files: dict[tuple[str, str], Path] = {}
    mounts = [m for c in pod_containers(deployment) for m in c.get("volumeMounts") or []]
    for mount in mounts:
        volume = volumes.get(mount.get("name")) or {}
        source, table = None, None
        if "configMap" in volume:
            source, table = volume["configMap"], config_maps
            object_name = str(source.get("name"))
        elif "secret" in volume:
            source, table = volume["secret"], secret_files
            object_name = str(source.get("secretName"))
        if source is None or table is None:
            continue  # emptyDir and the like: nothing to provide
        local = root / str(mount["name"])
        mount_path = str(mount["mountPath"])
        sub_path = mount.get("subPath")
        if sub_path:
            target = local / str(sub_path)
            table[(object_name, str(sub_path))] = target
            paths[mount_path] = str(target)
            continue
        items = source.get("items") or []
        for item in items:
            table[(object_name, str(item["key"]))] = local / str(item["path"])
        paths[mount_path] = str(local)
    return PodFiles(paths, config_maps, secret_files)


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's ``port`` (a number or a port name) as the container's port number (pure)."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise VsphereKaleError(f"container {container.get('name')} declares no port named {port}")


def readiness_port(container: Mapping[str, Any]) -> int:
    """The container port its readiness probe asks (pure)."""
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    if "port" not in probe:
        raise VsphereKaleError(f"container {container.get('name')} has no HTTP readiness probe")
    return container_port(container, probe["port"])


def build_container_args(
    container: Mapping[str, Any],
    *,
    paths: Mapping[str, str],
    ports: Mapping[int, int],
    kubeconfig: Path,
    identity: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The container's args with mount paths mapped to local files and its ``--port`` to the
    local port standing for it in ``ports`` (container port -> local port) (pure).

    ``serve`` also gets the pod's API credentials and identity, and ``extra``; ``webhook``
    talks to no API server and takes neither.
    """
    args = [str(a) for a in container.get("args") or []]
    out: list[str] = []
    port: int | None = None
    skip_next = False
    for index, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg in ("--port", "--address") and index + 1 < len(args):
            if arg == "--port":
                port = int(args[index + 1])
            skip_next = True  # replaced below
            continue
        for mount, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            if arg == mount or arg.startswith(mount + "/"):
                arg = local + arg[len(mount) :]
                break
        out.append(arg)
    if port is None or port not in ports:
        raise VsphereKaleError(
            f"container {container.get('name')}: no local port for --port {port}"
        )
    out += ["--address", "127.0.0.1", "--port", str(ports[port])]
    if out and out[0] == "serve":
        out += ["--kubeconfig", str(kubeconfig), "--identity", identity, *extra]
    return out


def write_file(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically (temporary file + rename), as the kubelet swaps a volume's contents."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target)


class SecretVolume:
    """Keeps local files equal to keys of one Secret, re-read every ``period`` seconds."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        files: Mapping[str, Path],
        period: float = SECRET_SYNC_SECONDS,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.files = dict(files)
        self.period = period
        self.syncs = 0
        """How many times the files were (re)written: 1 after :meth:`sync`, more on changes."""
        self._seen: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="secret-volume", daemon=True)

    def sync(self) -> bool:
        """Write the files if the Secret changed; True when something was written."""
        secret = self._kube.get(r.SECRET, self.name, namespace=self.namespace)
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        wanted = {key: data[key] for key in self.files if key in data}
        missing = sorted(set(self.files) - set(wanted))
        if missing:
            raise VsphereKaleError(
                f"secret {self.namespace}/{self.name} has no {', '.join(missing)}"
            )
        if wanted == self._seen:
            return False
        # The key last: a reader that sees the new certificate with the old key waits.
        for key in sorted(wanted, key=lambda k: k.endswith(".key")):
            write_file(self.files[key], wanted[key], 0o600 if key.endswith(".key") else 0o644)
        self._seen = wanted
        self.syncs += 1
        return True

    def start(self) -> SecretVolume:
        self.sync()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if self.sync():
                    log.info("secret %s/%s changed: files updated", self.namespace, self.name)
            except (KubeError, VsphereKaleError) as exc:  # keep the last files, as a kubelet
                log.warning("secret %s/%s not synced: %s", self.namespace, self.name, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.period + 5)


class ContainerProcess:
    """One container of the pod as a child process, its output in a log file."""

    def __init__(
        self, name: str, command: list[str], *, log_file: Path, ready_url: str, ca_file: Path
    ) -> None:
        self.name = name
        self.log_file = log_file
        self._ready_url = ready_url
        self._ca_file = ca_file
        with log_file.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, deadline: float) -> None:
        """Until its readiness probe (``/readyz``) answers 200, up to ``deadline`` (monotonic)."""
        context = ssl.create_default_context(cafile=str(self._ca_file))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VsphereKaleError(
                    f"container {self.name} exited with code {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self._ready_url, timeout=2, context=context):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise VsphereKaleError(f"container {self.name} was not ready in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """SIGTERM: each container drains; serve also stops the reconciler and its Lease."""
        if self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self) -> None:
        """Bounded: killed when it outlives the grace period."""
        try:
            self.process.wait(_STOP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %ss; killing it", self.name, _STOP_TIMEOUT + 5)
            self.process.kill()
            self.process.wait(_STOP_TIMEOUT)


class LocalPod:
    """One replica of the installed Deployment, run here (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        root: Path,
        ports: Mapping[int, int],
        kubeconfig: Path,
        log_dir: Path,
        ca_file: Path,
        identity: str = "vsphere-kale-sandbox",
        extra_args: Sequence[str] = (),
        secret_period: float = SECRET_SYNC_SECONDS,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.root = root
        self.ports = dict(ports)
        """Container port -> local port (what the Service's target ports reach here)."""
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.ca_file = ca_file
        self.identity = identity
        self.extra_args = tuple(extra_args)
        self.secret_period = secret_period
        self.volumes: list[SecretVolume] = []
        self.containers: list[ContainerProcess] = []

    def start(self, *, timeout: float) -> LocalPod:
        """Volumes, then every container; returns once all are ready. On failure, whatever
        was started is stopped before the error propagates."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        deployment = self._kube.get(r.DEPLOYMENT, render.NAME, namespace=self.namespace)
        files = build_pod_files(deployment, self.root)
        for (name, key), target in files.config_maps.items():
            cm = self._kube.get(r.CONFIG_MAP, name, namespace=self.namespace)
            write_file(target, str((cm.get("data") or {})[key]).encode(), 0o644)
        by_secret: dict[str, dict[str, Path]] = {}
        for (name, key), target in files.secrets.items():
            by_secret.setdefault(name, {})[key] = target
        # The CA for the clients of the admin API (the notebook), kept current the same way.
        by_secret.setdefault(render.TLS_SECRET, {})["ca.crt"] = self.ca_file
        for name, keys in by_secret.items():
            volume = SecretVolume(
                self._kube,
                namespace=self.namespace,
                name=name,
                files=keys,
                period=self.secret_period,
            )
            self.volumes.append(volume.start())
        for container in pod_containers(deployment):
            args = build_container_args(
                container,
                paths=files.paths,
                ports=self.ports,
                kubeconfig=self.kubeconfig,
                identity=self.identity,
                extra=self.extra_args,
            )
            self.containers.append(
                ContainerProcess(
                    str(container.get("name")),
                    [sys.executable, "-m", "vsphere_kale.cli", *args],
                    # serve.log, webhook.log: named after the subcommand the container runs.
                    log_file=self.log_dir / f"{args[0]}.log",
                    ready_url=f"https://127.0.0.1:{self.ports[readiness_port(container)]}/readyz",
                    ca_file=self.ca_file,
                )
            )
        deadline = time.monotonic() + timeout
        for process in self.containers:
            process.wait_ready(deadline)

    def stop(self) -> None:
        # All at once, as the kubelet does: each drains in parallel within the grace period.
        for process in self.containers:
            process.terminate()
        for process in self.containers:
            process.wait_stopped()
        self.containers = []
        for volume in self.volumes:
            volume.stop()
        self.volumes = []
