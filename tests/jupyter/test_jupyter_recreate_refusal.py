"""The namespace table offers Recreate only where the service would do it: through a real
Jupyter server (pytest-jupyter), the real admin API (``serve``) and the sandbox API server.

Given the seed's stuck Kale marshal claim (recreatable) and a claim that is just as stuck but
opts out of the rewrite, the status the extension answers carries the service's refusal for
the second only; the panel, fed by that server, draws one Recreate button and says why the
other has none; and the admin API, asked anyway, answers 409 with the very same sentence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tornado.httpclient import HTTPResponse

from vsphere_kale.jupyter.widget import HealthPanel
from vsphere_kale.jupyter.widget_client import JupyterHealthClient, ServerRef
from vsphere_kale.playground.system import LocalSystem

pytest_plugins = ["pytest_jupyter.jupyter_server"]

Fetch = Callable[..., Any]
MARSHAL = "wf-1-kale-marshal-pvc"
OPTED_OUT = "opted-out-data"
BLOCK = "vsan-default-storage-policy"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    with LocalSystem(tmp_path_factory.mktemp("system")) as running:
        # The claim goes through the webhook, which leaves it on the block class: it opts out.
        client.CoreV1Api(running.plane.api_client()).create_namespaced_persistent_volume_claim(
            "alice",
            {
                "metadata": {
                    "name": OPTED_OUT,
                    "annotations": {"vsphere-kale.io/rewrite-storage-class": "false"},
                },
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": BLOCK,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        yield running


@pytest.fixture
def jp_server_config(system: LocalSystem, tmp_path: Path) -> dict[str, Any]:
    assert system.running is not None
    token_file = tmp_path / "token"
    token_file.write_text(system.running.tokens["alice"])
    return {
        "ServerApp": {"jpserver_extensions": {"vsphere_kale.jupyter": True}, "token": ""},
        "VsphereKaleApp": {**system.jupyter_traits(), "token_file": str(token_file)},
    }


@pytest.fixture
def jp_auth_header() -> dict[str, str]:
    return {}  # Kubeflow-style server: no token; POSTs carry the XSRF pair


@pytest.fixture
def server(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> ServerRef:
    return ServerRef(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", "")


def rows(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in status["pvcs"]}


async def test_an_opted_out_stuck_claim_has_a_refusal_and_no_recreate_action(
    jp_fetch: Fetch, server: ServerRef
) -> None:
    # When alice's panel asks for her namespace's status
    response: HTTPResponse = await jp_fetch("vsphere-kale", "api", "status")
    status = json.loads(response.body)
    assert status["source"] == "admin-api", status.get("fallbackReason")
    assert status["canReconcile"] is True
    by_name = rows(status)
    # Then both claims cannot bind where they are...
    assert by_name[MARSHAL]["verdict"] == by_name[OPTED_OUT]["verdict"] == "rwx-on-block-class"
    # ...but only the opted-out one carries the service's refusal
    refusal = by_name[OPTED_OUT]["recreateRefusal"]
    assert refusal == (
        f"claim alice/{OPTED_OUT} opts out of class rewriting "
        '(vsphere-kale.io/rewrite-storage-class: "false")'
    )
    assert by_name[MARSHAL]["recreateRefusal"] is None

    # And the panel drawn from that server offers Recreate for the marshal claim only
    panel = HealthPanel(JupyterHealthClient(server), refresh=False)
    await asyncio.to_thread(panel.refresh)
    assert panel.error.value == ""
    offered = [row.children[0].value for row in panel.recreate_box.children]
    assert len(offered) == 1 and MARSHAL in offered[0]
    table = panel.pvc_table.value
    opted_out_row = table[
        table.index(f'data-pvc="{OPTED_OUT}"') : table.index(f'data-pvc="{MARSHAL}"')
    ]
    assert (
        "Recreate is not offered:" in opted_out_row
        and "opts out of class rewriting" in opted_out_row
    )
    assert "Recreate is not offered" not in table[table.index(f'data-pvc="{MARSHAL}"') :]

    # And the admin API, asked anyway, refuses with the very sentence the row carries
    xsrf = next(
        header.split("=", 1)[1].split(";", 1)[0]
        for header in response.headers.get_list("Set-Cookie")
        if header.startswith("_xsrf=")
    )
    answer: HTTPResponse = await jp_fetch(
        "vsphere-kale",
        "api",
        "persistentvolumeclaims",
        OPTED_OUT,
        "recreate",
        method="POST",
        body="{}",
        headers={"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf},
        raise_error=False,
    )
    assert answer.code == 409, answer.body
    assert refusal in json.loads(answer.body)["message"]
    # Nothing was touched: the claim is still there, still opted out, still refused
    again = rows(json.loads((await jp_fetch("vsphere-kale", "api", "status")).body))
    assert again[OPTED_OUT]["recreateRefusal"] == refusal
