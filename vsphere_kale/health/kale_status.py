"""The ``kale`` section of the status document: a notebook's Kale volumes, read from the cluster.

The pure verdicts are :func:`vsphere_kale.policy.kale.build_kale_section`; this module only
fetches what they need, with the caller's own :class:`~vsphere_kale.kube.Kube` (in the Jupyter
extension: the notebook's identity, the same one the local status uses):

* one GET per claim the notebook mounts (a notebook user may ``get`` claims in its namespace;
  a list would also work, but GETs cost the same for the handful of volumes a notebook has and
  need the narrower permission),
* the StorageClasses (cluster-scoped: a notebook identity usually may not list them; then
  ``None`` and the verdicts say "could not be read" instead of guessing),
* the PersistentVolumes, only when a claim waits for static binding (``storageClassName: ""``
  or ``volumeName``) and is not bound yet: the only verdict that needs them.

``vsphere-kale check-notebook`` calls :func:`fetch_kale_inputs` too: one fetcher, so the CLI and
the panel judge a notebook from the same reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vsphere_kale.errors import KubeError, KubeForbidden
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy.kale import (
    CLAIM_NAME,
    MOUNTED_TYPE,
    KaleNotebook,
    NotebookError,
    build_kale_section,
    parse_notebook,
)
from vsphere_kale.settings import StorageSettings

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
"""Seconds per API request, as for the rest of the status."""


@dataclass(frozen=True)
class KaleInputs:
    """What :func:`~vsphere_kale.policy.kale.build_kale_section` needs from the cluster."""

    claims: tuple[dict[str, Any], ...]
    """The claims the notebook names that exist."""
    classes: tuple[dict[str, Any], ...] | None
    """Every StorageClass; ``None`` when the caller may not list them."""
    pvs: tuple[dict[str, Any], ...] | None
    """The PersistentVolumes when a claim waits for static binding (else empty); ``None``
    when the caller may not list them."""
    notebook: KaleNotebook | None = None
    """The notebook's Kale metadata; ``None`` when it has none."""
    error: str | None = None
    """Why nothing could be judged (the claims could not be read): one sentence."""


def _listed_or_none(fetch: Callable[[], Mapping[str, Any]]) -> tuple[dict[str, Any], ...] | None:
    """A cluster-scoped list, or ``None`` when the caller may not read it."""
    try:
        return tuple(fetch().get("items") or ())
    except KubeForbidden as exc:
        log.info("kale section: %s", exc)
        return None


def _waits_for_static_binding(claim: Mapping[str, Any]) -> bool:
    spec = claim.get("spec") or {}
    waiting = spec.get("storageClassName") == "" or bool(spec.get("volumeName"))
    return waiting and (claim.get("status") or {}).get("phase") != "Bound"


def fetch_kale_inputs(kube: Kube, notebook: KaleNotebook, *, namespace: str) -> KaleInputs:
    """The claims ``notebook`` mounts, the StorageClasses, and the PVs when a claim needs them.

    Raises :class:`~vsphere_kale.errors.KubeForbidden` when the caller may not get the claims
    (then nothing can be judged) and :class:`~vsphere_kale.errors.KubeError` when the API fails.
    """
    names = sorted(
        {v.name for v in notebook.volumes if v.type == MOUNTED_TYPE and CLAIM_NAME.match(v.name)}
    )
    found = (
        kube.get_optional(
            r.PERSISTENT_VOLUME_CLAIM, name, namespace=namespace, timeout=REQUEST_TIMEOUT
        )
        for name in names
    )
    claims = tuple(c for c in found if c is not None)
    classes = _listed_or_none(lambda: kube.list(r.STORAGE_CLASS, timeout=REQUEST_TIMEOUT))
    pvs: tuple[dict[str, Any], ...] | None = ()
    if any(_waits_for_static_binding(c) for c in claims):
        pvs = _listed_or_none(lambda: kube.list(r.PERSISTENT_VOLUME, timeout=REQUEST_TIMEOUT))
    return KaleInputs(claims, classes, pvs, notebook)


def collect_kale_inputs(
    kube: Callable[[], Kube], notebook_json: object, *, namespace: str, source: str
) -> KaleInputs:
    """:func:`fetch_kale_inputs` for a decoded notebook (blocking: run it in an executor).

    ``kube`` is called only when the notebook has Kale metadata, so any other notebook costs
    no request. Never raises for the cluster's sake: a claim the caller may
    not read, or an API that does not answer, becomes ``error`` (one sentence), so the rest of
    the status is still shown.
    """
    try:
        notebook = parse_notebook(notebook_json, source=source)
    except NotebookError:
        return KaleInputs((), None, None)  # build_kale_section says why, in its own shape
    try:
        return fetch_kale_inputs(kube(), notebook, namespace=namespace)
    except KubeForbidden as exc:
        error = (
            f"Cannot check the Kale volumes of {source}: the notebook may not get "
            f"persistentvolumeclaims in {namespace} ({exc})"
        )
    except KubeError as exc:
        error = f"Cannot check the Kale volumes of {source}: {exc}"
    log.info("kale section for namespace %s: %s", namespace, error)
    return KaleInputs((), None, None, notebook, error=error)


def build_section(
    notebook_json: object,
    inputs: KaleInputs,
    *,
    namespace: str,
    storage: StorageSettings,
    source: str,
) -> dict[str, Any]:
    """The ``kale`` section (schema in docs/kale.md); ``fit: null`` with ``error`` when the
    cluster could not be asked."""
    if inputs.error is not None:
        return {
            "generation": "kale2",
            "namespace": namespace,
            "pipelineName": None,
            "fit": None,
            "error": inputs.error,
            "volumes": [],
            "storageReadable": {"classes": False, "persistentVolumes": False},
        }
    return build_kale_section(
        notebook_json,
        list(inputs.claims),
        None if inputs.classes is None else list(inputs.classes),
        None if inputs.pvs is None else list(inputs.pvs),
        storage,
        namespace=namespace,
        source=source,
    )
