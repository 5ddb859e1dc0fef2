"""What the API server serves, read once per :class:`~vsphere_kale.kube.api.Kube` and cached.

The questions the product asks ("which Profile version?", "are PodSecurityPolicies served?",
"which MutatingAdmissionPolicy version?") are answered from ``/api``, ``/apis`` and the
resource lists of the few group-versions that decide them. Each group-version's resource list
is fetched at most once, when first asked about, so a cluster with fifty API groups costs two
requests plus one per group-version we actually care about.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from vsphere_kale.errors import KubeNotFound
from vsphere_kale.kube import resources as r

FetchJson = Callable[[str], Mapping[str, Any]]


class Discovery:
    """Served groups, versions and (lazily) resources; thread-safe."""

    def __init__(self, versions: Mapping[str, tuple[str, ...]], fetch: FetchJson) -> None:
        self._versions = dict(versions)
        """group (``""`` for core) -> its served versions, the preferred one first."""
        self._fetch = fetch
        self._resources: dict[tuple[str, str], frozenset[str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def fetch(cls, fetch: FetchJson) -> Discovery:
        """Read ``/api`` and ``/apis`` through ``fetch`` (a translated GET of a path)."""
        core = tuple(str(v) for v in fetch("/api").get("versions") or ())
        versions: dict[str, tuple[str, ...]] = {"": core}
        for group in fetch("/apis").get("groups") or ():
            served = [str(v.get("version")) for v in group.get("versions") or ()]
            preferred = str((group.get("preferredVersion") or {}).get("version") or "")
            if preferred in served:
                served.remove(preferred)
                served.insert(0, preferred)
            versions[str(group.get("name"))] = tuple(served)
        return cls(versions, fetch)

    def versions(self, group: str) -> tuple[str, ...]:
        """The served versions of ``group``, the server's preferred one first."""
        return self._versions.get(group, ())

    def resources(self, group: str, version: str) -> frozenset[str]:
        """The resource names (plurals and ``pods/log``-style subresources) of a version."""
        if version not in self.versions(group):
            return frozenset()
        key = (group, version)
        with self._lock:
            known = self._resources.get(key)
        if known is not None:
            return known
        where = r.path("api", version) if not group else r.path("apis", group, version)
        try:
            listed = self._fetch(where).get("resources") or ()
        except KubeNotFound:
            # Listed in /apis but gone (a CRD deleted a moment ago): not served.
            listed = ()
        names = frozenset(str(item.get("name")) for item in listed)
        with self._lock:
            self._resources[key] = names
        return names

    def served(self, group: str, version: str, resource: str | None = None) -> bool:
        """Whether ``group/version`` (and, if named, its ``resource``) is served."""
        if resource is None:
            return version in self.versions(group)
        return resource in self.resources(group, version)

    def serves(self, resource: r.Resource) -> bool:
        return self.served(resource.group, resource.version, resource.plural)

    def _first_served(self, candidates: tuple[r.Resource, ...]) -> str | None:
        for candidate in candidates:
            if self.serves(candidate):
                return candidate.version
        return None

    @property
    def profile_version(self) -> str | None:
        """``v1``, ``v1beta1``, or None when Kubeflow's Profile CRD is not installed.

        v1 is preferred when both are served (Kubeflow 1.3+ serves both from one CRD; v1beta1
        is what older Kubeflow on vSphere with Tanzu has).
        """
        return self._first_served((r.PROFILE, r.PROFILE_V1BETA1))

    @property
    def psp_served(self) -> bool:
        """Whether ``policy/v1beta1`` still serves PodSecurityPolicies (removed in 1.25)."""
        return self.serves(r.POD_SECURITY_POLICY)

    @property
    def mutating_admission_policy_version(self) -> str | None:
        """``v1`` (GA in 1.36), ``v1beta1`` (1.34-1.35, behind a feature gate), or None."""
        return self._first_served(
            (r.MUTATING_ADMISSION_POLICY, r.MUTATING_ADMISSION_POLICY_V1BETA1)
        )
