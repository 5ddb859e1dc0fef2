"""The sandbox held to kube-apiserver 1.36: each scenario's normalised outcome must equal the
one recorded from the real control plane (``expected_outcomes.json``), on both control planes,
and the two must agree live when the real one is built. Accepted differences are listed, with
their reasons, in ``ACCEPTED_DIFFERENCES.yaml`` (embedded side only).

Re-record the expectations from the real control plane with
``VSPHERE_KALE_RECORD_OUTCOMES=1 python -m pytest tests/differential -k "real"``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from differential_scenarios import SCENARIOS, Target

HERE = Path(__file__).resolve().parent
EXPECTED_PATH = HERE / "expected_outcomes.json"
ACCEPTED = yaml.safe_load((HERE / "ACCEPTED_DIFFERENCES.yaml").read_text(encoding="utf-8"))
RECORD = os.environ.get("VSPHERE_KALE_RECORD_OUTCOMES") == "1"


def _expected() -> dict[str, Any]:
    if EXPECTED_PATH.exists():
        return dict(json.loads(EXPECTED_PATH.read_text(encoding="utf-8")))
    return {}


def _drop(outcome: Any, path: str) -> Any:
    """``outcome`` without the value at dotted ``path`` (an accepted difference)."""
    out = copy.deepcopy(outcome)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return out
        node = node[part]
    if isinstance(node, dict):
        node.pop(parts[-1], None)
    return out


def _normalised(outcome: Any) -> Any:
    """The outcome with the scenario's generated namespace names replaced."""
    return json.loads(re.sub(r"diff-[0-9a-f]{8}", "diff-NS", json.dumps(outcome)))


def _without_accepted(name: str, outcome: Any) -> Any:
    for entry in ACCEPTED.get("differences") or []:
        if entry["scenario"] == name:
            outcome = _drop(outcome, entry["path"])
    return outcome


def test_every_accepted_difference_has_a_reason_and_a_scenario() -> None:
    for entry in ACCEPTED.get("differences") or []:
        assert entry["scenario"] in SCENARIOS, entry
        assert len(str(entry.get("reason", ""))) > 20, entry
    for entry in (ACCEPTED.get("normalised") or []) + (ACCEPTED.get("known") or []):
        assert entry["what"] and len(str(entry.get("reason", ""))) > 20, entry


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_kube(control_plane: Target, name: str) -> None:
    outcome = _normalised(SCENARIOS[name](control_plane))
    expected = _expected()
    if RECORD and control_plane.name == "real":
        expected[name] = outcome
        EXPECTED_PATH.write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    assert name in expected, f"no recorded outcome for {name}: record it from the real one"
    if control_plane.name == "embedded":
        assert _without_accepted(name, outcome) == _without_accepted(name, expected[name])
    else:
        assert outcome == expected[name]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_both_control_planes_agree(embedded_target: Target, real_target: Target, name: str) -> None:
    embedded = _normalised(SCENARIOS[name](embedded_target))
    real = _normalised(SCENARIOS[name](real_target))
    assert _without_accepted(name, embedded) == _without_accepted(name, real)
