"""The TLS material ``install`` writes for self-managed certificates (pure, but for key
generation): which names the serving certificate carries, and whether the CA and the
certificate are reused, renewed or made anew (the plan is :mod:`.rotation`'s)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vsphere_kale.install import certs, render, rotation

__all__ = ["TlsMaterial", "build_certificates", "build_serving_names"]


@dataclass(frozen=True)
class TlsMaterial:
    """What install writes for self-managed certificates."""

    data: dict[str, bytes]
    """Secret data: ca.crt, ca.key, tls.crt, tls.key."""
    bundle: bytes
    """The webhook's caBundle (PEM): the CA, plus the previous one during a rollover."""
    annotations: dict[str, str]


def build_serving_names(
    namespace: str, annotations: Mapping[str, str], extras: Sequence[str]
) -> list[str]:
    """The Service's names, the installed extras (re-runs keep them) and ``extras``."""
    installed = rotation.serving_names([], annotations)
    return rotation.serving_names(
        certs.service_dns_names(render.NAME, namespace),
        {rotation.EXTRA_SANS_ANNOTATION: ",".join([*installed, *extras])},
    )


def build_certificates(
    plan: rotation.InstallCertPlan,
    existing: Mapping[str, bytes] | None,
    annotations: Mapping[str, str],
    *,
    namespace: str,
    now: dt.datetime,
    extras: Sequence[str] = (),
) -> TlsMaterial:
    """Generate (or reuse) the TLS material the install plan asks for."""
    names = build_serving_names(namespace, annotations, extras)
    service_names = certs.service_dns_names(render.NAME, namespace)
    notes = {k: v for k, v in annotations.items() if k == rotation.ROLLOVER_ANNOTATION}
    if len(names) > len(service_names):
        # The rotator renews with the same names (rotation.serving_names reads this back).
        notes[rotation.EXTRA_SANS_ANNOTATION] = ",".join(names[len(service_names) :])
    if plan.action == "new-ca" or existing is None:
        ca_cert, ca_key = certs.build_ca(
            f"vsphere-kale-ca ({namespace}, {rotation.format_time(now)})", days=rotation.CA_DAYS
        )
        notes.pop(rotation.ROLLOVER_ANNOTATION, None)
        if plan.keep_in_bundle:
            # The leader drops the previous CA from the bundle after the grace period.
            notes[rotation.ROLLOVER_ANNOTATION] = rotation.format_time(now)
    else:
        ca_cert, ca_key = existing[rotation.CA_CERT], existing[rotation.CA_KEY]
    if plan.action == "reuse" and existing is not None:
        tls_cert, tls_key = existing[rotation.TLS_CERT], existing[rotation.TLS_KEY]
    else:
        tls_cert, tls_key = rotation.issue_serving_cert(
            ca_cert, ca_key, names=names, days=rotation.SERVING_DAYS
        )
    data = {
        rotation.CA_CERT: ca_cert,
        rotation.CA_KEY: ca_key,
        rotation.TLS_CERT: tls_cert,
        rotation.TLS_KEY: tls_key,
    }
    bundle = rotation.build_bundle(
        rotation.parse_bundle(ca_cert)
        + [c for pem in plan.keep_in_bundle for c in rotation.parse_bundle(pem)]
    )
    return TlsMaterial(data, bundle, notes)
