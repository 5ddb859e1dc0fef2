"""Label and field selector parsing, as k8s.io/apimachinery does it."""

from __future__ import annotations

import pytest

from vsphere_kale.sandbox.selectors import (
    parse_field_selector,
    parse_label_selector,
    selector_from_label_selector_object,
)

LABELS = {"app": "web", "tier": "front", "example.com/team": "ml"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),  # != matches objects without the label
        ("app in (db, web)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("app notin (web,db)", False),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("example.com/team=ml", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (web),!missing,tier", True),
    ],
)
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    "text", ["app in (web", "app)", "=web", "app=we b", "a,,b", "app in (w@b)", "-app=x"]
)
def test_malformed_label_selectors_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_label_selector(text)


def test_label_selector_on_objects_without_labels() -> None:
    assert parse_label_selector("!app").matches(None)
    assert not parse_label_selector("app").matches(None)


def test_metav1_label_selector() -> None:
    selector = selector_from_label_selector_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches(LABELS)
    assert not selector.matches({"app": "web"})
    assert selector_from_label_selector_object(None).matches({})
    with pytest.raises(ValueError):
        selector_from_label_selector_object({"matchExpressions": [{"key": "a", "operator": "Gt"}]})


OBJ = {"metadata": {"name": "a", "namespace": "team"}, "involvedObject": {"name": "pvc"}}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("metadata.name=a", True),
        ("metadata.name==a", True),
        ("metadata.name!=a", False),
        ("metadata.name=a,metadata.namespace=team", True),
        ("metadata.name=a,metadata.namespace!=team", False),
        ("metadata.namespace=", False),
    ],
)
def test_field_selector_matching(text: str, matches: bool) -> None:
    assert parse_field_selector(text).matches(OBJ) is matches


def test_field_selector_supports_only_known_fields() -> None:
    with pytest.raises(ValueError, match=r'"spec\.x" is not a known field selector: only'):
        parse_field_selector("spec.x=1")
    extra = frozenset({"metadata.name", "involvedObject.name"})
    assert parse_field_selector("involvedObject.name=pvc", supported=extra).matches(OBJ)
    with pytest.raises(ValueError, match="no operator"):
        parse_field_selector("metadata.name")


def test_exact_name() -> None:
    assert parse_field_selector("metadata.name=a").exact_name() == "a"
    assert parse_field_selector("metadata.name!=a").exact_name() is None
