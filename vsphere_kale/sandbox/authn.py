"""Bearer-token authentication for the sandbox API server, and TokenReview / TokenRequest.

Three kinds of token, checked in this order:

- the admin token, user ``kubernetes-admin`` in ``system:masters`` (kubeadm's admin user);
- static tokens from the sandbox configuration (kube-apiserver's ``--token-auth-file``);
- service-account tokens the sandbox issues (TokenRequest, or
  :meth:`TokenRegistry.token_for_service_account`). Like kube's bound tokens they are JWTs
  (HS256 here, signed with a per-sandbox random key) carrying the ServiceAccount's namespace,
  name and uid, an audience and an expiry. They stop authenticating when the ServiceAccount
  is deleted, or deleted and recreated (the uid no longer matches), because every check
  reads the ServiceAccount from the store.

Every authenticated user gets ``system:authenticated``; no token is ``system:anonymous``
(the server decides that, this module only sees tokens). Not emulated: client certificates,
OIDC, legacy Secret-based service-account tokens, bound-object (pod/secret) invalidation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.sandbox.types import JSONObject, ObjectReader, ResourceRef, UserInfo

log = logging.getLogger(__name__)

SERVICE_ACCOUNTS = ResourceRef("", "serviceaccounts")

#: The API server's own audience: what kube-apiserver's ``--api-audiences`` defaults to
#: (the issuer). Tokens without it do not authenticate to the API, only to their audience.
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
ISSUER = API_AUDIENCE

ADMIN_USERNAME = "kubernetes-admin"
SUPERUSER_GROUP = "system:masters"
AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"

#: TokenRequest defaults and bounds of kube-apiserver (``--service-account-max-token-expiration``
#: unset): one hour by default, at least ten minutes.
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
#: Tokens minted for the installer and tests directly: long enough for any session.
DIRECT_TOKEN_SECONDS = 365 * 24 * 3600


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)


def with_authenticated(user: UserInfo) -> UserInfo:
    """``user`` with ``system:authenticated`` appended, as kube's authenticator union does."""
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(
        user.username, uid=user.uid, groups=(*user.groups, AUTHENTICATED), extra=user.extra
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class InvalidToken(Exception):
    """A token we cannot accept; the message is what TokenReview puts in ``status.error``."""


class TokenRegistry:
    """Who a bearer token is; answers TokenReview and issues TokenRequest tokens.

    ``reader`` is the store: service-account tokens are checked against the stored
    ServiceAccount on every use. ``clock`` is injectable so tests can expire tokens.
    """

    def __init__(
        self,
        reader: ObjectReader,
        *,
        admin_token: str | None = None,
        static_tokens: Mapping[str, UserInfo] | None = None,
        api_audiences: tuple[str, ...] = (API_AUDIENCE,),
        signing_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._static: dict[str, UserInfo] = {}
        self._api_audiences = api_audiences
        self._key = signing_key or secrets.token_bytes(32)
        self._clock = clock
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.add_static_token(self.admin_token, UserInfo(ADMIN_USERNAME, groups=(SUPERUSER_GROUP,)))
        for token, user in (static_tokens or {}).items():
            self.add_static_token(token, user)

    def add_static_token(self, token: str, user: UserInfo) -> None:
        """Accept ``token`` as ``user`` (plus ``system:authenticated``) from now on."""
        if not token:
            raise ValueError("a static token must not be empty")
        self._static[token] = with_authenticated(user)

    # -- authentication --

    def authenticate(self, token: str | None) -> UserInfo | None:
        """The user for ``token``; None for an unknown or invalid token (the server's 401).

        ``None`` in means no Authorization header: the caller treats that as anonymous;
        here it is simply not a valid token.
        """
        if not token:
            return None
        try:
            user, _ = self._authenticate(token, self._api_audiences)
        except InvalidToken as exc:
            log.debug("token rejected: %s", exc)
            return None
        return user

    def _authenticate(
        self, token: str, audiences: tuple[str, ...]
    ) -> tuple[UserInfo, tuple[str, ...]]:
        """(user, audiences the token is valid for) or InvalidToken."""
        static = self._static.get(token)
        if static is not None:
            # Static tokens are audience-agnostic in kube: valid for whatever was asked.
            return static, audiences
        claims = self._verify_jwt(token)
        token_audiences = tuple(str(a) for a in claims.get("aud") or [])
        matched = tuple(a for a in audiences if a in token_audiences)
        if not matched:
            raise InvalidToken(
                f"token audiences {json.dumps(list(token_audiences))} is invalid for the "
                f"target audiences {json.dumps(list(audiences))}"
            )
        k8s = claims.get("kubernetes.io") or {}
        namespace = str(k8s.get("namespace") or "")
        sa = k8s.get("serviceaccount") or {}
        name = str(sa.get("name") or "")
        uid = str(sa.get("uid") or "")
        stored = self._reader.get_object(SERVICE_ACCOUNTS, namespace, name)
        if stored is None:
            raise InvalidToken(f'serviceaccounts "{name}" not found')
        stored_uid = str((stored.get("metadata") or {}).get("uid") or "")
        if stored_uid != uid:
            raise InvalidToken(
                f"service account UID ({uid}) does not match stored UID ({stored_uid}): "
                "the ServiceAccount was recreated"
            )
        user = UserInfo(
            service_account_username(namespace, name),
            uid=uid,
            groups=service_account_groups(namespace),
        )
        return user, matched

    def _verify_jwt(self, token: str) -> Mapping[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("invalid bearer token")
        signed = f"{parts[0]}.{parts[1]}".encode("ascii", errors="replace")
        expected = _b64url(hmac.new(self._key, signed, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise InvalidToken(
                "invalid bearer token, square/go-jose: error in cryptographic primitive"
            )
        try:
            claims = json.loads(_unb64url(parts[1]))
        except (ValueError, binascii.Error) as exc:
            raise InvalidToken("invalid bearer token") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("invalid bearer token")
        now = self._clock()
        if float(claims.get("exp", 0)) < now:
            raise InvalidToken("invalid bearer token, Token has expired.")
        if float(claims.get("nbf", 0)) > now + 60:
            raise InvalidToken("invalid bearer token, Token is not valid yet.")
        return claims

    # -- issuing --

    def _mint(
        self, namespace: str, name: str, uid: str, *, audiences: tuple[str, ...], expires: int
    ) -> str:
        now = int(self._clock())
        header = {"alg": "HS256", "kid": "sandbox", "typ": "JWT"}
        claims = {
            "aud": list(audiences),
            "exp": expires,
            "iat": now,
            "iss": ISSUER,
            "nbf": now,
            "sub": service_account_username(namespace, name),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": uid},
            },
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = _b64url(
            hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        )
        return f"{signing_input}.{signature}"

    def _service_account_uid(self, namespace: str, name: str) -> str:
        stored = self._reader.get_object(SERVICE_ACCOUNTS, namespace, name)
        if stored is None:
            raise KubeNotFound(f'serviceaccounts "{name}" not found', status=404, reason="NotFound")
        return str((stored.get("metadata") or {}).get("uid") or "")

    def token_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = DIRECT_TOKEN_SECONDS
    ) -> str:
        """A token for a stored ServiceAccount, minted directly (installer, tests)."""
        uid = self._service_account_uid(namespace, name)
        expires = int(self._clock()) + expiration_seconds
        return self._mint(namespace, name, uid, audiences=self._api_audiences, expires=expires)

    def issue_token(self, namespace: str, sa_name: str, body: Mapping[str, Any]) -> JSONObject:
        """Answer ``POST .../serviceaccounts/<name>/token``: an authentication.k8s.io/v1
        TokenRequest with ``status.token`` and ``status.expirationTimestamp``."""
        uid = self._service_account_uid(namespace, sa_name)
        spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        audiences = tuple(str(a) for a in spec.get("audiences") or ()) or self._api_audiences
        raw_seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_EXPIRATION_SECONDS if raw_seconds is None else raw_seconds
        if (
            not isinstance(seconds, int)
            or isinstance(seconds, bool)
            or seconds < MIN_EXPIRATION_SECONDS
        ):
            raise KubeError(
                f'TokenRequest.authentication.k8s.io "{sa_name}" is invalid: '
                f"spec.expirationSeconds: Invalid value: {raw_seconds!r}: "
                "may not specify a duration less than 10 minutes",
                status=422,
                reason="Invalid",
            )
        expires = int(self._clock()) + seconds
        token = self._mint(namespace, sa_name, uid, audiences=audiences, expires=expires)
        log.info("issued a token for serviceaccount %s/%s (%ss)", namespace, sa_name, seconds)
        metadata = dict(body.get("metadata") or {})
        metadata.update(
            {"name": sa_name, "namespace": namespace, "creationTimestamp": _rfc3339(self._clock())}
        )
        out_spec: JSONObject = dict(spec)
        out_spec["audiences"] = list(audiences)
        out_spec["expirationSeconds"] = seconds
        out_spec.setdefault("boundObjectRef", None)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": metadata,
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": _rfc3339(expires)},
        }

    # -- TokenReview --

    def review_token(self, body: Mapping[str, Any]) -> JSONObject:
        """Answer an authentication.k8s.io/v1 TokenReview like kube-apiserver.

        A token that does not authenticate is not an error of the review: the answer is
        ``status.authenticated: false`` with ``status.error``. Only a review without
        ``spec.token`` is invalid (422).
        """
        spec = body.get("spec")
        token = spec.get("token") if isinstance(spec, Mapping) else None
        if not isinstance(token, str) or not token:
            raise KubeError(
                "TokenReview.authentication.k8s.io is invalid: spec.token: Required value",
                status=422,
                reason="Invalid",
            )
        assert isinstance(spec, Mapping)
        requested = tuple(str(a) for a in spec.get("audiences") or ())
        response: JSONObject = json.loads(json.dumps(dict(body)))
        response.setdefault("apiVersion", "authentication.k8s.io/v1")
        response.setdefault("kind", "TokenReview")
        response.setdefault("metadata", {})
        response["metadata"].setdefault("creationTimestamp", None)
        try:
            user, audiences = self._authenticate(token, requested or self._api_audiences)
        except InvalidToken as exc:
            response["status"] = {"authenticated": False, "user": {}, "error": f"[{exc}]"}
            if requested:
                response["status"]["audiences"] = []
            return response
        user_json: JSONObject = {"username": user.username, "groups": list(user.groups)}
        if user.uid:
            user_json["uid"] = user.uid
        if user.extra:
            user_json["extra"] = {k: list(v) for k, v in user.extra.items()}
        response["status"] = {
            "authenticated": True,
            "user": user_json,
            "audiences": list(audiences),
        }
        return response


def review_self(body: Mapping[str, Any], requesting_user: UserInfo) -> JSONObject:
    """Answer an authentication.k8s.io/v1 SelfSubjectReview (``kubectl auth whoami``)."""
    user_info: JSONObject = {"username": requesting_user.username}
    if requesting_user.uid:
        user_info["uid"] = requesting_user.uid
    user_info["groups"] = list(requesting_user.groups)
    if requesting_user.extra:
        user_info["extra"] = {k: list(v) for k, v in requesting_user.extra.items()}
    metadata = dict(body.get("metadata") or {})
    metadata.setdefault("creationTimestamp", None)
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": metadata,
        "status": {"userInfo": user_info},
    }
