"""HealthPanel rendering and server discovery, without a server (pure functions + a client
object that returns fixed documents, which is the panel's documented injection point)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vsphere_kale.jupyter.widget import (
    HealthPanel,
    render_badge,
    render_pod_security,
    render_pvc_table,
    render_reconcile_result,
    render_webhook,
)
from vsphere_kale.jupyter.widget_client import ServerRef, WidgetClientError, decide_server

STATUS: dict[str, Any] = {
    "apiVersion": "vsphere-kale.io/v1alpha1",
    "kind": "NamespaceStatus",
    "namespace": "alice",
    "generatedAt": "2026-11-25T19:40:00Z",
    "source": "admin-api",
    "overall": "broken",
    "canReconcile": True,
    "pvcs": [
        {
            "name": "wf-1-kale-marshal-pvc",
            "accessModes": ["ReadWriteMany"],
            "storageClass": "vsan-default-storage-policy",
            "phase": "Pending",
            "capacity": "1Gi",
            "ageSeconds": 120,
            "kaleMarshal": True,
            "verdict": "rwx-on-block-class",
            "message": "It asks for ReadWriteMany on a block class.",
            "hint": "Delete it and re-run the pipeline <now>",
        },
        {
            "name": "data",
            "accessModes": ["ReadWriteOnce"],
            "storageClass": "vsan-default-storage-policy",
            "phase": "Bound",
            "kaleMarshal": False,
            "verdict": "ok",
            "message": "Bound.",
            "hint": "",
        },
    ],
    "podSecurity": {
        "mode": "psp",
        "managed": True,
        "required": "RoleBinding vsphere-kale-psp -> ClusterRole psp:vmware-system-privileged",
        "present": False,
        "verdict": "missing",
        "message": "Pods cannot start.",
        "hint": "Click Reconcile.",
    },
    "webhook": {
        "configured": True,
        "rwxStorageClass": "nfs-client",
        "rwxClassExists": True,
        "caBundleNotAfter": "2027-11-25T00:00:00Z",
        "verdict": "ok",
        "message": "Webhook configured.",
        "hint": "",
    },
    "problems": [
        {"component": "pvc", "object": "wf-1-kale-marshal-pvc", "severity": "error"},
        {"component": "podSecurity", "object": "alice", "severity": "error"},
    ],
}


def test_badge_shows_overall_namespace_count_and_source() -> None:
    out = render_badge(STATUS)
    assert 'data-overall="broken"' in out
    assert "BROKEN" in out and "<b>alice</b>" in out
    assert "2 problems" in out and "from the admin API" in out
    assert "read-only" in render_badge({**STATUS, "source": "local", "problems": [{}]})
    assert ": 1 problem<" in render_badge({**STATUS, "problems": [{}]})


def test_pvc_table_has_one_row_per_claim_with_hint_only_for_bad_ones() -> None:
    out = render_pvc_table(STATUS["pvcs"])
    assert out.count('class="vsk-pvc-row"') == 2
    assert 'data-pvc="wf-1-kale-marshal-pvc"' in out
    assert "(Kale marshal)" in out
    assert "rwx-on-block-class" in out and "vsan-default-storage-policy" in out
    # Hints are escaped: a claim name or message can never inject markup.
    assert "&lt;now&gt;" in out and "<now>" not in out
    assert out.count("Delete it and re-run") == 1


def test_pvc_table_empty_namespace_says_so() -> None:
    assert "No PersistentVolumeClaims" in render_pvc_table([])


def test_pod_security_row_names_what_is_required_and_the_fix() -> None:
    out = render_pod_security(STATUS["podSecurity"])
    assert 'data-verdict="missing"' in out
    assert "psp:vmware-system-privileged" in out and "(missing)" in out
    assert "Fix:" in out and "Click Reconcile." in out
    ok = render_pod_security({**STATUS["podSecurity"], "verdict": "ok", "present": True})
    assert "Fix:" not in ok and "(present)" in ok
    assert 'data-verdict="unknown"' in render_pod_security(None)


def test_webhook_row_facts() -> None:
    out = render_webhook(STATUS["webhook"])
    assert "nfs-client" in out and " exists" in out and "2027-11-25" in out
    bad = render_webhook(
        {
            **STATUS["webhook"],
            "verdict": "class-missing",
            "rwxClassExists": False,
            "hint": "Install the NFS provisioner.",
        }
    )
    assert "does not exist" in bad and "Install the NFS provisioner." in bad


def test_reconcile_result_lists_outcome_and_actions() -> None:
    out = render_reconcile_result(
        {
            "kind": "ReconcileResult",
            "results": [
                {
                    "namespace": "alice",
                    "outcome": "created",
                    "actions": ["create rolebinding alice/vsphere-kale-psp"],
                    "message": "Created the binding.",
                }
            ],
        }
    )
    assert 'data-outcome="created"' in out and "<b>alice</b>" in out
    assert "<li>create rolebinding alice/vsphere-kale-psp</li>" in out
    assert "nothing to do" in render_reconcile_result({"results": []})


@pytest.mark.parametrize(
    ("environ", "servers", "expected"),
    [
        # Kubeflow: NB_PREFIX wins, fixed port 8888, no token.
        (
            {"NB_PREFIX": "/notebook/alice/nb", "JPY_PARENT_PID": "7"},
            [{"pid": 7, "url": "http://localhost:9999/", "token": "t"}],
            ServerRef("http://127.0.0.1:8888/notebook/alice/nb/", ""),
        ),
        # The server whose pid launched the kernel, among several.
        (
            {"JPY_PARENT_PID": "42"},
            [
                {"pid": 41, "url": "http://localhost:8888/", "token": "a"},
                {"pid": 42, "url": "http://127.0.0.1:8890/lab-base", "token": "b"},
            ],
            ServerRef("http://127.0.0.1:8890/lab-base/", "b"),
        ),
        # Exactly one server and no parent match (e.g. kernel started by hand).
        (
            {},
            [{"pid": 5, "url": "http://localhost:8888/", "token": ""}],
            ServerRef("http://localhost:8888/", ""),
        ),
    ],
)
def test_decide_server(
    environ: dict[str, str], servers: list[dict[str, Any]], expected: ServerRef
) -> None:
    assert decide_server(environ, servers) == expected


@pytest.mark.parametrize(
    ("servers", "says"),
    [
        ([], "no running Jupyter server"),
        ([{"pid": 1, "url": "http://a/"}, {"pid": 2, "url": "http://b/"}], "2 Jupyter servers"),
    ],
)
def test_decide_server_failures_are_sentences(servers: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(WidgetClientError, match=says):
        decide_server({"JPY_PARENT_PID": "99"}, servers)


class FixedClient:
    """Returns fixed documents; counts calls."""

    def __init__(self, status: dict[str, Any], error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.calls: list[str] = []

    def fetch_status(self) -> dict[str, Any]:
        self.calls.append("status")
        if self.error:
            raise self.error
        return copy.deepcopy(self.status)

    def reconcile(self) -> dict[str, Any]:
        self.calls.append("reconcile")
        return {
            "kind": "ReconcileResult",
            "results": [
                {"namespace": "alice", "outcome": "created", "actions": [], "message": "Done."}
            ],
        }


def test_reconcile_button_follows_can_reconcile() -> None:
    panel = HealthPanel(FixedClient(STATUS))
    assert not panel.reconcile_button.disabled
    panel = HealthPanel(FixedClient({**STATUS, "canReconcile": False}))
    assert panel.reconcile_button.disabled
    assert "not reconcile" in panel.note.value


def test_local_source_explains_why_and_disables_reconcile() -> None:
    local = {
        **STATUS,
        "source": "local",
        "canReconcile": False,
        "fallbackReason": "admin API https://x is unreachable (refused)",
    }
    panel = HealthPanel(FixedClient(local))
    assert panel.reconcile_button.disabled
    assert "Read-only" in panel.note.value and "unreachable (refused)" in panel.note.value


def test_errors_are_sentences_in_the_panel_not_exceptions() -> None:
    panel = HealthPanel(FixedClient(STATUS, WidgetClientError("cannot reach the Jupyter server")))
    assert "Could not read the status: cannot reach the Jupyter server" in panel.error.value
    assert panel.reconcile_button.disabled
    assert "Traceback" not in panel.error.value


def test_reconcile_shows_result_then_refreshes() -> None:
    client = FixedClient(STATUS)
    panel = HealthPanel(client)
    panel.reconcile_button.click()
    assert client.calls == ["status", "reconcile", "status"]
    assert 'data-outcome="created"' in panel.result.value
