"""``psaLevel: auto`` decisions, the dry-run patch, and the mismatch sentence (pure).

Rejection texts are the API server's own: the recorded fixture and the seed's Event (which
tests/realcp checks against a live kube-apiserver).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vsphere_kale.playground.seed_kale import FAILED_CREATE_MESSAGE
from vsphere_kale.policy.kale_podsecurity import IstioCniFacts
from vsphere_kale.policy.podsecurity import (
    MANAGED_LABELS_ANNOTATION,
    PSA_ENFORCE,
    PSA_ENFORCE_VERSION,
    build_desired,
)
from vsphere_kale.policy.podsecurity_evidence import (
    DryRunFinding,
    parse_dry_run_warnings,
    parse_rejection,
    rejections_from_events,
)
from vsphere_kale.policy.psa_level import (
    PsaEvidence,
    build_dry_run_patch,
    build_needs_section,
    decide_kept_level,
    decide_psa_level,
    decide_psa_mismatch,
    parse_server_minor,
    plan_dry_runs,
)
from vsphere_kale.settings import PodSecuritySettings

RECORDED = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_rejections.json").read_text()
)["cases"]

INJECTED = {"istio-injection": "enabled"}
NO_CNI = IstioCniFacts()
CNI = IstioCniFacts(daemonsets=("kube-system/istio-cni-node",))
UNREADABLE = IstioCniFacts(daemonsets_readable=False, configmaps_readable=False)


def rejection(message: str) -> tuple:  # type: ignore[type-arg]
    found = parse_rejection(message, source="StatefulSet alice/kale-nb")
    assert found is not None
    return (found,)


def finding(level: str, pod: str = "nb-0") -> tuple[DryRunFinding, ...]:
    return (DryRunFinding("alice", level, "v1.36", pod, 0, ("non-default capabilities",)),)  # type: ignore[arg-type]


def ours(level: str) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations of a namespace where vsphere-kale set enforce=<level>."""
    return (
        {PSA_ENFORCE: level},
        {MANAGED_LABELS_ANNOTATION: json.dumps({PSA_ENFORCE: level})},
    )


CASES = [
    # id, evidence, expected level, a phrase the deciding reason holds
    (
        "profile-istio-no-cni",
        PsaEvidence("alice", labels=INJECTED, istio_cni=NO_CNI),
        "privileged",
        "istio-init adds NET_ADMIN and NET_RAW",
    ),
    (
        "profile-istio-cni-unknown-is-conservative",
        PsaEvidence("alice", labels=INJECTED, istio_cni=UNREADABLE),
        "privileged",
        "Istio CNI unknown",
    ),
    (
        "profile-istio-with-cni",
        PsaEvidence("alice", labels=INJECTED, istio_cni=CNI),
        "baseline",
        "no istio-init",
    ),
    (
        "profile-istio-revision-label",
        PsaEvidence("alice", labels={"istio.io/rev": "1-24"}, istio_cni=NO_CNI),
        "privileged",
        "istio.io/rev=1-24",
    ),
    (
        "profile-injection-disabled-beats-revision",
        PsaEvidence("alice", labels={"istio-injection": "disabled", "istio.io/rev": "1-24"}),
        "baseline",
        "no sidecar",
    ),
    (
        "profile-no-istio",
        PsaEvidence("alice"),
        "baseline",
        "no Istio injection label",
    ),
    (
        "kale2-steps-only-restricted",
        PsaEvidence("pipelines", runs_notebooks=False, dry_run_baseline=(), dry_run_restricted=()),
        "restricted",
        "names no existing pod that restricted refuses",
    ),
    (
        "root-step-named-at-restricted-only",
        PsaEvidence(
            "pipelines",
            runs_notebooks=False,
            dry_run_baseline=(),
            dry_run_restricted=finding("restricted", "root-step"),
        ),
        "baseline",
        "root-step would violate restricted, not baseline",
    ),
    (
        "pod-named-at-baseline",
        PsaEvidence("pipelines", runs_notebooks=False, dry_run_baseline=finding("baseline")),
        "privileged",
        "nb-0 would violate baseline",
    ),
    (
        "recorded-rejection-with-cni-evidence-still-wins",
        PsaEvidence(
            "alice",
            labels=INJECTED,
            istio_cni=CNI,
            rejections=rejection(RECORDED["baseline-istio-init"]["message"]),
        ),
        "privileged",
        "was rejected at baseline",
    ),
    (
        "recorded-root-rejection-at-restricted",
        PsaEvidence(
            "pipelines",
            runs_notebooks=False,
            rejections=rejection(RECORDED["restricted-root-step"]["message"]),
        ),
        "baseline",
        "root-step was rejected at restricted",
    ),
    (
        "non-profile-namespace-with-injection",
        PsaEvidence("kubeflow", labels=INJECTED, runs_notebooks=False, istio_cni=NO_CNI),
        "privileged",
        "do not opt out of the sidecar",
    ),
    (
        "never-lowers-what-we-set",
        PsaEvidence(
            "pipelines",
            runs_notebooks=False,
            labels=ours("privileged")[0],
            annotations=ours("privileged")[1],
            dry_run_baseline=(),
            dry_run_restricted=(),
        ),
        "privileged",
        "auto never lowers a level",
    ),
    (
        "no-input-is-restricted",
        PsaEvidence("empty", runs_notebooks=False),
        "restricted",
        "nothing needs more than restricted",
    ),
]


@pytest.mark.parametrize(
    ("evidence", "level", "why"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_psa_level(evidence: PsaEvidence, level: str, why: str) -> None:
    decision = decide_psa_level(evidence)
    assert decision.level == level
    assert why in decision.auto.why
    # Every input is kept, with the level it asked for.
    assert all(
        need in ("privileged", "baseline", "restricted") for need, _ in decision.auto.reasons
    )


def test_a_label_someone_else_set_is_not_kept() -> None:
    # enforce=privileged by hand (never recorded as ours): auto may decide lower.
    evidence = PsaEvidence(
        "pipelines",
        runs_notebooks=False,
        labels={PSA_ENFORCE: "privileged"},
        dry_run_baseline=(),
        dry_run_restricted=(),
    )
    assert decide_kept_level(evidence.labels, evidence.annotations) is None
    assert decide_psa_level(evidence).level == "restricted"
    # And keep=False (doctor, the panel with a fixed psaLevel) ignores even our own label.
    labels, annotations = ours("privileged")
    kept = PsaEvidence("x", runs_notebooks=False, labels=labels, annotations=annotations)
    assert decide_psa_level(kept, keep=False).level == "restricted"


def test_the_seeds_event_is_parsed_as_istio_init_needing_privileged() -> None:
    event = {
        "reason": "FailedCreate",
        "involvedObject": {"kind": "StatefulSet", "namespace": "alice", "name": "kale-nb"},
        "message": FAILED_CREATE_MESSAGE,
    }
    (found,) = rejections_from_events([event])
    assert (found.pod, found.level, found.needs) == ("kale-nb-0", "baseline", "privileged")
    assert found.containers == ("istio-init",)
    assert found.violations[0].capabilities == ("NET_ADMIN", "NET_RAW")


@pytest.mark.parametrize(
    ("evidence", "asked"),
    [
        (PsaEvidence("alice", labels=INJECTED), ()),  # already privileged: nothing to ask
        (PsaEvidence("alice"), ("baseline",)),  # notebooks: baseline at least
        (PsaEvidence("steps", runs_notebooks=False), ("baseline", "restricted")),
    ],
    ids=["privileged-already", "baseline-floor", "restricted-candidate"],
)
def test_only_dry_runs_that_can_change_the_answer_are_asked(
    evidence: PsaEvidence, asked: tuple[str, ...]
) -> None:
    assert plan_dry_runs(evidence) == asked


@pytest.mark.parametrize(
    ("labels", "minor", "version"),
    [
        ({}, 36, "v1.36"),  # unset means latest: pin the server's own version
        ({PSA_ENFORCE_VERSION: "latest"}, 36, "v1.36"),
        ({PSA_ENFORCE_VERSION: "v1.36"}, 36, "latest"),  # pinned: latest differs
        ({}, None, "latest"),
    ],
)
def test_the_dry_run_changes_the_version_so_the_server_evaluates(
    labels: dict[str, str], minor: int | None, version: str
) -> None:
    patch = build_dry_run_patch("baseline", labels=labels, server_minor=minor)
    assert patch == {
        "metadata": {"labels": {PSA_ENFORCE: "baseline", PSA_ENFORCE_VERSION: version}}
    }


@pytest.mark.parametrize(
    ("version", "minor"), [({"minor": "36"}, 36), ({"minor": "29+"}, 29), ({}, None)]
)
def test_parse_server_minor(version: dict[str, str], minor: int | None) -> None:
    assert parse_server_minor(version) == minor


def test_mismatch_names_istio_init_and_the_configured_level() -> None:
    decision = decide_psa_level(PsaEvidence("alice", labels=INJECTED, istio_cni=NO_CNI))
    text = decide_psa_mismatch("baseline", decision)
    assert text is not None
    assert text.startswith(
        "notebook pods in alice get istio-init (NET_ADMIN, NET_RAW), which only privileged "
        "admits; psaLevel is baseline"
    )
    assert decide_psa_mismatch("privileged", decision) is None
    assert decide_psa_mismatch("auto", decision) is None


def test_mismatch_without_istio_names_the_need() -> None:
    decision = decide_psa_level(PsaEvidence("alice"))
    text = decide_psa_mismatch("restricted", decision)
    assert text is not None and text.startswith("alice needs baseline")


def test_needs_section_is_an_error_only_with_a_recorded_rejection() -> None:
    inferred = decide_psa_level(PsaEvidence("alice", labels=INJECTED, istio_cni=NO_CNI))
    assert build_needs_section(inferred, configured="baseline")["severity"] == "warning"
    refused = decide_psa_level(
        PsaEvidence(
            "alice",
            labels=INJECTED,
            istio_cni=NO_CNI,
            rejections=rejection(FAILED_CREATE_MESSAGE),
        )
    )
    section = build_needs_section(refused, configured="baseline")
    assert section["severity"] == "error"
    assert section["level"] == "privileged"
    assert section["istio"] == {
        "injected": True,
        "cni": False,
        "istioInit": True,
        "needs": "privileged",
        "why": section["istio"]["why"],
    }
    assert section["rejections"][0]["pod"] == "kale-nb-0"
    assert build_needs_section(refused, configured="privileged")["mismatch"] is None


def test_build_desired_takes_the_decided_level_for_auto() -> None:
    auto = PodSecuritySettings(psa_level="auto")
    desired = build_desired("alice", mode="psa", settings=auto, enforce_level="privileged")
    assert desired.labels[PSA_ENFORCE] == "privileged"
    with pytest.raises(ValueError, match="decided per namespace"):
        build_desired("alice", mode="psa", settings=auto)
    # A fixed level ignores enforce_level; psp mode needs none.
    fixed = build_desired(
        "alice", mode="psa", settings=PodSecuritySettings(), enforce_level="privileged"
    )
    assert fixed.labels[PSA_ENFORCE] == "baseline"
    assert build_desired("alice", mode="psp", settings=auto).binding is not None


def test_dry_run_warnings_as_the_server_words_them_decide_the_level() -> None:
    warnings = [
        'existing pods in namespace "alice" violate the new PodSecurity enforce level '
        '"baseline:v1.36"',
        "kale-nb-0: non-default capabilities",
    ]
    findings = tuple(parse_dry_run_warnings(warnings))
    decision = decide_psa_level(
        PsaEvidence("steps", runs_notebooks=False, dry_run_baseline=findings)
    )
    assert decision.level == "privileged"
    assert decision.dry_run_asked == ("baseline",)


def test_the_recorded_dry_run_warnings_decide_baseline_for_a_root_step() -> None:
    recorded = json.loads(
        (
            Path(__file__).resolve().parents[1] / "fixtures" / "podsecurity_dry_run_warnings.json"
        ).read_text()
    )["cases"]
    root = decide_psa_level(
        PsaEvidence(
            "steps",
            runs_notebooks=False,
            dry_run_baseline=tuple(parse_dry_run_warnings(recorded["with-root-step-baseline"])),
            dry_run_restricted=tuple(parse_dry_run_warnings(recorded["with-root-step-restricted"])),
        )
    )
    assert root.level == "baseline"
    kale2 = decide_psa_level(
        PsaEvidence(
            "steps",
            runs_notebooks=False,
            dry_run_baseline=tuple(parse_dry_run_warnings(recorded["kale2-only-baseline"])),
            dry_run_restricted=tuple(parse_dry_run_warnings(recorded["kale2-only-restricted"])),
        )
    )
    assert kale2.level == "restricted"
