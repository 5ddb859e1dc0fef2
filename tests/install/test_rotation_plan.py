"""The rotation plan (pure): which step comes next, and that the sequence never leaves a
served certificate without its CA in the caBundle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pytest
from cryptography import x509

from vsphere_kale.install import certs, rotation
from vsphere_kale.install.rotation import plan_install_certs, plan_rotation

NOW = dt.datetime.now(dt.timezone.utc)
DNS = certs.service_dns_names("vsphere-kale", "vsphere-kale")
GRACE = dt.timedelta(minutes=5)


def material(*, ca_days: int = 1825, tls_days: int = 365) -> dict[str, bytes]:
    ca_cert, ca_key = certs.build_ca("test-ca", days=ca_days)
    tls_cert, tls_key = certs.build_serving_cert(ca_cert, ca_key, dns_names=DNS, days=tls_days)
    return {"ca.crt": ca_cert, "ca.key": ca_key, "tls.crt": tls_cert, "tls.key": tls_key}


def plan(
    data: Mapping[str, bytes],
    bundle: bytes,
    *,
    now: dt.datetime = NOW,
    annotations: Mapping[str, str] | None = None,
) -> rotation.RotationPlan:
    return plan_rotation(data, bundle, now=now, annotations=annotations, dns_names=DNS, grace=GRACE)


def test_healthy_material_needs_nothing_and_says_when_to_look_again() -> None:
    data = material()
    result = plan(data, data["ca.crt"])
    assert result.action == "ok" and not result.writes
    tls_expiry = certs.not_after(data["tls.crt"])
    assert result.next_check == tls_expiry - dt.timedelta(days=30)


@pytest.mark.parametrize(
    ("change", "action"),
    [
        ({"tls_days": 20}, "renew-serving"),
        ({"ca_days": 20, "tls_days": 20}, "stage-ca"),
    ],
)
def test_expiry_within_30_days_starts_the_right_step(change: dict[str, int], action: str) -> None:
    data = material(**change)
    assert plan(data, data["ca.crt"]).action == action


def test_a_serving_certificate_for_other_names_or_with_a_foreign_key_is_reissued() -> None:
    data = material()
    ca_cert, ca_key = data["ca.crt"], data["ca.key"]
    wrong_names = dict(data)
    wrong_names["tls.crt"], wrong_names["tls.key"] = certs.build_serving_cert(
        ca_cert, ca_key, dns_names=["elsewhere.svc"], days=365
    )
    assert plan(wrong_names, ca_cert).action == "renew-serving"
    foreign_key = dict(data, **{"tls.key": material()["tls.key"]})
    assert plan(foreign_key, ca_cert).action == "renew-serving"
    elsewhere = material()
    other_ca = dict(data, **{"tls.crt": elsewhere["tls.crt"], "tls.key": elsewhere["tls.key"]})
    assert "not signed" in plan(other_ca, ca_cert).reason


def test_a_bundle_without_the_serving_ca_is_repaired_keeping_valid_extras() -> None:
    data = material()
    other = material()["ca.crt"]
    result = plan(data, other)
    assert result.action == "repair-bundle"
    assert result.bundle is not None
    assert len(rotation.parse_bundle(result.bundle)) == 2
    assert plan(data, b"").action == "repair-bundle"  # an empty bundle too


def test_without_a_ca_key_rotation_is_blocked_with_a_sentence() -> None:
    data = material()
    del data["ca.key"]
    result = plan(data, data["ca.crt"])
    assert result.action == "blocked" and "vsphere-kale install" in result.reason


def test_the_previous_ca_leaves_the_bundle_only_after_the_grace_period() -> None:
    data = material()
    old = material()["ca.crt"]
    started = {rotation.ROLLOVER_ANNOTATION: rotation.format_time(NOW)}
    bundle = old + data["ca.crt"]
    waiting = plan(data, bundle, annotations=started, now=NOW + dt.timedelta(minutes=4))
    assert waiting.action == "ok" and "rollover in progress" in waiting.reason
    assert waiting.next_check is not None and waiting.next_check > NOW + dt.timedelta(minutes=4)
    later = plan(data, bundle, annotations=started, now=NOW + dt.timedelta(minutes=6))
    assert later.action == "drop-old-ca"
    assert later.bundle == data["ca.crt"]


# --- the whole sequence, simulated ------------------------------------------------------------


class Cluster:
    """The Secret, the caBundle, and what replicas may still serve (pure simulation)."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = dict(data)
        self.annotations: dict[str, str] = {}
        self.bundle = data["ca.crt"]
        self.served = [data["tls.crt"]]
        """Certificates some replica may be serving: the newest plus every older one until
        the replicas had a kubelet sync to reload (modelled as: until the grace passed)."""

    def step(self, result: rotation.RotationPlan, now: dt.datetime) -> None:
        if result.action == "stage-ca":
            self.data["next-ca.crt"], self.data["next-ca.key"] = certs.build_ca("next", days=1825)
        elif result.action in ("publish-ca", "repair-bundle"):
            assert result.bundle is not None
            self.bundle = result.bundle
        elif result.action == "promote-ca":
            ca_cert, ca_key = self.data.pop("next-ca.crt"), self.data.pop("next-ca.key")
            tls = certs.build_serving_cert(ca_cert, ca_key, dns_names=DNS, days=365)
            self.data.update({"ca.crt": ca_cert, "ca.key": ca_key})
            self.data["tls.crt"], self.data["tls.key"] = tls
            self.served.append(tls[0])
            self.annotations[rotation.ROLLOVER_ANNOTATION] = rotation.format_time(now)
        elif result.action == "renew-serving":
            tls = certs.build_serving_cert(
                self.data["ca.crt"], self.data["ca.key"], dns_names=DNS, days=365
            )
            self.data["tls.crt"], self.data["tls.key"] = tls
            self.served.append(tls[0])
        elif result.action == "drop-old-ca":
            assert result.bundle is not None
            self.bundle = result.bundle
            self.annotations.pop(rotation.ROLLOVER_ANNOTATION, None)

    def reload_all(self) -> None:
        self.served = [self.data["tls.crt"]]

    def every_served_certificate_is_trusted(self, now: dt.datetime) -> bool:
        """(An expired certificate works with no bundle; it is replaced, not protected.)"""
        trusted = rotation.parse_bundle(self.bundle)
        served = [x509.load_pem_x509_certificate(c) for c in self.served]
        return all(
            any(rotation.signed_by(c, ca) for ca in trusted)
            for c in served
            if c.not_valid_after_utc > now
        )


def run(cluster: Cluster, now: dt.datetime, *, limit: int = 10) -> list[str]:
    steps = []
    for _ in range(limit):
        result = plan(cluster.data, cluster.bundle, now=now, annotations=cluster.annotations)
        if not result.writes:
            return steps
        cluster.step(result, now)
        steps.append(result.action)
        assert cluster.every_served_certificate_is_trusted(now), steps
    raise AssertionError(f"no fixed point after {limit} steps: {steps}")


def test_a_ca_rollover_keeps_every_served_certificate_trusted_at_every_step() -> None:
    cluster = Cluster(material(ca_days=20, tls_days=20))
    old_ca = cluster.data["ca.crt"]
    assert run(cluster, NOW) == ["stage-ca", "publish-ca", "promote-ca"]
    assert len(rotation.parse_bundle(cluster.bundle)) == 2
    # Within the grace period nothing changes; replicas reload meanwhile.
    assert run(cluster, NOW + dt.timedelta(minutes=2)) == []
    cluster.reload_all()
    assert run(cluster, NOW + dt.timedelta(minutes=6)) == ["drop-old-ca"]
    assert cluster.bundle == cluster.data["ca.crt"] != old_ca
    assert run(cluster, NOW + dt.timedelta(minutes=7)) == []


def test_a_crash_between_any_two_steps_resumes_where_it_stopped() -> None:
    # Every prefix of the sequence is a state a crashed leader may leave behind; the next
    # leader's plan continues from it without starting over.
    reference = Cluster(material(ca_days=20, tls_days=20))
    full = run(reference, NOW)
    for cut in range(len(full)):
        fresh = Cluster(material(ca_days=20, tls_days=20))
        done = []
        for _ in range(cut):
            result = plan(fresh.data, fresh.bundle, now=NOW, annotations=fresh.annotations)
            fresh.step(result, NOW)
            done.append(result.action)
        assert done + run(fresh, NOW) == full


def test_an_already_expired_ca_is_replaced_too() -> None:
    cluster = Cluster(material(ca_days=1, tls_days=1))
    later = NOW + dt.timedelta(days=3)
    # Nothing can still be served with the expired CA: its certificate goes at once.
    assert run(cluster, later) == ["stage-ca", "publish-ca", "promote-ca", "drop-old-ca"]
    # The expired CA is not carried into the new bundle.
    (only,) = rotation.parse_bundle(cluster.bundle)
    assert only.not_valid_after_utc > later


# --- install's decision -------------------------------------------------------------------------


def test_install_reuses_renews_or_replaces() -> None:
    fine = material()
    assert plan_install_certs(fine, fine["ca.crt"], now=NOW, dns_names=DNS).action == "reuse"
    assert plan_install_certs(None, b"", now=NOW, dns_names=DNS).action == "new-ca"
    short = material(tls_days=10)
    assert plan_install_certs(short, b"", now=NOW, dns_names=DNS).action == "renew-serving"
    expiring_ca = material(ca_days=10, tls_days=10)
    decided = plan_install_certs(expiring_ca, expiring_ca["ca.crt"], now=NOW, dns_names=DNS)
    assert decided.action == "new-ca"
    # The old CA stays trusted next to the new one while replicas still serve its certificate.
    assert decided.keep_in_bundle == (
        rotation.parse_bundle(expiring_ca["ca.crt"])[0].public_bytes(
            rotation.serialization.Encoding.PEM
        ),
    )
