"""``vsphere-kale doctor``: is this cluster's installation healthy, and if not, what to do.

The pieces: :mod:`~vsphere_kale.install.doctor_fetch` reads the facts (I/O),
:mod:`~vsphere_kale.install.doctor_decide` and :mod:`~vsphere_kale.install.doctor_access`
turn them into :class:`~vsphere_kale.install.doctor_check.Check` lines (pure). This module
names the entry points the command and the tests use.
"""

from __future__ import annotations

from vsphere_kale.install.doctor_access import (
    ROLE_NAME,
    SA_NAME,
    Access,
    AccessResult,
    build_component_patches,
    build_required_access,
    decide_rbac,
)
from vsphere_kale.install.doctor_check import Check, Status, decide_exit_code, decide_unreadable
from vsphere_kale.install.doctor_decide import (
    EXPIRY_MARGIN,
    DoctorFacts,
    decide_certificate,
    decide_claim_fix,
    decide_endpoints,
    decide_pod_security_check,
    decide_pvcs,
    decide_storage_class_check,
    decide_webhook_configuration,
    run_checks,
)
from vsphere_kale.install.doctor_fetch import (
    build_args_settings,
    fetch_access,
    fetch_caller,
    fetch_facts,
    fetch_required_roles,
    fetch_settings,
)

__all__ = [
    "EXPIRY_MARGIN",
    "ROLE_NAME",
    "SA_NAME",
    "Access",
    "AccessResult",
    "Check",
    "DoctorFacts",
    "Status",
    "build_args_settings",
    "build_component_patches",
    "build_required_access",
    "decide_certificate",
    "decide_claim_fix",
    "decide_endpoints",
    "decide_exit_code",
    "decide_pod_security_check",
    "decide_pvcs",
    "decide_rbac",
    "decide_storage_class_check",
    "decide_unreadable",
    "decide_webhook_configuration",
    "fetch_access",
    "fetch_caller",
    "fetch_facts",
    "fetch_required_roles",
    "fetch_settings",
    "run_checks",
]
