"""Self-managed certificate rotation: the pure plan (the leader runs it: install/rotator.py).

The state lives in the cluster, in two objects, and every step is derived from it (a crashed
or replaced leader simply continues where the last one stopped):

- Secret ``vsphere-kale-tls`` (mounted by every replica): ``tls.crt``/``tls.key`` (served),
  ``ca.crt``/``ca.key`` (the CA that signed them), during a CA rollover also
  ``next-ca.crt``/``next-ca.key``, and the annotation ``vsphere-kale.io/ca-rollover-started``;
- the webhook configuration's ``caBundle`` (what the API server trusts).

The invariant: **the caBundle always holds the CA of every serving certificate a replica may
still be serving.** Replicas reload the mounted Secret a kubelet sync (up to ~1-2 minutes)
after it changes, so:

- serving certificate near expiry, CA fine: issue a new serving certificate from the same CA
  and update the Secret (``renew-serving``); the caBundle does not change;
- CA near expiry: (1) ``stage-ca`` generates the next CA into the Secret (``next-ca.*``;
  replicas ignore those keys), (2) ``publish-ca`` sets the caBundle to old + next CA, (3)
  ``promote-ca`` -- only once the bundle holds the next CA -- writes a serving certificate
  signed by it, makes it ``ca.*`` and records the time, (4) ``drop-old-ca`` removes the old
  CA from the bundle on a later run, once ``grace`` (default 5 minutes: a few kubelet sync
  periods) has passed since (3) or the old CA has expired.

Every write is conditional (the Secret by ``resourceVersion``, the webhook configuration by a
JSON-patch ``test`` of its resourceVersion), so two replicas that both believe they lead
cannot interleave steps: the loser re-reads and re-plans.

With cert-manager (``serve --no-cert-rotation``) none of this runs: cert-manager renews the
Secret, its cainjector the caBundle, and every replica still hot-reloads the mounted files.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from vsphere_kale.errors import CertificateError
from vsphere_kale.install import certs
from vsphere_kale.policy.text import format_time as format_time
from vsphere_kale.policy.text import parse_time as parse_time

if TYPE_CHECKING:  # the pure plan above needs no client; the rotator receives one
    pass

log = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
NEXT_CA_CERT = "next-ca.crt"
NEXT_CA_KEY = "next-ca.key"
ROLLOVER_ANNOTATION = "vsphere-kale.io/ca-rollover-started"
"""RFC 3339 time at which the Secret started serving a certificate of a new CA while the
previous CA stayed in the caBundle; removed when the previous CA is dropped."""
EXTRA_SANS_ANNOTATION = "vsphere-kale.io/extra-sans"
"""On the Secret: names and addresses the serving certificate carries besides the Service's
(comma-separated), e.g. ``127.0.0.1`` for a webhook called by URL. Kept in the Secret so that
every renewal -- by install or by whichever replica leads -- issues the same names."""

RENEW_BEFORE_DAYS = 30
CA_DAYS = 5 * 365
"""Five years: a CA change touches the caBundle, so it should be rare."""
SERVING_DAYS = 365
DEFAULT_GRACE = dt.timedelta(minutes=5)
"""How long the previous CA stays in the bundle after replicas were given a certificate of the
new CA: the kubelet refreshes mounted Secrets every sync period (1 minute by default) plus its
cache TTL, and the server re-reads its files every second."""

Action = Literal[
    "ok",
    "blocked",
    "stage-ca",
    "publish-ca",
    "promote-ca",
    "renew-serving",
    "repair-bundle",
    "drop-old-ca",
]


@dataclass(frozen=True)
class RotationPlan:
    """One step. ``bundle`` is the new caBundle (PEM) for the steps that change it."""

    action: Action
    reason: str
    bundle: bytes | None = None
    next_check: dt.datetime | None = None
    """When the plan may change without anyone writing (an expiry margin or the grace)."""

    @property
    def writes(self) -> bool:
        return self.action not in ("ok", "blocked")


# --- parsing (pure) ------------------------------------------------------------------------------


def _cert(pem: bytes | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def _pair_ok(cert_pem: bytes | None, key_pem: bytes | None) -> bool:
    if not cert_pem or not key_pem:
        return False
    try:
        certs.describe_pair(cert_pem, key_pem)
    except CertificateError:
        return False
    return True


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def parse_bundle(ca_bundle_pem: bytes | None) -> list[x509.Certificate]:
    """Every certificate of a caBundle; an empty or broken bundle is an empty list."""
    if not ca_bundle_pem:
        return []
    try:
        return certs.load_ca_bundle(ca_bundle_pem)
    except CertificateError:
        return []


def build_bundle(certificates: Sequence[x509.Certificate]) -> bytes:
    """PEM bundle, duplicates removed, order kept."""
    seen: set[bytes] = set()
    out = b""
    for cert in certificates:
        der = _der(cert)
        if der not in seen:
            seen.add(der)
            out += _pem(cert)
    return out


def signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    names = set(ext.value.get_values_for_type(x509.DNSName))
    return names | {str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)}


def serving_names(service_names: Sequence[str], annotations: Mapping[str, str]) -> list[str]:
    """The Service's DNS names plus the Secret's :data:`EXTRA_SANS_ANNOTATION` (order kept)."""
    extra = [v.strip() for v in annotations.get(EXTRA_SANS_ANNOTATION, "").split(",")]
    return list(dict.fromkeys([*service_names, *(v for v in extra if v)]))


def issue_serving_cert(
    ca_cert: bytes, ca_key: bytes, *, names: Sequence[str], days: int
) -> tuple[bytes, bytes]:
    """A serving certificate for ``names`` (DNS names and IP addresses; the Service's first)."""
    dns, ips = certs.split_sans(names)
    return certs.build_serving_cert(
        ca_cert,
        ca_key,
        dns_names=dns,
        ip_addresses=ips,
        days=days,
        common_name=dns[2] if len(dns) > 2 else None,
    )


def serving_problem(
    secret_data: Mapping[str, bytes],
    ca: x509.Certificate,
    *,
    dns_names: Sequence[str],
    now: dt.datetime,
    renew_before: dt.timedelta,
) -> str | None:
    """Why ``tls.crt``/``tls.key`` must be reissued from ``ca``, or None when they are fine."""
    tls = _cert(secret_data.get(TLS_CERT))
    if tls is None:
        return "the Secret has no readable tls.crt"
    if not _pair_ok(secret_data.get(TLS_CERT), secret_data.get(TLS_KEY)):
        return "tls.key does not belong to tls.crt"
    if not signed_by(tls, ca):
        return "tls.crt is not signed by ca.crt"
    missing = sorted(set(dns_names) - _sans(tls))
    if missing:
        return f"tls.crt does not name {', '.join(missing)}"
    if tls.not_valid_after_utc <= now + renew_before:
        return f"the serving certificate expires {format_time(tls.not_valid_after_utc)}"
    return None


# --- the plan (pure) ---------------------------------------------------------------------------


def plan_rotation(
    secret_data: Mapping[str, bytes],
    ca_bundle_pem: bytes | None,
    *,
    now: dt.datetime,
    renew_before_days: float = RENEW_BEFORE_DAYS,
    annotations: Mapping[str, str] | None = None,
    dns_names: Sequence[str] = (),
    grace: dt.timedelta = DEFAULT_GRACE,
) -> RotationPlan:
    """The next step for the Secret's data (decoded) and the webhook's caBundle (PEM).

    Apply it, read both objects again and plan again until the action is ``ok`` or
    ``blocked``: each step is small so that the order is the one that keeps the invariant.
    """
    renew_before = dt.timedelta(days=renew_before_days)
    notes = annotations or {}
    ca = _cert(secret_data.get(CA_CERT))
    if ca is None or not _pair_ok(secret_data.get(CA_CERT), secret_data.get(CA_KEY)):
        return RotationPlan(
            "blocked",
            "the Secret has no usable ca.crt/ca.key pair, so the serving certificate cannot be "
            "renewed here; run `vsphere-kale install` (or let cert-manager manage it and run "
            "serve with --no-cert-rotation)",
        )
    bundle = parse_bundle(ca_bundle_pem)
    in_bundle = {_der(c) for c in bundle}
    alive = [c for c in bundle if c.not_valid_after_utc > now]

    # A CA rollover in progress: publish the next CA, then switch to it.
    next_ca = _cert(secret_data.get(NEXT_CA_CERT))
    if next_ca is not None and _pair_ok(
        secret_data.get(NEXT_CA_CERT), secret_data.get(NEXT_CA_KEY)
    ):
        if _der(next_ca) not in in_bundle:
            return RotationPlan(
                "publish-ca",
                "the next CA is staged; the API server must trust it before any replica serves "
                "a certificate it signed",
                bundle=build_bundle([*alive, ca, next_ca]),
            )
        return RotationPlan(
            "promote-ca",
            "the API server trusts the next CA: serve a certificate signed by it",
        )

    if ca.not_valid_after_utc <= now + renew_before:
        return RotationPlan(
            "stage-ca", f"the CA expires {format_time(ca.not_valid_after_utc)}: start a rollover"
        )
    if _der(ca) not in in_bundle:
        return RotationPlan(
            "repair-bundle",
            "the webhook's caBundle does not hold the CA of the served certificate",
            bundle=build_bundle([*alive, ca]),
        )
    problem = serving_problem(
        secret_data, ca, dns_names=dns_names, now=now, renew_before=renew_before
    )
    if problem is not None:
        return RotationPlan("renew-serving", problem)

    tls = _cert(secret_data.get(TLS_CERT))
    assert tls is not None  # serving_problem() checked it
    renew_at = min(tls.not_valid_after_utc, ca.not_valid_after_utc) - renew_before
    started = parse_time(notes.get(ROLLOVER_ANNOTATION))
    others = [c for c in bundle if _der(c) != _der(ca)]
    if others or started is not None:
        expired = all(c.not_valid_after_utc <= now for c in others)
        if started is None or expired or now >= started + grace:
            return RotationPlan(
                "drop-old-ca",
                "every replica has had time to load the new certificate: the previous CA "
                "leaves the caBundle",
                bundle=build_bundle([ca]),
            )
        return RotationPlan(
            "ok",
            f"CA rollover in progress; the previous CA stays trusted until "
            f"{format_time(started + grace)}",
            next_check=min(started + grace, renew_at),
        )
    return RotationPlan(
        "ok",
        f"the serving certificate is valid until {format_time(tls.not_valid_after_utc)} and the "
        f"CA until {format_time(ca.not_valid_after_utc)}",
        next_check=renew_at,
    )


# --- what install does with existing material (pure) -------------------------------------------

InstallAction = Literal["reuse", "renew-serving", "new-ca"]


@dataclass(frozen=True)
class InstallCertPlan:
    action: InstallAction
    reason: str
    keep_in_bundle: tuple[bytes, ...] = ()
    """PEM of CAs that must stay trusted next to the (new) CA: the previous CA while replicas
    may still serve its certificate."""


def plan_install_certs(
    secret_data: Mapping[str, bytes] | None,
    ca_bundle_pem: bytes | None,
    *,
    now: dt.datetime,
    dns_names: Sequence[str],
    renew_before_days: float = RENEW_BEFORE_DAYS,
) -> InstallCertPlan:
    """Reuse the installed certificates unless they expire within ``renew_before_days``.

    A new CA keeps the previous one (while it is still valid) in the bundle, exactly like the
    leader's rollover; the leader drops it after the grace period.
    """
    renew_before = dt.timedelta(days=renew_before_days)
    if not secret_data:
        return InstallCertPlan("new-ca", "no TLS Secret yet: new CA and serving certificate")
    ca = _cert(secret_data.get(CA_CERT))
    if ca is None or not _pair_ok(secret_data.get(CA_CERT), secret_data.get(CA_KEY)):
        return InstallCertPlan(
            "new-ca", "the TLS Secret has no usable ca.crt/ca.key: new CA and certificate"
        )
    keep = tuple(
        _pem(c)
        for c in parse_bundle(ca_bundle_pem)
        if c.not_valid_after_utc > now and _der(c) != _der(ca)
    )
    if ca.not_valid_after_utc <= now + renew_before:
        old = (_pem(ca),) if ca.not_valid_after_utc > now else ()
        return InstallCertPlan(
            "new-ca",
            f"the CA expires {format_time(ca.not_valid_after_utc)}: new CA (the old one stays "
            "trusted until every replica has reloaded)",
            keep_in_bundle=old + keep,
        )
    problem = serving_problem(
        secret_data, ca, dns_names=dns_names, now=now, renew_before=renew_before
    )
    if problem is not None:
        return InstallCertPlan("renew-serving", f"{problem}: new serving certificate", keep)
    return InstallCertPlan("reuse", "certificates reused (valid for more than 30 days)", keep)


# --- the leader's loop (I/O) -------------------------------------------------------------------


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's ``data``, base64-decoded; a key that is not base64 is left out."""
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value)
        except (ValueError, TypeError):
            log.warning("secret key %s is not base64; ignored", key)
    return out


def _encode_data(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in sorted(data.items())}


def bundle_of(configuration: Mapping[str, Any] | None, *, webhook: str | None = None) -> bytes:
    """The (first) caBundle of a webhook configuration, decoded; b"" when absent."""
    for hook in (configuration or {}).get("webhooks") or []:
        if webhook is not None and hook.get("name") != webhook:
            continue
        raw = (hook.get("clientConfig") or {}).get("caBundle") or ""
        try:
            return base64.b64decode(raw)
        except (ValueError, TypeError):
            return b""
    return b""
