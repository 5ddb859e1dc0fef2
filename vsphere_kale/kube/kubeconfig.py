"""Building the client from a kubeconfig (or in-cluster), with errors as one sentence.

The official loader (``kubernetes.config.load_kube_config``) raises a YAML traceback for a
malformed file, "No configuration found" for a missing one, and forgets where a credential
came from once it has turned it into a header. So before handing the file to it we read the
file(s) ourselves: a missing file is named as missing, a YAML error names the file, the line
and the problem, and :class:`KubeconfigSource` remembers which user of which context (and
what kind of credential: token, token file, client certificate, exec plugin) the requests
will carry, so a 401 can say so. Nothing here ever holds or prints a token's value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from urllib3.exceptions import MaxRetryError

from vsphere_kale.errors import KubeError, KubeUnavailable

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_LOCATION = "~/.kube/config"
HINT = "pass --kubeconfig with a valid file (or set KUBECONFIG)"


@dataclass(frozen=True)
class KubeconfigSource:
    """Where a client's server address and credential came from (never the secret itself)."""

    files: str
    """The kubeconfig file(s) as the user named them (``--kubeconfig``, ``$KUBECONFIG``)."""
    context: str
    user: str
    credential: str
    """What kind of credential the user entry holds: "a bearer token", "token file /x"..."""
    server: str

    def describe(self) -> str:
        """``user "alice" of context "alice@sandbox" in /x/kubeconfig (a bearer token)``."""
        return f'user "{self.user}" of context "{self.context}" in {self.files} ({self.credential})'


IN_CLUSTER = KubeconfigSource(
    files="the pod's service-account mount",
    context="in-cluster",
    user="the pod's service account",
    credential="token file /var/run/secrets/kubernetes.io/serviceaccount/token",
    server="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
)


def kubeconfig_paths(kubeconfig: str | None, environ: Mapping[str, str]) -> tuple[str, list[Path]]:
    """The name to show and the files to read: ``--kubeconfig``, else each entry of
    ``$KUBECONFIG`` (a path list, as kubectl reads it), else ``~/.kube/config``."""
    if kubeconfig is not None:
        return kubeconfig, [Path(kubeconfig).expanduser()]
    env = environ.get("KUBECONFIG", "")
    if env:
        entries = [e for e in env.split(os.pathsep) if e]
        return f"$KUBECONFIG ({env})", [Path(e).expanduser() for e in entries]
    return DEFAULT_LOCATION, [Path(DEFAULT_LOCATION).expanduser()]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def read_kubeconfig_file(path: Path) -> dict[str, Any]:
    """One kubeconfig file as a mapping, or a :class:`KubeError` sentence naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KubeError(f"kubeconfig file {path} does not exist; {HINT}") from exc
    except UnicodeDecodeError as exc:
        raise KubeError(f"kubeconfig file {path} is not UTF-8 text; {HINT}") from exc
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig file {path}: {exc.strerror}; {HINT}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeError(
            f"kubeconfig file {path} is not valid YAML: {_yaml_problem(exc)}; {HINT}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeError(
            f"kubeconfig file {path} is not a kubeconfig (a YAML mapping with clusters, "
            f"contexts and users); {HINT}"
        )
    return data


def _named(entries: Any, name: str, key: str) -> dict[str, Any]:
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, dict) else {}
    return {}


def describe_credential(user: Mapping[str, Any]) -> str:
    """The kind of credential a kubeconfig ``users[].user`` entry holds (no secret values)."""
    kinds: list[str] = []
    if user.get("token"):
        kinds.append("a bearer token")
    if user.get("tokenFile"):
        kinds.append(f"token file {user['tokenFile']}")
    if user.get("client-certificate"):
        kinds.append(f"client certificate {user['client-certificate']}")
    elif user.get("client-certificate-data"):
        kinds.append("an embedded client certificate")
    exec_ = user.get("exec")
    if isinstance(exec_, dict):
        kinds.append(f"exec plugin {exec_.get('command')}")
    provider = user.get("auth-provider")
    if isinstance(provider, dict):
        kinds.append(f"auth provider {provider.get('name')}")
    if user.get("username"):
        kinds.append(f"basic auth as {user['username']}")
    return ", ".join(kinds) or "no credential"


def read_kubeconfig_source(
    kubeconfig: str | None, *, context: str | None, environ: Mapping[str, str]
) -> KubeconfigSource:
    """Read the kubeconfig file(s) (merged as kubectl merges: the first file that sets a
    name wins) and describe the context a client will use.

    Raises :class:`KubeError` with one sentence: a missing file (every file, for a
    ``$KUBECONFIG`` list, which kubectl also tolerates partly missing), invalid YAML, a
    document that is not a kubeconfig. An unknown context is left to the official loader,
    whose message names it.
    """
    shown, paths = kubeconfig_paths(kubeconfig, environ)
    existing = [p for p in paths if p.exists()]
    if not existing:
        missing = ", ".join(str(p) for p in paths)
        raise KubeError(f"kubeconfig file {missing} does not exist; {HINT}")
    merged: dict[str, list[Any]] = {"clusters": [], "contexts": [], "users": []}
    current = ""
    for path in existing:
        data = read_kubeconfig_file(path)
        for key, entries in merged.items():
            if isinstance(data.get(key), list):
                entries.extend(data[key])
        current = current or str(data.get("current-context") or "")
    name = context or current
    ctx = _named(merged["contexts"], name, "context")
    user_name = str(ctx.get("user") or "")
    cluster = _named(merged["clusters"], str(ctx.get("cluster") or ""), "cluster")
    return KubeconfigSource(
        files=shown,
        context=name or "(none)",
        user=user_name or "(none)",
        credential=describe_credential(_named(merged["users"], user_name, "user")),
        server=str(cluster.get("server") or ""),
    )


class _DropRetryWarnings(logging.Filter):
    """urllib3 logs ``Retrying (Retry(total=2, ...)) after connection broken by ...`` as a
    WARNING for each of its retries: three lines of noise before our one sentence says the
    API server is unreachable. The retries themselves stay (they ride over a pooled
    connection the server closed); only their lines go, unless debug logging is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Retrying ("):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_urllib3_retries() -> None:
    """Install :class:`_DropRetryWarnings` on urllib3's pool logger (once)."""
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _DropRetryWarnings) for f in pool_log.filters):
        pool_log.addFilter(_DropRetryWarnings())


def explain(
    exc: KubeError, *, action: str, host: str, source: KubeconfigSource | None
) -> KubeError:
    """``exc`` with what a user must check: the URL when the server cannot be reached, the
    credential (its kind and origin, never its value) on a 401; otherwise ``exc`` itself."""
    if isinstance(exc, KubeUnavailable) and exc.status == 0:
        where = (
            f' (the server of context "{source.context}" in {source.files})'
            if source is not None
            else ""
        )
        return KubeUnavailable(
            f"{action}: cannot reach the API server at {host}: {_cause(exc.__cause__)}; "
            f"check that the cluster is running and reachable from here, and that this "
            f"address{where} is right"
        )
    if exc.status == 401:
        used = source.describe() if source is not None else "the credential in use"
        return KubeError(
            f"{action}: the API server at {host} answered 401 Unauthorized to {used}: the "
            "credential is invalid or has expired; get a fresh one (a new token, "
            "`kubectl vsphere login`) or pick another context",
            status=401,
            reason=exc.reason,
        )
    return exc


def _cause(exc: BaseException | None) -> str:
    """The root of a connection failure, without urllib3's pool and object reprs."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = str(exc) if exc is not None else "no answer"
    # "<HTTPSConnection object at 0x..>: Failed to establish a new connection: [Errno 111] ..."
    text = text.rsplit("Failed to establish a new connection: ", 1)[-1]
    return re.sub(r"^\[Errno -?\d+\] ", "", text)


ApiClient = client.ApiClient
"""The official client's type, for modules that hand one on (the sandbox's test scaffolding)
without importing ``kubernetes`` themselves."""


def build_api_client(
    kubeconfig: str | None = None, *, context: str | None = None
) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` (or ``$KUBECONFIG``/``~/.kube/config``), or in-cluster."""
    return load_api_client(kubeconfig, context=context)[0]


def load_api_client(
    kubeconfig: str | None = None, *, context: str | None = None
) -> tuple[client.ApiClient, KubeconfigSource]:
    """An ApiClient and where its server and credential came from.

    In-cluster config is tried first only when no kubeconfig is named and we run in a pod:
    that is how ``serve`` runs in a Deployment. The in-cluster loader re-reads the projected
    service-account token when it rotates. A kubeconfig that is missing, not YAML or not a
    kubeconfig is one sentence naming the file (:mod:`vsphere_kale.kube.kubeconfig`).
    """
    quiet_urllib3_retries()
    configuration = client.Configuration()
    if (
        kubeconfig is None
        and os.path.exists(IN_CLUSTER_TOKEN)
        and os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration), IN_CLUSTER
    source = read_kubeconfig_source(kubeconfig, context=context, environ=os.environ)
    try:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise KubeError(
            f"cannot use kubeconfig {source.files}: {exc}; pass --kubeconfig with a valid file"
        ) from exc
    return client.ApiClient(configuration), source
