"""HealthPanel rendering and server discovery, without a server (pure functions + a client
object that returns fixed documents, which is the panel's documented injection point)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vsphere_kale.jupyter.widget import (
    HealthPanel,
    count_problems,
    decide_primary_action,
    describe_expiry,
    recreatable_claims,
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
    assert "2 problems" in out and "from the vsphere-kale service" in out
    assert "admin API" not in out  # a data scientist's words, not ours
    assert "read-only" in render_badge({**STATUS, "source": "local"})
    healthy_ps = {**STATUS["podSecurity"], "verdict": "ok"}
    assert ": 1 problem<" in render_badge({**STATUS, "podSecurity": healthy_ps})


def test_problem_count_matches_the_badges_whatever_the_problems_list_says() -> None:
    # The count is read from the rows the panel draws, so the same document always gives the
    # same number and it equals the red/orange badges shown.
    assert count_problems(STATUS) == 2
    assert count_problems({**STATUS, "problems": []}) == 2
    assert count_problems({**STATUS, "problems": [{}] * 5}) == 2
    pending = {**STATUS["pvcs"][1], "verdict": "pending"}
    assert count_problems({**STATUS, "pvcs": [*STATUS["pvcs"], pending]}) == 3
    unmanaged = {**STATUS["podSecurity"], "verdict": "unmanaged"}
    assert count_problems({**STATUS, "podSecurity": unmanaged}) == 1


def test_names_and_classes_never_wrap_mid_word() -> None:
    out = render_pvc_table(STATUS["pvcs"])
    # every name/class cell is nowrap with an ellipsis, the full value in a tooltip
    assert out.count("white-space:nowrap;overflow:hidden;text-overflow:ellipsis") >= 10
    assert 'title="wf-1-kale-marshal-pvc"' in out
    assert 'title="vsan-default-storage-policy"' in out


def test_ca_expiry_is_said_in_days_with_the_exact_time_in_a_tooltip() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    assert "expires in 364 days" in describe_expiry("2027-11-25T00:00:00Z", now=now)
    assert 'title="2027-11-25T00:00:00Z"' in describe_expiry("2027-11-25T00:00:00Z", now=now)
    assert "expired 2 days ago" in describe_expiry("2026-11-24T00:00:00Z", now=now)
    assert "expires in 1 day" in describe_expiry("2026-11-27T00:00:00Z", now=now)
    assert "valid until not-a-time" in describe_expiry("not-a-time", now=now)
    out = render_webhook(STATUS["webhook"], now=now)
    assert "expires in 364 days" in out and "valid until 2027" not in out


def test_pvc_table_has_one_row_per_claim_with_hint_only_for_bad_ones() -> None:
    out = render_pvc_table(STATUS["pvcs"])
    assert out.count('class="vsk-pvc-row"') == 2
    assert 'data-pvc="wf-1-kale-marshal-pvc"' in out
    assert "Kale marshal volume" in out
    assert "rwx-on-block-class" in out and "vsan-default-storage-policy" in out
    # Hints are escaped: a claim name or message can never inject markup.
    assert "&lt;now&gt;" in out and "<now>" not in out
    assert out.count("Delete it and re-run") == 1


def test_pvc_table_empty_namespace_says_so() -> None:
    assert "No PersistentVolumeClaims" in render_pvc_table([])


def test_pod_security_row_names_what_is_required_and_the_fix() -> None:
    out = render_pod_security(STATUS["podSecurity"])
    assert 'data-verdict="missing"' in out
    assert "psp:vmware-system-privileged" in out and "— missing" in out
    assert "Mode: <code>PodSecurityPolicy</code>" in out
    # one line per fact: the mode and what it needs are separate lines
    assert out.count("<div>") == 4
    assert "Fix:" in out and "Click Reconcile." in out
    ok = render_pod_security({**STATUS["podSecurity"], "verdict": "ok", "present": True})
    assert "Fix:" not in ok and "— present" in ok
    assert 'data-verdict="unknown"' in render_pod_security(None)


def test_webhook_row_facts() -> None:
    out = render_webhook(STATUS["webhook"])
    assert "nfs-client" in out and " exists" in out and 'title="2027-11-25T00:00:00Z"' in out
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
    ("outcome", "colour"),
    [
        ("conflict", "#c62828"),
        ("failed", "#c62828"),
        ("created", "#1e7e34"),
        ("skipped", "#616161"),
        ("something-new", "#616161"),
    ],
)
def test_reconcile_outcome_colours_are_consistent(outcome: str, colour: str) -> None:
    # A conflict is never green, and an outcome the panel does not know is not assumed good.
    out = render_reconcile_result({"results": [{"namespace": "a", "outcome": outcome}]})
    assert f"background:{colour}" in out


def test_recreate_is_offered_only_for_stuck_claims_an_admin_can_fix() -> None:
    assert recreatable_claims(STATUS) == ["wf-1-kale-marshal-pvc"]
    assert recreatable_claims({**STATUS, "canReconcile": False}) == []
    assert recreatable_claims({**STATUS, "source": "local"}) == []
    bound = {**STATUS["pvcs"][0], "phase": "Bound"}
    assert recreatable_claims({**STATUS, "pvcs": [bound]}) == []
    missing_class = {**STATUS["pvcs"][0], "verdict": "class-missing", "storageClass": "standard"}
    assert recreatable_claims({**STATUS, "pvcs": [missing_class]}) == ["wf-1-kale-marshal-pvc"]


def test_primary_action_is_what_fixes_the_worst_problem() -> None:
    assert decide_primary_action(STATUS) == "recreate"
    ok_pvcs = {**STATUS, "pvcs": [STATUS["pvcs"][1]]}
    assert decide_primary_action(ok_pvcs) == "reconcile"
    ok_ps = {**STATUS["podSecurity"], "verdict": "ok"}
    assert decide_primary_action({**ok_pvcs, "podSecurity": ok_ps}) == "none"


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

    def recreate_pvc(self, name: str) -> dict[str, Any]:
        self.calls.append(f"recreate {name}")
        return {"name": name, "outcome": "recreated", "message": "Now on nfs-client."}

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


def test_recreate_asks_for_confirmation_then_recreates_and_refreshes() -> None:
    client = FixedClient(STATUS)
    panel = HealthPanel(client)
    (row,) = panel.recreate_box.children
    ask = row.children[-1]
    assert ask.description == "Recreate on nfs-client"
    ask.click()
    assert client.calls == ["status"]  # nothing happens before the confirmation
    yes, no = row.children[-2], row.children[-1]
    no.click()
    assert row.children[-1].description == "Recreate on nfs-client"
    row.children[-1].click()
    row.children[-2].click()
    assert client.calls == ["status", "recreate wf-1-kale-marshal-pvc", "status"]
    assert "Now on nfs-client." in panel.result.value
    assert yes.description == "Yes, recreate it"


def test_reconcile_is_not_the_highlighted_button_when_pod_security_is_ok() -> None:
    ok_ps = {**STATUS["podSecurity"], "verdict": "ok"}
    panel = HealthPanel(FixedClient({**STATUS, "podSecurity": ok_ps}))
    assert panel.reconcile_button.button_style == ""
    panel = HealthPanel(FixedClient({**STATUS, "pvcs": [STATUS["pvcs"][1]]}))
    assert panel.reconcile_button.button_style == "warning"
