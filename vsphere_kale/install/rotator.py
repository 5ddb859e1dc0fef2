"""The leader's certificate rotation loop (I/O): the pure plan of
:mod:`vsphere_kale.install.rotation` applied against the cluster, one step at a time (that
module explains the plan, its state and its invariant)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vsphere_kale.install import certs
from vsphere_kale.install.rotation import (
    CA_CERT,
    CA_DAYS,
    CA_KEY,
    DEFAULT_GRACE,
    NEXT_CA_CERT,
    NEXT_CA_KEY,
    RENEW_BEFORE_DAYS,
    ROLLOVER_ANNOTATION,
    SERVING_DAYS,
    TLS_CERT,
    TLS_KEY,
    RotationPlan,
    _encode_data,
    bundle_of,
    decode_secret_data,
    format_time,
    issue_serving_cert,
    plan_rotation,
    serving_names,
)

if TYPE_CHECKING:
    from vsphere_kale.kube import Kube

log = logging.getLogger(__name__)


@dataclass
class RotatorStatus:
    """The last run, for logs, metrics and tests."""

    last_run: dt.datetime | None = None
    last_plan: RotationPlan | None = None
    steps: list[str] = field(default_factory=list)
    error: str | None = None


class CertificateRotator:
    """Runs :func:`plan_rotation` against the cluster on the leader.

    ``run_once()`` reads the Secret and the webhook configuration, applies one step, and
    repeats until nothing is left to do (at most a handful of steps). ``start()`` runs it on a
    thread: at once when ``is_leader()`` turns true, then every ``interval`` seconds (and
    whenever a planned ``next_check`` comes earlier) while it stays true.
    """

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        is_leader: Callable[[], bool] | None = None,
        secret_name: str = "vsphere-kale-tls",
        webhook_configuration: str = "vsphere-kale",
        service: str = "vsphere-kale",
        interval: float = 3600.0,
        leader_poll: float = 5.0,
        grace: dt.timedelta = DEFAULT_GRACE,
        renew_before_days: float = RENEW_BEFORE_DAYS,
        publish_settle: float = 2.0,
        ca_days: int = CA_DAYS,
        serving_days: int = SERVING_DAYS,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.secret_name = secret_name
        self.webhook_configuration = webhook_configuration
        self.dns_names = certs.service_dns_names(service, namespace)
        self._is_leader = is_leader or (lambda: True)
        self.interval = interval
        self.leader_poll = leader_poll
        self.grace = grace
        self.renew_before_days = renew_before_days
        self.publish_settle = publish_settle
        self.ca_days = ca_days
        self.serving_days = serving_days
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.status = RotatorStatus()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reads --

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from vsphere_kale.kube import resources as r

        secret = self._kube.get(r.SECRET, self.secret_name, namespace=self.namespace)
        hooks = self._kube.get(r.MUTATING_WEBHOOK_CONFIGURATION, self.webhook_configuration)
        return secret, hooks

    def _names(self, secret: Mapping[str, Any]) -> list[str]:
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        return serving_names(self.dns_names, annotations)

    def plan(self) -> tuple[RotationPlan, dict[str, Any], dict[str, Any]]:
        secret, hooks = self._read()
        plan = plan_rotation(
            decode_secret_data(secret),
            bundle_of(hooks),
            now=self._clock(),
            renew_before_days=self.renew_before_days,
            annotations=(secret.get("metadata") or {}).get("annotations") or {},
            dns_names=self._names(secret),
            grace=self.grace,
        )
        return plan, secret, hooks

    # -- writes --

    def _put_secret(
        self, secret: dict[str, Any], data: Mapping[str, bytes], annotations: Mapping[str, str]
    ) -> None:
        from vsphere_kale.kube import resources as r

        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                **{
                    k: v
                    for k, v in (secret.get("metadata") or {}).items()
                    if k not in ("annotations", "managedFields")
                },
                "annotations": dict(annotations),
            },
            "type": secret.get("type", "kubernetes.io/tls"),
            "data": _encode_data(data),
        }
        # resourceVersion stays in the body: a concurrent writer makes this a 409.
        self._kube.update(r.SECRET, body, namespace=self.namespace)

    def _patch_bundle(self, hooks: dict[str, Any], bundle: bytes) -> None:
        from vsphere_kale.kube import resources as r

        encoded = base64.b64encode(bundle).decode("ascii")
        version = (hooks.get("metadata") or {}).get("resourceVersion", "")
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version}
        ]
        for i, _ in enumerate(hooks.get("webhooks") or []):
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            )
        self._kube.patch(
            r.MUTATING_WEBHOOK_CONFIGURATION, self.webhook_configuration, ops, patch_type="json"
        )

    def apply(self, plan: RotationPlan, secret: dict[str, Any], hooks: dict[str, Any]) -> None:
        """Perform one step (see the module docstring for the order)."""
        data = decode_secret_data(secret)
        annotations = dict((secret.get("metadata") or {}).get("annotations") or {})
        now = self._clock()
        if plan.action == "stage-ca":
            ca_cert, ca_key = certs.build_ca(
                f"vsphere-kale-ca ({self.namespace}, {format_time(now)})", days=self.ca_days
            )
            data[NEXT_CA_CERT], data[NEXT_CA_KEY] = ca_cert, ca_key
            self._put_secret(secret, data, annotations)
        elif plan.action in ("publish-ca", "repair-bundle"):
            assert plan.bundle is not None
            self._patch_bundle(hooks, plan.bundle)
            if plan.action == "publish-ca" and self.publish_settle > 0:
                # The API server picks up a changed webhook configuration through its own
                # informer, typically within milliseconds; give it a moment regardless.
                time.sleep(self.publish_settle)
        elif plan.action == "promote-ca":
            next_cert, next_key = data.pop(NEXT_CA_CERT), data.pop(NEXT_CA_KEY)
            tls_cert, tls_key = issue_serving_cert(
                next_cert, next_key, names=self._names(secret), days=self.serving_days
            )
            data.update(
                {CA_CERT: next_cert, CA_KEY: next_key, TLS_CERT: tls_cert, TLS_KEY: tls_key}
            )
            annotations[ROLLOVER_ANNOTATION] = format_time(now)
            self._put_secret(secret, data, annotations)
        elif plan.action == "renew-serving":
            tls_cert, tls_key = issue_serving_cert(
                data[CA_CERT], data[CA_KEY], names=self._names(secret), days=self.serving_days
            )
            data.update({TLS_CERT: tls_cert, TLS_KEY: tls_key})
            self._put_secret(secret, data, annotations)
        elif plan.action == "drop-old-ca":
            assert plan.bundle is not None
            if bundle_of(hooks) != plan.bundle:
                self._patch_bundle(hooks, plan.bundle)
            if ROLLOVER_ANNOTATION in annotations:
                del annotations[ROLLOVER_ANNOTATION]
                self._put_secret(secret, data, annotations)

    def run_once(self, *, max_steps: int = 8) -> RotationPlan:
        """Plan and apply until ``ok``/``blocked``; returns the final plan.

        A conflict (another writer, a concurrent rotation) re-reads and re-plans.
        """
        from vsphere_kale.errors import KubeConflict, KubeError

        self.status.steps = []
        plan: RotationPlan | None = None
        for _ in range(max_steps):
            plan, secret, hooks = self.plan()
            if not plan.writes:
                break
            log.info(
                "certificate rotation: %s (%s)",
                plan.action,
                plan.reason,
                extra={"namespace": self.namespace},
            )
            try:
                self.apply(plan, secret, hooks)
            except KubeConflict:
                log.info("certificate rotation: %s lost a race; re-reading", plan.action)
                continue
            except KubeError as exc:
                # A failed JSON-patch test (422) is the same race on the webhook configuration.
                if exc.status != 422:
                    raise
                log.info("certificate rotation: %s lost a race; re-reading", plan.action)
                continue
            self.status.steps.append(plan.action)
        assert plan is not None
        self.status.last_run = self._clock()
        self.status.last_plan = plan
        if plan.action == "blocked":
            log.warning("certificate rotation is blocked: %s", plan.reason)
        else:
            # One line per run (hourly by default): the rotator is alive and why it is idle.
            log.info(
                "certificate rotation checked: %s", plan.reason, extra={"namespace": self.namespace}
            )
        return plan

    # -- the loop --

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cert-rotation", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Run soon (e.g. when leadership starts)."""
        self._kick.set()

    def stop(self, *, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        was_leader = False
        due = 0.0
        while not self._stop.is_set():
            leader = self._is_leader()
            now = time.monotonic()
            if leader and (not was_leader or now >= due or self._kick.is_set()):
                self._kick.clear()
                due = now + self.interval
                try:
                    plan = self.run_once()
                    if plan.next_check is not None:
                        wait = (plan.next_check - self._clock()).total_seconds()
                        due = min(due, now + max(wait, self.leader_poll))
                    self.status.error = None
                except Exception as exc:  # loop boundary: log, retry on the next poll
                    self.status.error = str(exc)
                    log.warning("certificate rotation failed, retrying: %s", exc)
                    due = now + max(self.leader_poll, 30.0)
            was_leader = leader
            self._kick.wait(self.leader_poll)
