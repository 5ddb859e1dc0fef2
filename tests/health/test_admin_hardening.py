"""Issue 10, findings 3, 4, 6 and 7 on the admin API: names, token floods, audiences, leaders.

The admin routes on the real HTTPS server, the real client against the sandbox (TokenReview,
SubjectAccessReview and the Lease are the sandbox's), real reconcilers for leadership.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from admission_helpers import encode, review_body
from kubernetes import client

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from reconcile_helpers import Reconcilers, reconcilers, wait_for
from test_adminapi import SETTINGS, AdminServer, OneShotReconciler, service_client

from vsphere_kale.health.adminapi import AdminService, Authorizer, ResultLike, build_admin_routes
from vsphere_kale.kube import Kube
from vsphere_kale.reconcile.leader import LEASE_NAME
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import AdminApiSettings, ServerSettings, Settings

STATUS = "/api/v1/namespaces/alice/status"


class CountingAuthorizer(Authorizer):
    """The real Authorizer; counts the TokenReviews it sends (to the real sandbox)."""

    reviews = 0

    def _token_review(self, token: str, audiences: list[str] | None) -> Any:
        self.reviews += 1
        return super()._token_review(token, audiences)


def routes_with(
    api: Kube, reconciler: Any, settings: Settings, authorizer: Authorizer
) -> list[Any]:
    """build_admin_routes, with our authorizer in the shared service."""
    routes = build_admin_routes(kube=api, settings=settings, reconciler=reconciler)
    service: AdminService = routes[0][2]["service"]
    service.authorizer = authorizer
    return routes


@pytest.fixture
def kubeflow(sandbox_factory: Callable[..., RunningSandbox]) -> RunningSandbox:
    return sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)


@pytest.fixture
def servers() -> Iterator[list[AdminServer]]:
    started: list[AdminServer] = []
    yield started
    for server in started:
        server.stop()


def start(
    servers: list[AdminServer],
    tmp_path: Path,
    running: RunningSandbox,
    *,
    settings: Settings = SETTINGS,
    reconciler: Any = None,
    **authorizer: Any,
) -> tuple[AdminServer, CountingAuthorizer, Kube]:
    """``reconciler``: an object, or a callable taking the service's ApiClient."""
    api = service_client(running)
    counting = CountingAuthorizer(api, **authorizer)
    if reconciler is None:
        reconciler = OneShotReconciler(api)
    elif isinstance(reconciler, type):
        reconciler = reconciler(api)
    routes = routes_with(api, reconciler, settings, counting)
    server = AdminServer(routes, tmp_path / f"certs{len(servers)}")
    servers.append(server)
    return server, counting, api


# --- finding 3: names --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice%0A", "alice%0D%0Aforged", "alice%00", "alice%0A%0A"])
def test_a_namespace_with_a_trailing_newline_is_400(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path, name: str
) -> None:
    server, _, _ = start(servers, tmp_path, kubeflow)
    code, body, _ = server.call(
        "POST", f"/api/v1/namespaces/{name}/reconcile", token=kubeflow.tokens["admin"]
    )
    assert code == 400 and "not a valid namespace name" in body["message"]


# --- finding 4: token floods ----------------------------------------------------------------


def test_a_flood_of_one_garbage_token_costs_one_review(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path
) -> None:
    server, authorizer, _ = start(servers, tmp_path, kubeflow)
    garbage = "garbage-" + "x" * 40

    def call(_: int) -> int:
        return server.call("GET", STATUS, token=garbage)[0]

    # 50 concurrent requests with the same bad token, then 50 more after the first answer:
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(call, range(50)))
    codes += [call(i) for i in range(50)]
    # never allowed, and one TokenReview for all of them (two: ours, then the API audience
    # while adminApi.requireAudience is off), shared while in flight and cached after.
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) >= 50
    assert authorizer.reviews <= 2
    # The cache holds a hash, never the token.
    assert garbage not in repr(authorizer.cache._entries)


def test_reviews_beyond_the_bound_get_429_with_retry_after(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path
) -> None:
    server, authorizer, _ = start(servers, tmp_path, kubeflow, max_in_flight=1)
    # Given the only TokenReview slot taken (a review that has not answered yet),
    assert authorizer._slots.acquire(blocking=False)
    try:
        # a caller with a token we have not seen gets 429 and Retry-After, not a slow answer;
        code, body, headers = server.call("GET", STATUS, token=kubeflow.tokens["alice"])
        assert code == 429 and body["reason"] == "TooManyRequests"
        assert headers["Retry-After"] == "1"
    finally:
        authorizer._slots.release()
    # and once the slot is free the same caller is served.
    code, _, _ = server.call("GET", STATUS, token=kubeflow.tokens["alice"])
    assert code == 200


def test_tokenreview_failure_is_503_with_retry_after_and_not_cached(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path
) -> None:
    server, _, _ = start(servers, tmp_path, kubeflow)
    kubeflow.sandbox.faults.inject(verb="create", resource="tokenreviews", status=500, count=1)
    code, _, headers = server.call("GET", STATUS, token=kubeflow.tokens["alice"])
    assert code == 503 and headers["Retry-After"] == "1"
    # A failure is not a rejection: the next call asks again and succeeds.
    assert server.call("GET", STATUS, token=kubeflow.tokens["alice"])[0] == 200


@pytest.mark.parametrize("limit", [1])
def test_the_admin_api_has_its_own_concurrency_budget(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path, limit: int
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Blocking(OneShotReconciler):
        def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> ResultLike:
            entered.set()
            release.wait(20)
            return super().reconcile_now(namespace, timeout=timeout)

        def reconcile_all(self, *, timeout: float = 30.0) -> Sequence[ResultLike]:
            return super().reconcile_all(timeout=timeout)

    settings = replace(SETTINGS, server=ServerSettings(admin_max_in_flight=limit))
    server, _, _ = start(servers, tmp_path, kubeflow, settings=settings, reconciler=Blocking)
    token = kubeflow.tokens["alice"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(server.call, "POST", "/api/v1/namespaces/alice/reconcile", token=token)
        assert entered.wait(20)
        # While the one admin slot is busy, another admin call is refused at once...
        code, body, headers = server.call("GET", STATUS, token=token)
        assert code == 429 and headers["Retry-After"] == "1"
        assert body["reason"] == "TooManyRequests"
        # ...and admission on the same server is untouched.
        review = server.http.request(
            "POST",
            server.url + "/mutate/persistentvolumeclaims",
            body=encode(review_body(uid="u-admission")),
            headers={"Content-Type": "application/json"},
            retries=False,
        )
        assert review.status == 200 and b"u-admission" in review.data
        release.set()
        assert slow.result(30)[0] == 200
    assert server.call("GET", STATUS, token=token)[0] == 200


# --- finding 6: audience-bound tokens ------------------------------------------------------


def audience_token(running: RunningSandbox, audience: str) -> str:
    """What the PodDefault's projected volume gives a notebook: default-editor's token for
    ``audience`` (a TokenRequest, as the kubelet makes for projected tokens)."""
    core = client.CoreV1Api(running.api_client())
    answer = core.create_namespaced_service_account_token(
        "default-editor", "alice", {"spec": {"audiences": [audience], "expirationSeconds": 3600}}
    )
    return str(answer.status.token)


def api_token(running: RunningSandbox) -> str:
    core = client.CoreV1Api(running.api_client())
    answer = core.create_namespaced_service_account_token(
        "default-editor", "alice", {"spec": {"expirationSeconds": 3600}}
    )
    return str(answer.status.token)


def test_audience_tokens_are_accepted_and_api_tokens_refused_when_required(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path
) -> None:
    strict = replace(SETTINGS, admin_api=AdminApiSettings(require_audience=True))
    server, _, _ = start(servers, tmp_path, kubeflow, settings=strict, require_audience=True)
    # A token minted for vsphere-kale authenticates (403 or 200: RBAC decides, not 401),
    code, _, _ = server.call("GET", STATUS, token=audience_token(kubeflow, "vsphere-kale"))
    assert code in (200, 403)
    # one for the Kubernetes API (what a notebook has by default) is refused,
    code, body, _ = server.call("GET", STATUS, token=api_token(kubeflow))
    assert code == 401 and body["reason"] == "Unauthorized"
    # and so is one for some other audience.
    code, _, _ = server.call("GET", STATUS, token=audience_token(kubeflow, "other"))
    assert code == 401


def test_api_tokens_still_work_during_migration(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path
) -> None:
    server, _, _ = start(servers, tmp_path, kubeflow)
    code, _, _ = server.call("GET", STATUS, token=api_token(kubeflow))
    assert code in (200, 403)


# --- finding 7: only the leader writes -------------------------------------------------------


@pytest.fixture
def started() -> Iterator[Reconcilers]:
    with reconcilers() as group:
        yield group


def test_a_follower_answers_503_with_the_leader_and_writes_nothing(
    kubeflow: RunningSandbox, servers: list[AdminServer], tmp_path: Path, started: Reconcilers
) -> None:
    leader = started.start(kubeflow, identity="replica-a", token=kubeflow.admin_token)
    follower = started.start(
        kubeflow, identity="replica-b", token=kubeflow.admin_token, wait_leader=False
    )
    assert leader.is_leader() and not follower.is_leader()
    wait_for("follower saw the lease", lambda: follower.leader_identity() == "replica-a")
    server, _, _ = start(servers, tmp_path, kubeflow, reconciler=follower)
    events_before = len(
        client.CoreV1Api(kubeflow.api_client()).list_namespaced_event("alice").items
    )

    code, body, headers = server.call(
        "POST", "/api/v1/namespaces/alice/reconcile", token=kubeflow.tokens["admin"]
    )

    assert code == 503 and headers["Retry-After"] == "1"
    assert "replica-a" in body["message"] and headers["X-Vsphere-Kale-Leader"] == "replica-a"
    code, _, _ = server.call("POST", "/api/v1/reconcile", token=kubeflow.tokens["admin"])
    assert code == 503
    # The follower wrote nothing (the leader's own writes are Events too: compare counts
    # only after the leader settled).
    leader.reconcile_now("alice")
    events_after = client.CoreV1Api(kubeflow.api_client()).list_namespaced_event("alice").items
    assert all(e.reporting_instance != "replica-b" for e in events_after)
    assert len(events_after) >= events_before


def test_lease_transitions_count_takeovers(kubeflow: RunningSandbox, started: Reconcilers) -> None:
    first = started.start(kubeflow, identity="replica-a", token=kubeflow.admin_token)
    coordination = client.CoordinationV1Api(kubeflow.api_client())

    def lease() -> Any:
        return coordination.read_namespaced_lease(LEASE_NAME, "vsphere-kale")

    assert (lease().spec.lease_transitions or 0) == 0
    second = started.start(
        kubeflow, identity="replica-b", token=kubeflow.admin_token, wait_leader=False
    )
    # When the leader dies without releasing (kill -9), the follower takes over,
    first.stop(release_lease=False)
    wait_for("takeover", second.is_leader, timeout=15)
    # and the Lease counts the transition (it stayed 0 on main).
    assert lease().spec.holder_identity == "replica-b"
    assert lease().spec.lease_transitions == 1
