"""Small pure parts of the reconciler: results, Retry-After, settling, the informer adapters."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from vsphere_kale.kube import translate
from vsphere_kale.kube.informers import RawList, _WatchDropFilter
from vsphere_kale.kube.leaderelection import _Config
from vsphere_kale.reconcile.applier import NamespaceResult
from vsphere_kale.reconcile.caches import _at_least, _trim
from vsphere_kale.reconcile.leader import default_identity


def test_result_json_shape() -> None:
    result = NamespaceResult("alice", "created", ("create rolebinding x",), "Done.")
    assert result.to_json() == {
        "namespace": "alice",
        "outcome": "created",
        "actions": ["create rolebinding x"],
        "message": "Done.",
    }
    assert not result.failed and NamespaceResult("a", "failed", (), "x").failed


def _api_exception(status: int, headers: dict[str, str]) -> ApiException:
    exc = ApiException(status=status, reason="TooManyRequests")
    exc.headers = dict(headers)
    return exc


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "3"}, 3.0), ({"Retry-After": "soon"}, None), ({}, None)],
)
def test_retry_after_is_kept_in_translation(
    headers: dict[str, str], expected: float | None
) -> None:
    assert translate(_api_exception(429, headers), action="list x").retry_after == expected


@pytest.mark.parametrize(
    ("have", "want", "seen"),
    [("10", "9", True), ("9", "10", False), ("", "3", False), ("x", "3", True), ("1", "", True)],
)
def test_at_least(have: str, want: str, seen: bool) -> None:
    assert _at_least(have, want) is seen


def test_trim_keeps_what_planning_reads() -> None:
    ns: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "a",
            "uid": "u",
            "resourceVersion": "5",
            "labels": {"x": "y"},
            "annotations": {"owner": "a@example.com"},
            "managedFields": [{"manager": "k"}],
            "ownerReferences": [{"kind": "Profile"}],
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active", "conditions": []},
    }
    _trim(ns, "namespaces")
    assert ns == {
        "metadata": {
            "name": "a",
            "uid": "u",
            "resourceVersion": "5",
            "labels": {"x": "y"},
            "annotations": {"owner": "a@example.com"},
            # Kept: ownership (the Profile's controller reference) decides management.
            "ownerReferences": [{"kind": "Profile"}],
        },
        "status": {"phase": "Active"},
    }
    profile: dict[str, Any] = {
        "kind": "Profile",
        "metadata": {"name": "a", "resourceVersion": "3", "generation": 1},
        "spec": {"owner": {}},
    }
    _trim(profile, "profiles")
    assert profile == {"metadata": {"name": "a", "resourceVersion": "3"}}
    binding: dict[str, Any] = {
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "a", "labels": {}, "creationTimestamp": "t"},
        "roleRef": {"name": "r"},
        "subjects": [],
    }
    _trim(binding, "rolebindings")
    assert binding == {
        "metadata": {"name": "b", "namespace": "a", "labels": {}},
        "roleRef": {"name": "r"},
        "subjects": [],
    }


def test_raw_list_gives_dicts_and_marks_synced_at_first_watch() -> None:
    calls: list[dict[str, Any]] = []

    def fetch(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if kwargs.get("watch"):
            return "stream"
        return {"metadata": {"resourceVersion": "42"}, "items": [{"metadata": {}}]}

    lister = RawList(fetch, what="namespaces")
    listed = lister(label_selector="a=b")
    assert listed.items == [{"metadata": {}}] and listed.metadata.resource_version == "42"
    assert calls[0]["label_selector"] == "a=b" and "_request_timeout" in calls[0]
    assert not lister.synced.is_set() and lister.lists == 1
    assert lister(watch=True, _preload_content=False, resource_version="42") == "stream"
    assert lister.synced.is_set()
    assert calls[1]["allow_watch_bookmarks"] is True and "timeout_seconds" in calls[1]


def test_watch_keeps_dicts_but_tracks_resource_versions() -> None:
    # Watch picks its decoding from the list function's docstring; ":rtype: object" keeps
    # dicts and still records each event's resourceVersion (without it, it would resume
    # every reconnect from the initial list's version).
    from kubernetes.watch import Watch

    watch = Watch()
    rtype = watch.get_return_type(RawList(lambda **_: None, what="x"))
    event = watch.unmarshal_event(
        json.dumps(
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}}
        ),
        rtype,
    )
    assert event["object"] == {"metadata": {"name": "a", "resourceVersion": "7"}}
    assert watch.resource_version == "7"


def _record(msg: str, exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "kubernetes.informer.informer",
        logging.ERROR,
        __file__,
        1,
        msg,
        None,
        (type(exc), exc, None),
    )


def test_dropped_watch_becomes_one_info_line() -> None:
    record = _record("Unexpected error in watch loop; reconnecting", ProtocolError("ended"))
    assert _WatchDropFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == "watch connection ended (ProtocolError); resuming"


def test_failed_initial_list_says_why_in_one_line() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"message": 'profiles.kubeflow.org is forbidden: User "x" cannot list'})
    record = _record("Error during initial list; retrying", exc)
    _WatchDropFilter().filter(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "cannot list" in record.getMessage()


def test_other_errors_keep_their_traceback() -> None:
    record = _record("Unexpected error in watch loop; reconnecting", ValueError("bug"))
    _WatchDropFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(2, 2.0, 0.3), (2, 1.5, 1.5), (0, 0.5, 0.1), (2.5, 1.5, 0.3)],
)
def test_election_periods_are_validated(lease: Any, renew: float, retry: float) -> None:
    with pytest.raises(ValueError):
        _Config(
            None,  # type: ignore[arg-type]
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
            onstarted_leading=lambda: None,
            onstopped_leading=lambda: None,
        )


def test_identity() -> None:
    assert default_identity("vsphere-kale-7d9f-abcde") == "vsphere-kale-7d9f-abcde"
    a, b = default_identity(None), default_identity("")
    assert a != b and a.count("-") >= 1
