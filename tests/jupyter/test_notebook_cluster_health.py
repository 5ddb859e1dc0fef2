"""notebooks/cluster-health.ipynb executed headlessly with nbclient against a live server.

The kernel finds the server the way it does under JupyterLab: the in-process Jupyter server
writes its ``jpserver-<pid>.json`` into the (test) runtime dir, and jupyter_client sets the
kernel's ``JPY_PARENT_PID`` to this process's pid, which is that file's ``pid``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from vsphere_kale.playground.system import LocalSystem

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "cluster-health.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[LocalSystem]:
    with LocalSystem(tmp_path / "system") as running:
        yield running


@pytest.fixture
def jp_server_config(system: LocalSystem) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}},
        "VsphereKaleApp": system.jupyter_traits(),
    }


def test_notebook_explains_both_problems() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for needle in (
        "ReadWriteMany",
        "kale-marshal-pvc",
        "PodSecurityPolicy",
        "Pod Security Admission",
    ):
        assert needle in text
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == ["from vsphere_kale.jupyter.widget import HealthPanel\n\nHealthPanel()"]


async def test_notebook_runs_and_renders_the_panel(
    jp_serverapp: Any, http_server: Any, tmp_path: Path
) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    runner = NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    # Raises CellExecutionError if the cell raises.
    await runner.async_execute()
    (cell,) = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for o in cell.outputs if o.output_type == "error"]
    (display,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert WIDGET_VIEW in display.data
    # The saved widget state holds what the panel rendered: the stuck claim and the
    # pod-security row, computed from the sandbox through the server extension.
    state = json.dumps(nb.metadata["widgets"][WIDGET_STATE]["state"])
    assert "wf-1-kale-marshal-pvc" in state
    assert "rwx-on-block-class" in state
    assert "vsk-podsecurity" in state
    assert "from the vsphere-kale service" in state
    assert "Could not read the status" not in state
