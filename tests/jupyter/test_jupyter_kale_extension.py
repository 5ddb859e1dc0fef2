"""The status document's ``kale`` section through a real Jupyter server (pytest-jupyter).

The extension reads the notebook through Jupyter's contents manager (never a filesystem path of
ours), finds it from the kernel id through the session manager, and judges its Kale volumes
with the notebook's own identity against the sandbox (kubeflow-demo + install + serve).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reconcile_helpers import wait_for
from tornado.httpclient import HTTPResponse

from vsphere_kale.playground.system import LocalSystem

pytest_plugins = ["pytest_jupyter.jupyter_server"]

Fetch = Callable[..., Any]

KALE_VOLUMES = [
    {"name": "raw-data", "type": "pvc", "mount_point": "/data"},
    {"name": "shared-data", "type": "pvc", "mount_point": "/shared"},
    {"name": "scratch", "type": "new_pvc", "mount_point": "/scratch"},
]


def notebook(metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
        | (metadata or {}),
        "cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": "1 + 1",
                   "outputs": [], "execution_count": None}],
    }  # fmt: skip


def kale_notebook() -> dict[str, Any]:
    return notebook(
        {"kubeflow_notebook": {"pipeline_name": "mount-pvc-test", "volumes": KALE_VOLUMES}}
    )


def body(response: HTTPResponse) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


def claim(name: str, modes: list[str], klass: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "accessModes": modes,
            "storageClassName": klass,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """Sandbox + install + serve, with alice's Kale claims: ``raw-data`` ReadWriteOnce on the
    vSAN block class (Bound; the kubeflow-demo seed's own), ``shared-data`` ReadWriteMany on
    nfs-client (Bound)."""
    with LocalSystem(tmp_path_factory.mktemp("system")) as running:
        assert running.running is not None
        core = client.CoreV1Api(running.running.api_client())
        seeded = core.read_namespaced_persistent_volume_claim("raw-data", "alice")
        assert seeded.spec.access_modes == ["ReadWriteOnce"]
        assert seeded.spec.storage_class_name == "vsan-default-storage-policy"
        core.create_namespaced_persistent_volume_claim(
            "alice", claim("shared-data", ["ReadWriteMany"], "nfs-client")
        )
        for name in ("raw-data", "shared-data"):
            wait_for(
                f"{name} Bound",
                lambda n=name: (
                    core.read_namespaced_persistent_volume_claim(n, "alice").status.phase == "Bound"
                    or None
                ),
                timeout=30,
            )
        yield running


@pytest.fixture
def jp_server_config(system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
    """A Kubeflow-style server (no token) whose notebook identity is alice's service account."""
    assert system.running is not None
    token = tmp_path / "token"
    token.write_text(system.running.tokens["alice"])
    return {
        "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}, "token": ""},
        "VsphereKaleApp": {**system.jupyter_traits(), "token_file": str(token)},
    }


@pytest.fixture
def jp_auth_header() -> dict[str, str]:
    return {}


@pytest.fixture
def notebooks(jp_root_dir: Path) -> Path:
    (jp_root_dir / "pipelines").mkdir()
    (jp_root_dir / "pipelines" / "train.ipynb").write_text(json.dumps(kale_notebook()))
    (jp_root_dir / "plain.ipynb").write_text(json.dumps(notebook()))
    return jp_root_dir


async def status_for(jp_fetch: Fetch, **query: str) -> dict[str, Any]:
    return body(await jp_fetch("vsphere-kale", "api", "status", params=query))


async def test_no_notebook_asked_means_no_kale_section(jp_fetch: Fetch, notebooks: Path) -> None:
    status = await status_for(jp_fetch)
    assert status["kind"] == "NamespaceStatus" and status["source"] == "admin-api"
    assert "kale" not in status


async def test_kale_notebook_by_path_flags_the_rwo_claim_with_its_fix(
    jp_fetch: Fetch, notebooks: Path
) -> None:
    status = await status_for(jp_fetch, path="pipelines/train.ipynb")
    assert status["source"] == "admin-api"
    kale = status["kale"]
    assert kale["notebook"] == "pipelines/train.ipynb"
    assert kale["kaleMetadata"] is True and kale["error"] is None
    assert kale["pipelineName"] == "mount-pvc-test" and kale["namespace"] == "alice"
    assert kale["fit"] is False
    volumes = {v["name"]: v for v in kale["volumes"]}
    assert list(volumes) == ["raw-data", "shared-data", "scratch"]
    raw = volumes["raw-data"]
    assert (raw["verdict"], raw["fit"], raw["severity"]) == ("rwo", False, "error")
    assert raw["mountPoint"] == "/data"
    assert raw["claim"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClass": "vsan-default-storage-policy",
        "phase": "Bound",
    }
    assert "Multi-Attach" in raw["message"]
    # The extension runs without a settings file: the hint names the service's RWX class.
    assert raw["hint"].startswith("make an RWX copy on nfs-client and point the notebook at it")
    assert (volumes["shared-data"]["verdict"], volumes["shared-data"]["fit"]) == ("ok", True)
    assert volumes["scratch"]["verdict"] == "dropped" and volumes["scratch"]["claim"] is None
    # alice's service account may not list StorageClasses: said, not guessed.
    assert kale["storageReadable"]["classes"] is False


async def test_notebook_without_kale_metadata_has_the_documented_shape(
    jp_fetch: Fetch, notebooks: Path
) -> None:
    kale = (await status_for(jp_fetch, path="plain.ipynb"))["kale"]
    assert kale["notebook"] == "plain.ipynb"
    assert kale["kaleMetadata"] is False
    assert kale["fit"] is None and kale["volumes"] == []
    assert "no Kale metadata (metadata.kubeflow_notebook)" in kale["error"]


async def xsrf_headers(jp_fetch: Fetch) -> dict[str, str]:
    """The _xsrf cookie + header pair a token-less (Kubeflow-style) server wants on writes."""
    response = await jp_fetch("vsphere-kale", "api", "status")
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == "_xsrf":
            value = rest.split(";", 1)[0]
            return {"Cookie": f"_xsrf={value}", "X-XSRFToken": value}
    raise AssertionError("no _xsrf cookie")


async def start_session(jp_fetch: Fetch, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """What JupyterLab does when it opens a notebook: POST /api/sessions."""
    model = {"path": path, "name": Path(path).name, "type": "notebook",
             "kernel": {"name": "python3"}}  # fmt: skip
    return body(
        await jp_fetch("api", "sessions", method="POST", body=json.dumps(model), headers=headers)
    )


async def test_kernel_id_finds_the_notebook_through_its_session_even_after_a_rename(
    jp_fetch: Fetch, notebooks: Path
) -> None:
    # Given JupyterLab opened pipelines/train.ipynb (a session with a kernel)
    headers = await xsrf_headers(jp_fetch)
    session = await start_session(jp_fetch, "pipelines/train.ipynb", headers)
    kernel_id = session["kernel"]["id"]
    try:
        kale = (await status_for(jp_fetch, kernel=kernel_id))["kale"]
        assert kale["notebook"] == "pipelines/train.ipynb"
        assert {v["name"]: v["verdict"] for v in kale["volumes"]}["raw-data"] == "rwo"
        # When the user renames the notebook (JupyterLab renames the file, then PATCHes the
        # session; the running kernel's JPY_SESSION_NAME keeps the old name)
        await jp_fetch(
            "api", "contents", "pipelines", "train.ipynb", method="PATCH",
            body=json.dumps({"path": "pipelines/train-v2.ipynb"}), headers=headers,
        )  # fmt: skip
        await jp_fetch(
            "api", "sessions", session["id"], method="PATCH",
            body=json.dumps({"path": "pipelines/train-v2.ipynb", "name": "train-v2.ipynb"}),
            headers=headers,
        )  # fmt: skip
        # Then the same kernel id leads to the notebook's new path
        kale = (await status_for(jp_fetch, kernel=kernel_id))["kale"]
        assert kale["notebook"] == "pipelines/train-v2.ipynb"
        assert kale["kaleMetadata"] is True and kale["fit"] is False
        # When the notebook is deleted under the running session
        await jp_fetch(
            "api", "contents", "pipelines", "train-v2.ipynb", method="DELETE", headers=headers
        )
        # Then the status still answers, the section says why it has nothing
        status = await status_for(jp_fetch, kernel=kernel_id)
        assert status["pvcs"]
        kale = status["kale"]
        assert (kale["notebook"], kale["kaleMetadata"]) == ("pipelines/train-v2.ipynb", False)
        assert kale["error"] == "no notebook pipelines/train-v2.ipynb under the Jupyter root"
    finally:
        await jp_fetch("api", "sessions", session["id"], method="DELETE", headers=headers)


async def test_jpy_session_name_is_a_filesystem_path_fixed_at_kernel_start(
    jp_serverapp: Any, notebooks: Path
) -> None:
    """Why the extension maps the kernel id through the session manager instead: the
    installed jupyter_server gives kernels an absolute filesystem path, not a contents path
    (and the environment of a running kernel never follows a rename)."""
    env = jp_serverapp.session_manager.get_kernel_env("pipelines/train.ipynb", "train.ipynb")
    assert env["JPY_SESSION_NAME"] == str(notebooks / "pipelines" / "train.ipynb")


async def test_kernel_without_a_notebook_session_shows_no_kale_section(
    jp_fetch: Fetch, notebooks: Path
) -> None:
    status = await status_for(jp_fetch, kernel=str(uuid.uuid4()))
    kale = status["kale"]
    assert kale["notebook"] is None and kale["kaleMetadata"] is False
    assert "belongs to no notebook" in kale["error"]
    assert status["pvcs"]  # the namespace's status is still there


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("../outside.ipynb", 400, "contains '..'"),
        ("pipelines/../../outside.ipynb", 400, "contains '..'"),
        ("/etc/passwd", 400, "is not relative"),
        ("/tmp/x.ipynb", 400, "is not relative"),
        ("C:/Users/x.ipynb", 400, "is not relative"),
        ("pipelines\\train.ipynb", 400, "is not relative"),
        ("train\n.ipynb", 400, "control characters"),
        ("pipelines", 400, "must end in .ipynb"),
        ("notes.txt", 400, "must end in .ipynb"),
        ("", 400, "empty"),
        ("missing.ipynb", 404, "no notebook missing.ipynb under the Jupyter root"),
        ("broken.ipynb", 400, "cannot be read as a notebook"),
    ],
)
async def test_paths_outside_the_root_or_not_notebooks_are_refused(
    jp_fetch: Fetch, notebooks: Path, path: str, code: int, words: str
) -> None:
    (notebooks / "broken.ipynb").write_text("{not json")
    (notebooks / "notes.txt").write_text("hello")
    response = await jp_fetch(
        "vsphere-kale", "api", "status", params={"path": path}, raise_error=False
    )
    assert response.code == code, response.body
    error = body(response)
    assert error["kind"] == "Status" and error["code"] == code
    assert words in error["message"]
    assert str(notebooks) not in error["message"]  # never the server's filesystem layout


async def test_kernel_and_path_together_or_a_bad_kernel_id_are_400(
    jp_fetch: Fetch, notebooks: Path
) -> None:
    both = await jp_fetch(
        "vsphere-kale", "api", "status", params={"path": "plain.ipynb", "kernel": "abc"},
        raise_error=False,
    )  # fmt: skip
    assert both.code == 400 and "not both" in body(both)["message"]
    bad = await jp_fetch(
        "vsphere-kale", "api", "status", params={"kernel": "../x; drop"}, raise_error=False
    )
    assert bad.code == 400 and "is not a kernel id" in body(bad)["message"]
