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
    recreate_refusals,
    render_badge,
    render_pod_security,
    render_pvc_table,
    render_reconcile_result,
    render_recreate_result,
    render_webhook,
)
from vsphere_kale.jupyter.widget_client import ServerRef, WidgetClientError, decide_server
from vsphere_kale.jupyter.widget_render import kube_words, prose, render_updated

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
            "severity": "error",
            "message": "It asks for ReadWriteMany on a block class.",
            "hint": "Delete it and re-run the pipeline <now>",
            "recreateRefusal": None,
        },
        {
            "name": "data",
            "accessModes": ["ReadWriteOnce"],
            "storageClass": "vsan-default-storage-policy",
            "phase": "Bound",
            "kaleMarshal": False,
            "verdict": "ok",
            "severity": None,
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
        "severity": "error",
        "message": "Pods cannot start.",
        "hint": "Click Reconcile.",
    },
    "webhook": {
        "configured": True,
        "rwxStorageClass": "nfs-client",
        "rwxClassExists": True,
        "caBundleNotAfter": "2027-11-25T00:00:00Z",
        "verdict": "ok",
        "severity": None,
        "message": "Webhook configured.",
        "hint": "",
    },
    "problems": [
        {"component": "pvc", "object": "wf-1-kale-marshal-pvc", "severity": "error"},
        {"component": "podSecurity", "object": "alice", "severity": "error"},
    ],
}


STATUS_NAMES = ["alice", "wf-1-kale-marshal-pvc", "vsan-default-storage-policy", "nfs-client"]


def test_badge_shows_overall_namespace_count_and_source() -> None:
    out = render_badge(STATUS)
    assert 'data-overall="broken"' in out
    assert "BROKEN" in out and 'title="alice"' in out and ">alice</span>" in out
    assert '<span class="vsk-count"' in out and ">2 problems<" in out
    assert "from the vsphere-kale service" in out
    assert "admin API" not in out  # a data scientist's words, not ours
    assert "read-only" in render_badge({**STATUS, "source": "local"})
    healthy_ps = {**STATUS["podSecurity"], "verdict": "ok", "severity": None}
    assert ">1 problem<" in render_badge({**STATUS, "podSecurity": healthy_ps})


def test_problem_count_matches_the_badges_whatever_the_problems_list_says() -> None:
    # The count is read from the rows the panel draws, so the same document always gives the
    # same number and it equals the red/orange badges shown.
    assert count_problems(STATUS) == 2
    assert count_problems({**STATUS, "problems": []}) == 2
    assert count_problems({**STATUS, "problems": [{}] * 5}) == 2
    pending = {**STATUS["pvcs"][1], "verdict": "pending", "severity": "warning"}
    assert count_problems({**STATUS, "pvcs": [*STATUS["pvcs"], pending]}) == 3
    # A claim that is Pending for a few seconds while its volume is made is "info" for the
    # service (the overall stays healthy): no orange badge, not counted.
    young = {**pending, "severity": "info"}
    assert count_problems({**STATUS, "pvcs": [*STATUS["pvcs"], young]}) == 2
    unmanaged = {**STATUS["podSecurity"], "verdict": "unmanaged", "severity": None}
    assert count_problems({**STATUS, "podSecurity": unmanaged}) == 1
    # A document without severities (an older service): the verdict decides.
    bare = {**STATUS, "pvcs": [{k: v for k, v in STATUS["pvcs"][0].items() if k != "severity"}]}
    assert count_problems(bare) == 2


def test_the_count_equals_the_problem_badges_drawn() -> None:
    drawn = "".join(
        (
            render_pvc_table(STATUS["pvcs"]),
            render_pod_security(STATUS["podSecurity"]),
            render_webhook(STATUS["webhook"]),
        )
    )
    assert drawn.count('data-problem="true"') == count_problems(STATUS) == 2


def test_names_and_classes_never_wrap_mid_word() -> None:
    out = render_pvc_table(STATUS["pvcs"])
    # every name and class is one no-wrap piece, cut with an ellipsis, the value in a tooltip
    cut = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
    assert out.count('class="vsk-name"') == 4 and out.count(cut) == 4
    assert 'title="wf-1-kale-marshal-pvc"' in out and ">wf-1-kale-marshal-pvc</span>" in out
    assert 'title="vsan-default-storage-policy"' in out


def test_names_inside_sentences_are_kept_whole() -> None:
    # A browser may break a line after any hyphen of running text ("wf-1-kale-/marshal-pvc").
    out = prose("Claim wf-1-kale-marshal-pvc is on vsan-default-storage-policy.", STATUS_NAMES)
    assert '<span class="vsk-name" style="white-space:nowrap">wf-1-kale-marshal-pvc</span>' in out
    assert 'white-space:nowrap">vsan-default-storage-policy</span>' in out
    assert prose("a <b> c", STATUS_NAMES) == "a &lt;b&gt; c"
    # the longer of two overlapping names wins
    assert 'nowrap">nfs-client-2</span>' in prose("on nfs-client-2", ["nfs-client", "nfs-client-2"])


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "Rolebinding vsphere-kale-psp grants clusterrole/psp:x.",
            "RoleBinding vsphere-kale-psp grants ClusterRole psp:x.",
        ),
        (
            "create rolebinding alice/b -> clusterrole/c",
            "create RoleBinding alice/b -> ClusterRole c",
        ),
        (
            "binding my-rolebinding and rolebindings.rbac",
            "binding my-rolebinding and rolebindings.rbac",
        ),
    ],
)
def test_kubernetes_kinds_are_cased_as_kubernetes_does(text: str, said: str) -> None:
    assert kube_words(text) == said


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
    # The pill says it in words; the code stays in data-verdict and the tooltip.
    assert 'data-verdict="rwx-on-block-class"' in out and ">cannot bind<" in out
    assert "ReadWriteMany</span>" in out and "· Pending" in out
    # Hints are escaped: a claim name or message can never inject markup.
    assert "&lt;now&gt;" in out and "<now>" not in out
    assert out.count("Delete it and re-run") == 1
    assert out.count("<details>") == 1  # the service's "why" for the stuck claim only


def test_a_claim_the_panel_can_recreate_points_at_the_button() -> None:
    out = render_pvc_table(
        STATUS["pvcs"], recreatable=["wf-1-kale-marshal-pvc"], target_class="nfs-client"
    )
    assert "<b>Recreate on " in out and 'title="nfs-client"' in out
    assert "Delete it and re-run" not in out


def test_pvc_table_empty_namespace_says_so() -> None:
    assert "No PersistentVolumeClaims" in render_pvc_table([])


def test_pod_security_row_names_what_is_required_and_the_fix() -> None:
    out = render_pod_security(STATUS["podSecurity"])
    assert 'data-verdict="missing"' in out
    assert 'title="psp:vmware-system-privileged"' in out and "(missing)" in out
    assert "Mode: PodSecurityPolicy" in out
    # one line per fact: mode, what it needs, why, the fix
    assert out.count("<div>") == 4
    assert "Fix:" in out and "Click Reconcile." in out
    ok = render_pod_security(
        {**STATUS["podSecurity"], "verdict": "ok", "severity": None, "present": True}
    )
    # When fine, the service's sentence would only say "present" a second time.
    assert "Fix:" not in ok and "(present)" in ok and "Pods cannot start." not in ok
    assert ok.count("<div>") == 2
    assert 'data-verdict="unknown"' in render_pod_security(None)


def test_pod_security_labels_one_per_line() -> None:
    psa = {
        "mode": "psa",
        "required": "labels pod-security.kubernetes.io/enforce=baseline, "
        "pod-security.kubernetes.io/warn=restricted",
        "present": True,
        "verdict": "ok",
        "severity": None,
        "message": "namespace alice has the pod-security labels.",
    }
    out = render_pod_security(psa)
    assert "Mode: Pod Security Admission" in out and "Needs these labels (present):" in out
    assert '<div><span class="vsk-name" title="pod-security.kubernetes.io/enforce=baseline"' in out
    assert '<div><span class="vsk-name" title="pod-security.kubernetes.io/warn=restricted"' in out
    assert "has the pod-security labels" not in out


def test_webhook_row_facts() -> None:
    out = render_webhook(STATUS["webhook"])
    assert 'title="nfs-client"' in out and "(exists)" in out
    assert 'title="2027-11-25T00:00:00Z"' in out
    assert "Webhook configured." not in out  # the service's sentence only when something is wrong
    bad = render_webhook(
        {
            **STATUS["webhook"],
            "verdict": "class-missing",
            "severity": "error",
            "rwxClassExists": False,
            "message": "Storage class nfs-client does not exist.",
            "hint": "Install the NFS provisioner.",
        }
    )
    assert "(does not exist)" in bad and "Install the NFS provisioner." in bad
    assert 'data-problem="true"' in bad and "background:#c62828" in bad


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
    assert 'data-outcome="created"' in out and "Reconcile <b>alice</b>" in out
    assert "<li>create RoleBinding alice/vsphere-kale-psp</li>" in out
    assert "nothing to do" in render_reconcile_result({"results": []})


def test_recreate_result_says_where_the_claim_went_in_words() -> None:
    out = render_recreate_result(
        {
            "namespace": "alice",
            "name": "wf-1-kale-marshal-pvc",
            "storageClass": "nfs-client",
            "originalStorageClass": "vsan-default-storage-policy",
            "message": "claim alice/wf-1-kale-marshal-pvc recreated on nfs-client (was x)",
        }
    )
    assert ">wf-1-kale-marshal-pvc</span> on <span" in out
    assert ">vsan-default-storage-policy</span>)" in out and "It is empty" in out
    assert "claim alice/" not in out  # the log sentence is not repeated


def test_updated_time_is_a_clock_time_with_the_details_in_the_tooltip() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 26, 14, 2, 11, tzinfo=dt.timezone.utc)
    out = render_updated({"generatedAt": "2026-11-26T14:02:10Z"}, now=now)
    assert ">Last updated at 14:02:11<" in out
    assert 'title="2026-11-26 14:02:11 UTC (the service answered at 2026-11-26T14:02:10Z)"' in out


@pytest.mark.parametrize(
    ("outcome", "colour"),
    [
        ("conflict", "#b26a00"),
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


def test_one_verdict_has_one_colour_in_every_row() -> None:
    # A pod-security conflict is a warning for the service: orange there and in Reconcile's
    # result alike.
    conflict = {**STATUS["podSecurity"], "verdict": "conflict", "severity": "warning"}
    assert "background:#b26a00" in render_pod_security(conflict)
    result = render_reconcile_result({"results": [{"namespace": "a", "outcome": "conflict"}]})
    assert "background:#b26a00" in result
    assert "#1e7e34" not in render_pod_security(conflict) + result


def test_recreate_is_offered_only_for_stuck_claims_an_admin_can_fix() -> None:
    assert recreatable_claims(STATUS) == ["wf-1-kale-marshal-pvc"]
    assert recreatable_claims({**STATUS, "canReconcile": False}) == []
    assert recreatable_claims({**STATUS, "source": "local"}) == []
    bound = {**STATUS["pvcs"][0], "phase": "Bound"}
    assert recreatable_claims({**STATUS, "pvcs": [bound]}) == []
    missing_class = {**STATUS["pvcs"][0], "verdict": "class-missing", "storageClass": "standard"}
    assert recreatable_claims({**STATUS, "pvcs": [missing_class]}) == ["wf-1-kale-marshal-pvc"]


OPTED_OUT_REFUSAL = (
    "claim alice/wf-1-kale-marshal-pvc opts out of class rewriting "
    '(vsphere-kale.io/rewrite-storage-class: "false")'
)


def test_a_claim_the_service_would_refuse_says_why_instead_of_a_button() -> None:
    # Given the service's row: the claim cannot bind, but its rule refuses the recreation
    refused = {**STATUS["pvcs"][0], "recreateRefusal": OPTED_OUT_REFUSAL}
    doc = {**STATUS, "pvcs": [refused, STATUS["pvcs"][1]]}
    assert recreatable_claims(doc) == []
    assert recreate_refusals(doc) == {"wf-1-kale-marshal-pvc": OPTED_OUT_REFUSAL}
    # Then the panel draws no Recreate button, and the row says why in the service's words
    panel = HealthPanel(FixedClient(doc))
    assert panel.recreate_box.children == ()
    table = panel.pvc_table.value
    assert "Recreate is not offered:" in table and "opts out of class rewriting" in table
    assert 'class="vsk-recreate-refusal"' in table
    assert "Delete it and re-run the pipeline" in table  # the service's own fix stays
    # and the highlighted button is the next fix, not a Recreate that would answer 409
    assert decide_primary_action(doc) == "reconcile"
    assert panel.reconcile_button.button_style == "primary"
    # The same claim the service accepts gets the button and no refusal line
    panel = HealthPanel(FixedClient(STATUS))
    assert len(panel.recreate_box.children) == 1
    assert "vsk-recreate-refusal" not in panel.pvc_table.value
    # A caller who may not repair, or the local view: no button, and no refusal to explain
    for view in ({**doc, "canReconcile": False}, {**doc, "source": "local"}):
        assert recreate_refusals(view) == {}
        assert "vsk-recreate-refusal" not in HealthPanel(FixedClient(view)).pvc_table.value


def test_primary_action_is_what_fixes_the_worst_problem() -> None:
    assert decide_primary_action(STATUS) == "recreate"
    ok_pvcs = {**STATUS, "pvcs": [STATUS["pvcs"][1]]}
    assert decide_primary_action(ok_pvcs) == "reconcile"
    ok_ps = {**STATUS["podSecurity"], "verdict": "ok", "severity": None}
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
        return {
            "namespace": "alice",
            "name": name,
            "originalStorageClass": "vsan-default-storage-policy",
            "storageClass": "nfs-client",
            "uid": "u-2",
            "message": f"claim alice/{name} recreated on nfs-client (was x)",
        }

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
    assert ask.button_style == "primary"  # the worst problem's fix is the highlighted button
    assert panel.reconcile_button.button_style == ""
    ask.click()
    assert client.calls == ["status"]  # nothing happens before the confirmation
    yes, no = row.children[-2], row.children[-1]
    no.click()
    assert row.children[-1].description == "Recreate on nfs-client"
    row.children[-1].click()
    row.children[-2].click()
    assert client.calls == ["status", "recreate wf-1-kale-marshal-pvc", "status"]
    assert "</span> on <span" in panel.result.value and ">nfs-client</span>" in panel.result.value
    assert yes.description == "Yes, recreate it"


def test_reconcile_is_not_the_highlighted_button_when_pod_security_is_ok() -> None:
    ok_ps = {**STATUS["podSecurity"], "verdict": "ok", "severity": None}
    panel = HealthPanel(FixedClient({**STATUS, "podSecurity": ok_ps}))
    assert panel.reconcile_button.button_style == ""
    panel = HealthPanel(FixedClient({**STATUS, "pvcs": [STATUS["pvcs"][1]]}))
    assert panel.reconcile_button.button_style == "primary"


def test_a_level_too_low_is_a_badge_and_is_counted() -> None:
    """psa: ``podSecurity.needs`` with a mismatch raises ``overall``; the panel draws it as a
    badge and counts it, so a BROKEN header never says "0 problems"."""
    from vsphere_kale.jupyter.widget_render import count_problems, render_pod_security

    needs = {
        "level": "privileged",
        "configured": "baseline",
        "severity": "error",
        "mismatch": "notebook pods in alice get istio-init (NET_ADMIN, NET_RAW), which only "
        "privileged admits; psaLevel is baseline",
    }
    pod_security = {"mode": "psa", "verdict": "ok", "required": "", "needs": needs}
    status = {"overall": "broken", "pvcs": [], "podSecurity": pod_security, "webhook": {}}
    assert count_problems(status) == 1
    html = render_pod_security(pod_security)
    assert 'data-verdict="level-too-low"' in html and 'data-problem="true"' in html
    assert "level too low" in html and "which only privileged admits" in html
    # the same document without the mismatch: nothing counted, no badge
    calm = {**pod_security, "needs": {**needs, "mismatch": None, "severity": None}}
    assert count_problems({**status, "podSecurity": calm}) == 0
    assert "level-too-low" not in render_pod_security(calm)
