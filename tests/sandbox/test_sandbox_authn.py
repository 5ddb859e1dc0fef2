"""Bearer tokens of the sandbox API server: static, admin, and issued service-account tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.sandbox.authn import API_AUDIENCE, TokenRegistry, review_self
from vsphere_kale.sandbox.resources import Registry
from vsphere_kale.sandbox.store import Store
from vsphere_kale.sandbox.types import ResourceRef, UserInfo

NAMESPACES = ResourceRef("", "namespaces")
SERVICE_ACCOUNTS = ResourceRef("", "serviceaccounts")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store(Registry("psa"))
    store.create_object(NAMESPACES, None, {"metadata": {"name": "alice"}})
    store.create_object(SERVICE_ACCOUNTS, "alice", {"metadata": {"name": "default-editor"}})
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(store: Store, clock: Clock) -> TokenRegistry:
    return TokenRegistry(
        store,
        admin_token="admin-token",
        static_tokens={"alice-token": UserInfo("alice@example.com", groups=("team-a",))},
        clock=clock,
    )


def _sa_uid(store: Store) -> str:
    sa = store.get_object(SERVICE_ACCOUNTS, "alice", "default-editor")
    assert sa is not None
    return str(sa["metadata"]["uid"])


def test_static_and_admin_tokens(tokens: TokenRegistry) -> None:
    assert tokens.authenticate("alice-token") == UserInfo(
        "alice@example.com", groups=("team-a", "system:authenticated")
    )
    admin = tokens.authenticate("admin-token")
    assert admin is not None
    assert admin.username == "kubernetes-admin"
    assert admin.groups == ("system:masters", "system:authenticated")


@pytest.mark.parametrize("token", ["nope", "", None, "a.b.c", "alice-token "])
def test_unknown_tokens_do_not_authenticate(tokens: TokenRegistry, token: str | None) -> None:
    assert tokens.authenticate(token) is None


def test_generated_admin_token_is_random(store: Store) -> None:
    first, second = TokenRegistry(store), TokenRegistry(store)
    assert first.admin_token != second.admin_token
    assert len(first.admin_token) >= 32
    assert first.authenticate(second.admin_token) is None


def test_service_account_token(tokens: TokenRegistry, store: Store) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    user = tokens.authenticate(token)
    assert user == UserInfo(
        "system:serviceaccount:alice:default-editor",
        uid=_sa_uid(store),
        groups=("system:serviceaccounts", "system:serviceaccounts:alice", "system:authenticated"),
    )


def test_token_claims_look_like_kubes(tokens: TokenRegistry, store: Store) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "system:serviceaccount:alice:default-editor"
    assert claims["aud"] == [API_AUDIENCE]
    assert claims["kubernetes.io"]["serviceaccount"] == {
        "name": "default-editor",
        "uid": _sa_uid(store),
    }


def test_tampered_token_is_refused(tokens: TokenRegistry) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["kubernetes.io"]["namespace"] = "kube-system"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert tokens.authenticate(f"{header}.{forged}.{signature}") is None


def test_deleted_or_recreated_service_account_token_stops_working(
    tokens: TokenRegistry, store: Store
) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    store.delete_object(SERVICE_ACCOUNTS, "alice", "default-editor")
    assert tokens.authenticate(token) is None
    # Same name, new uid: the old token still names the old account.
    store.create_object(SERVICE_ACCOUNTS, "alice", {"metadata": {"name": "default-editor"}})
    assert tokens.authenticate(token) is None
    assert tokens.authenticate(tokens.token_for_service_account("alice", "default-editor"))


def test_token_for_missing_service_account(tokens: TokenRegistry) -> None:
    with pytest.raises(KubeNotFound, match='serviceaccounts "ghost" not found'):
        tokens.token_for_service_account("alice", "ghost")


# --- TokenRequest ---------------------------------------------------------------------------


def test_token_request_defaults(tokens: TokenRegistry, clock: Clock) -> None:
    answer = tokens.issue_token("alice", "default-editor", {"spec": {}})
    assert answer["kind"] == "TokenRequest"
    assert answer["apiVersion"] == "authentication.k8s.io/v1"
    assert answer["metadata"]["name"] == "default-editor"
    assert answer["spec"]["audiences"] == [API_AUDIENCE]
    assert answer["spec"]["expirationSeconds"] == 3600
    assert answer["status"]["expirationTimestamp"] == "2027-01-15T09:00:00Z"
    assert tokens.authenticate(answer["status"]["token"]) is not None
    clock.now += 3601
    assert tokens.authenticate(answer["status"]["token"]) is None


def test_token_request_validation(tokens: TokenRegistry) -> None:
    with pytest.raises(KubeError, match="less than 10 minutes") as caught:
        tokens.issue_token("alice", "default-editor", {"spec": {"expirationSeconds": 60}})
    assert caught.value.status == 422
    with pytest.raises(KubeNotFound):
        tokens.issue_token("alice", "ghost", {"spec": {}})


def test_token_for_another_audience_does_not_reach_the_api(tokens: TokenRegistry) -> None:
    answer = tokens.issue_token("alice", "default-editor", {"spec": {"audiences": ["vault"]}})
    token = answer["status"]["token"]
    assert tokens.authenticate(token) is None
    review = tokens.review_token({"spec": {"token": token, "audiences": ["vault", "other"]}})
    assert review["status"]["authenticated"] is True
    assert review["status"]["audiences"] == ["vault"]


# --- TokenReview ----------------------------------------------------------------------------


def _review(token: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, **spec},
    }


def test_token_review_of_a_service_account(tokens: TokenRegistry, store: Store) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    status = tokens.review_token(_review(token))["status"]
    assert status == {
        "authenticated": True,
        "user": {
            "username": "system:serviceaccount:alice:default-editor",
            "uid": _sa_uid(store),
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:alice",
                "system:authenticated",
            ],
        },
        "audiences": [API_AUDIENCE],
    }


def test_token_review_of_a_static_token_echoes_audiences(tokens: TokenRegistry) -> None:
    answer = tokens.review_token(_review("alice-token", audiences=["vsphere-kale"]))
    assert answer["spec"]["token"] == "alice-token"
    assert answer["status"]["user"]["username"] == "alice@example.com"
    assert answer["status"]["audiences"] == ["vsphere-kale"]


def test_token_review_of_a_bad_token(tokens: TokenRegistry) -> None:
    status = tokens.review_token(_review("garbage"))["status"]
    assert status["authenticated"] is False
    assert status["error"]
    assert status["user"] == {}


def test_token_review_of_audience_mismatch_says_why(tokens: TokenRegistry) -> None:
    token = tokens.token_for_service_account("alice", "default-editor")
    status = tokens.review_token(_review(token, audiences=["vault"]))["status"]
    assert status["authenticated"] is False
    assert "is invalid for the target audiences" in status["error"]


def test_token_review_without_token_is_invalid(tokens: TokenRegistry) -> None:
    with pytest.raises(KubeError) as caught:
        tokens.review_token({"spec": {}})
    assert caught.value.status == 422
    assert "spec.token: Required value" in str(caught.value)


def test_self_subject_review_says_who_i_am(tokens: TokenRegistry) -> None:
    user = tokens.authenticate("alice-token")
    assert user is not None
    answer = review_self(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, user
    )
    assert answer["kind"] == "SelfSubjectReview"
    assert answer["status"]["userInfo"] == {
        "username": "alice@example.com",
        "groups": ["team-a", "system:authenticated"],
    }
