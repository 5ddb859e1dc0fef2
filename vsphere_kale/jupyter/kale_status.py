"""Which notebook the panel runs in, read through Jupyter, and its ``kale`` status section.

``GET vsphere-kale/api/status?kernel=<kernel id>`` (what the widget sends) or ``?path=<notebook
path>`` (``HealthPanel(notebook=...)``) adds the notebook's Kale volumes to the status document.

**Why the kernel id, not ``JPY_SESSION_NAME``.** jupyter_server (2.21) puts
``JPY_SESSION_NAME`` into a kernel's environment when a session starts it, but as
``os.path.join(cwd_for_path(path), name)``: a *filesystem* path (absolute under the server's
root), not a contents path, and frozen at kernel start. Renaming or moving the notebook in
JupyterLab updates the session (JupyterLab PATCHes it), never the running kernel's environment,
and kernels not started through a session (nbclient, ``/api/kernels``) do not have it. The
kernel id is stable for the kernel's life (restarts keep it), the kernel knows it from its
connection file (jupyter_client names it ``kernel-<id>.json``), and the server's session
manager maps it to the notebook's *current* contents path. So the widget sends its kernel id
and the extension asks ``session_manager.get_session(kernel_id=...)``.

**Only through the contents manager.** The notebook is read with
``contents_manager.get(path, content=True, type="notebook")``, never ``open()``: the contents
manager confines paths to its root (``..`` that escapes it, hidden files) and works for
non-filesystem contents managers too. An explicit ``path`` is user input and is checked before
that: absolute paths, ``..`` segments, control characters and names not ending in ``.ipynb``
answer 400 with a sentence; a notebook the contents manager does not have answers 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_core.utils import ensure_async
from tornado import web

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.health.kale_status import KaleInputs, build_section, collect_kale_inputs
from vsphere_kale.jupyter.service import HealthService
from vsphere_kale.settings import StorageSettings

log = logging.getLogger(__name__)

KERNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""jupyter_server mints uuid4 kernel ids; other kernel managers (gateways) use similar tokens."""
MAX_PATH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class NotebookRequestError(VsphereKaleError):
    """The notebook asked for cannot be read: ``code`` is the HTTP answer (400 or 404)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class NotebookQuery:
    """Which notebook a status request is about: one of the two is set."""

    kernel_id: str | None = None
    path: str | None = None


def decide_notebook_path(path: str) -> str:
    """A notebook path relative to the Jupyter root, normalised; 400 for anything else."""
    shown = _CONTROL.sub("?", path[:200])
    if not path.strip():
        raise NotebookRequestError("path: empty; give the notebook's path", code=400)
    if len(path) > MAX_PATH:
        raise NotebookRequestError(f"path: longer than {MAX_PATH} characters", code=400)
    if _CONTROL.search(path):
        raise NotebookRequestError(f"path {shown!r} contains control characters", code=400)
    if path.startswith(("/", "\\")) or _DRIVE.match(path) or "\\" in path:
        raise NotebookRequestError(
            f"path {shown!r} is not relative: give the notebook's path under the Jupyter "
            "root, as the file browser shows it (e.g. pipelines/train.ipynb)",
            code=400,
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise NotebookRequestError(
            f"path {shown!r} contains '..': only notebooks under the Jupyter root can be read",
            code=400,
        )
    if not parts or not parts[-1].endswith(".ipynb"):
        raise NotebookRequestError(
            f"path {shown!r} is not a notebook: the name must end in .ipynb", code=400
        )
    return "/".join(parts)


def decide_notebook_query(kernel: str | None, path: str | None) -> NotebookQuery | None:
    """The ``kernel``/``path`` query arguments, checked; ``None`` when neither is given."""
    if kernel is not None and path is not None:
        raise NotebookRequestError("give kernel or path, not both", code=400)
    if kernel is not None:
        if not KERNEL_ID.match(kernel):
            raise NotebookRequestError(
                f"kernel {_CONTROL.sub('?', kernel[:80])!r} is not a kernel id", code=400
            )
        return NotebookQuery(kernel_id=kernel)
    if path is not None:
        return NotebookQuery(path=decide_notebook_path(path))
    return None


def decide_hint_storage(storage: StorageSettings, status: Mapping[str, Any]) -> StorageSettings:
    """The storage settings the fix hints use: the service's RWX class when none is set here.

    A notebook pod usually runs the extension without a settings file, while ``serve`` knows
    the class it moves RWX claims to and reports it in the status's webhook row; hints that
    name it ("make an RWX copy on nfs-client") are the ones a user can follow.
    """
    if storage.rwx_storage_class:
        return storage
    webhook = status.get("webhook")
    klass = webhook.get("rwxStorageClass") if isinstance(webhook, Mapping) else None
    if isinstance(klass, str) and klass:
        return dataclasses.replace(storage, rwx_storage_class=klass)
    return storage


async def fetch_session_path(session_manager: Any, kernel_id: str) -> str | None:
    """The current path of the notebook whose session runs ``kernel_id``; ``None`` when the
    kernel belongs to no notebook session (a console, nbclient, a kernel started by hand)."""
    try:
        model = await ensure_async(session_manager.get_session(kernel_id=kernel_id))
    except web.HTTPError as exc:
        if exc.status_code == 404:
            return None
        raise
    if not isinstance(model, Mapping) or model.get("type") != "notebook":
        return None
    path = model.get("path")
    return path if isinstance(path, str) and path else None


async def fetch_notebook(contents_manager: Any, path: str) -> Any:
    """The decoded notebook at ``path``, read by the contents manager (which keeps it inside
    the root); :class:`NotebookRequestError` with a sentence when it cannot be read."""
    try:
        model = await ensure_async(contents_manager.get(path, content=True, type="notebook"))
    except web.HTTPError as exc:
        # The contents manager's own sentence may name the server's filesystem path: keep
        # the user's path only.
        if exc.status_code == 404:
            raise NotebookRequestError(
                f"no notebook {path} under the Jupyter root", code=404
            ) from exc
        if exc.status_code == 403:
            raise NotebookRequestError(
                f"notebook {path}: the Jupyter server may not read it", code=403
            ) from exc
        raise NotebookRequestError(
            f"{path} cannot be read as a notebook (is it valid .ipynb JSON?)", code=400
        ) from exc
    return model.get("content") if isinstance(model, Mapping) else None


def _no_notebook(namespace: str, *, notebook: str | None, error: str) -> dict[str, Any]:
    """The section when no notebook could be read: nothing for the panel to show."""
    return {
        "generation": "kale2",
        "namespace": namespace,
        "notebook": notebook,
        "kaleMetadata": False,
        "pipelineName": None,
        "fit": None,
        "error": error,
        "volumes": [],
        "storageReadable": {"classes": False, "persistentVolumes": False},
    }


async def fetch_status_with_kale(
    health: HealthService,
    query: NotebookQuery | None,
    *,
    contents_manager: Any,
    session_manager: Any,
) -> dict[str, Any]:
    """The status document, with the ``kale`` section when ``query`` names a notebook.

    The notebook is read first (a bad explicit path fails the request with 400/404 before the
    cluster is asked); then the status and the Kale inputs are fetched side by side, so the
    section costs about its slowest read, not the sum. The inputs are read with the
    notebook's own identity (the local status's client); a failure there is the section's
    ``error``, never the whole status's.
    """
    if query is None:
        return await health.status()
    namespace = health.namespace()
    path = query.path
    if query.kernel_id is not None:
        path = await fetch_session_path(session_manager, query.kernel_id)
        if path is None:
            status = await health.status()
            status["kale"] = _no_notebook(
                namespace,
                notebook=None,
                error=f"kernel {query.kernel_id} belongs to no notebook on this Jupyter server",
            )
            return status
    assert path is not None
    try:
        notebook = await fetch_notebook(contents_manager, path)
    except NotebookRequestError as exc:
        if query.path is not None:
            raise  # the caller's own path: a 4xx with the sentence
        # A session whose notebook is gone (deleted on disk): say so in the section.
        status = await health.status()
        status["kale"] = _no_notebook(namespace, notebook=path, error=str(exc))
        return status
    loop = asyncio.get_running_loop()
    inputs_future: asyncio.Future[KaleInputs] = loop.run_in_executor(
        None,
        lambda: collect_kale_inputs(
            health.local.kube, notebook, namespace=namespace, source=path or "the notebook"
        ),
    )
    answer, inputs = await asyncio.gather(health.status(), inputs_future)
    document: dict[str, Any] = answer
    rows = document.get("pvcs")
    document["kale"] = build_status_section(
        notebook,
        inputs,
        path=path,
        namespace=namespace,
        storage=decide_hint_storage(health.local.settings.storage, document),
        pvc_rows=rows if isinstance(rows, list) else [],
    )
    return document


def decide_volume_refusal(name: str, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """A Kale claim's ``recreateRefusal``: the namespace status's own for the claim (one rule,
    decided once, by the service when it answered); a claim the status does not list is
    refused (the service has not judged it: a refresh will)."""
    for row in rows:
        if isinstance(row, Mapping) and row.get("name") == name:
            refusal = row.get("recreateRefusal")
            return str(refusal) if refusal else None
    return f"the namespace status does not list claim {name}: refresh to check it again"


def build_status_section(
    notebook: Any,
    inputs: KaleInputs,
    *,
    path: str,
    namespace: str,
    storage: StorageSettings,
    pvc_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """:func:`~vsphere_kale.health.kale_status.build_section` plus where the notebook is,
    whether it has Kale metadata (the panel shows the section only then) and, per volume
    with a claim, ``recreateRefusal``: the status row's (``pvc_rows``, the document's
    ``pvcs``) for the same claim, or ``null`` (the panel offers the recreation only then, and
    only for a claim that cannot bind)."""
    section = build_section(notebook, inputs, namespace=namespace, storage=storage, source=path)
    for volume in section["volumes"]:
        if volume.get("claim") is not None:
            volume["recreateRefusal"] = decide_volume_refusal(str(volume.get("name")), pvc_rows)
    return {"notebook": path, "kaleMetadata": inputs.notebook is not None, **section}
