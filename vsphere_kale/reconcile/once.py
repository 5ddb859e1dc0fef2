"""``vsphere-kale reconcile``: the same planner and apply, once, without informers or a Lease."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vsphere_kale.kube import Kube
from vsphere_kale.policy.podsecurity import decide_mode
from vsphere_kale.reconcile.applier import (
    FactSource,
    LiveSource,
    NamespaceResult,
    PodSecurityApplier,
    SnapshotSource,
)
from vsphere_kale.reconcile.events import EventRecorder
from vsphere_kale.settings import Settings


def _candidates(source: SnapshotSource, settings: Settings) -> list[str]:
    """Names ``reconcile --all`` reports on: every Profile and every extra/excluded name."""
    ps = settings.pod_security
    names = set(source.profiles) | set(ps.extra_namespaces)
    names |= {n for n in ps.excluded_namespaces if n in source.namespaces}
    return sorted(names)


def reconcile_once(
    kube: Kube,
    settings: Settings,
    *,
    namespaces: Iterable[str] | None = None,
    dry_run: bool = False,
    identity: str = "vsphere-kale-cli",
    on_result: Callable[[NamespaceResult], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[str, list[NamespaceResult]]:
    """Reconcile the named namespaces (None: every Profile and extra namespace) once.

    A dry run plans only: it sends no write at all, not even a ``dryRun=All`` one, so it
    needs nothing but read access. Returns the resolved mode and the results.
    """
    discovery = kube.discovery()
    mode = decide_mode(settings.pod_security.mode, psp_served=discovery.psp_served)
    events = None if dry_run else EventRecorder(kube, instance=identity)
    applier = PodSecurityApplier(kube, settings, mode=mode, discovery=discovery, events=events)
    source: FactSource
    if namespaces is None:
        snapshot = SnapshotSource(kube, discovery, psp=mode == "psp")
        names = _candidates(snapshot, settings)
        source = snapshot
    else:
        names = list(namespaces)
        source = LiveSource(kube, discovery)
    if on_total is not None:
        on_total(len(names))
    results = []
    for name in names:
        result = applier.reconcile(name, source, dry_run=dry_run).result
        results.append(result)
        if on_result is not None:
            on_result(result)
    return mode, results
