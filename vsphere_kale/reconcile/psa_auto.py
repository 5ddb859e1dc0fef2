"""``podSecurity.psaLevel: auto`` in the reconciler: fetch the evidence, decide, hand back a level.

The decision is :func:`vsphere_kale.policy.psa_level.decide_psa_level` (pure); the reads are
:mod:`vsphere_kale.health.psa_evidence`. Per reconcile of a managed namespace this costs one
Event list and at most two server-side dry-run patches (none when the evidence already asks
for ``privileged``); the cluster-wide Istio CNI facts are read once per resync period.
``reconcile --dry-run`` sends no write of any kind, so it decides without the dry runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from vsphere_kale.health.psa_evidence import (
    IstioCniCache,
    fetch_psa_decision,
    fetch_server_minor,
)
from vsphere_kale.kube import Kube
from vsphere_kale.policy.psa_level import PsaDecision

log = logging.getLogger(__name__)


class PsaAuto:
    """Decides each namespace's enforce level for ``psaLevel: auto``; thread-safe."""

    def __init__(
        self, kube: Kube, *, cni_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kube = kube
        self._cni = IstioCniCache(kube, ttl=cni_ttl, clock=clock)
        self._minor: tuple[int | None] | None = None
        self._lock = threading.Lock()

    def _server_minor(self) -> int | None:
        with self._lock:
            if self._minor is not None:
                return self._minor[0]
        minor = fetch_server_minor(self._kube)
        with self._lock:
            self._minor = (minor,)
        return minor

    def decide(
        self, namespace_obj: Mapping[str, Any], *, runs_notebooks: bool, dry_run: bool
    ) -> PsaDecision:
        decision = fetch_psa_decision(
            self._kube,
            namespace_obj,
            runs_notebooks=runs_notebooks,
            istio_cni=self._cni.get(),
            server_minor=self._server_minor(),
            dry_run=not dry_run,
        )
        log.debug(
            "namespace %s: psaLevel auto -> %s (%s)",
            decision.namespace,
            decision.level,
            decision.auto.why,
        )
        return decision
