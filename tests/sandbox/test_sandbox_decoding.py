"""The sandbox's emulation of kube-apiserver's decoder: Go's base64 error offsets, Go's ``%v``
of a patch, and the normalisation a decoded struct gets. Expected values were read off
kube-apiserver 1.36 (the differential suite compares the HTTP answers end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from vsphere_kale.sandbox.decoding import (
    DecodeError,
    apply_type_errors,
    decode,
    go_base64_decode,
    go_v,
    strategic_patch_error,
)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("not base64!", 3),
        ("abc", 0),
        ("ab=c", 2),
        ("YQ", 0),
        ("YQ=", 3),
        ("Y", 0),
        ("YWJj====", 4),
        ("a$bc", 1),
        ("YWJjZA==YQ==", 8),
    ],
)
def test_base64_errors_name_go_s_offset(text: str, offset: int) -> None:
    with pytest.raises(DecodeError, match=rf"^illegal base64 data at input byte {offset}$"):
        go_base64_decode(text)


@pytest.mark.parametrize(
    ("text", "data"),
    [("", b""), ("YWJj\nZA==", b"abcd"), ("YQ==\r\n", b"a"), ("YR==", b"a"), ("YWI=", b"ab")],
)
def test_base64_skips_newlines_and_ignores_trailing_bits(text: str, data: bytes) -> None:
    assert go_base64_decode(text) == data


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ({"data": {"k": True, "j": "x"}}, "map[data:map[j:x k:true]]"),
        ({"k": {"x": [1, "a", None, 2.0]}}, "map[k:map[x:[1 a <nil> 2]]]"),
        (12345678901234567890, "1.2345678901234567e+19"),
        (1.5, "1.5"),
        (1234567.0, "1.234567e+06"),
        (100000.0, "100000"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
    ],
)
def test_go_v_prints_as_go_does(value: Any, printed: str) -> None:
    assert go_v(value) == printed


def test_decode_normalises_as_the_go_struct_is_served() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "s", "labels": {"b": None, "a": "x"}, "annotations": {}},
        "data": {"z": "YWJj\nZA==", "k": None},
        "stringData": None,
    }
    decode("Secret", obj)
    assert obj == {
        "metadata": {"name": "s", "labels": {"a": "x", "b": ""}},
        "data": {"k": "", "z": "YWJjZA=="},
    }


def test_decode_reports_the_first_error_in_document_order() -> None:
    first_data = {"data": {"k": 1}, "metadata": {"labels": {"l": True}}}
    first_labels = {"metadata": {"labels": {"l": True}}, "data": {"k": 1}}
    with pytest.raises(DecodeError, match=r"number into Go struct field ConfigMap\.data of"):
        decode("ConfigMap", first_data)
    with pytest.raises(
        DecodeError, match=r"bool into Go struct field ObjectMeta\.metadata\.labels"
    ):
        decode("ConfigMap", first_labels)


def test_untyped_kinds_check_only_object_meta() -> None:
    profile = {"metadata": {"name": "p"}, "data": {"k": True}, "spec": {"x": 1}}
    decode("Profile", profile)
    assert profile["data"] == {"k": True}


@pytest.mark.parametrize(
    ("kind", "patch", "why"),
    [
        ("ConfigMap", {"data": {"k": 5}}, "cannot convert int64 to string"),
        ("ConfigMap", {"data": {"k": True}}, "unrecognized type: string"),
        (
            "ConfigMap",
            {"data": {"k": True}, "metadata": {"labels": {"a": 1}}},
            "cannot convert int64 to string",
        ),
        ("ConfigMap", {"data": ["x"]}, "cannot restore map from slice"),
        ("ConfigMap", {"binaryData": {"k": 3}}, "cannot restore slice from int64"),
        (
            "Secret",
            {"data": {"k": "abc"}},
            "error decoding from json: illegal base64 data at input byte 0",
        ),
        ("ConfigMap", {"data": {"k": None, "j": "x"}}, None),
    ],
)
def test_strategic_patch_errors(kind: str, patch: dict[str, Any], why: str | None) -> None:
    assert strategic_patch_error(kind, patch) == why


def test_apply_type_errors_name_the_path_and_the_value() -> None:
    config = {"metadata": {"name": "p", "labels": {"a": 1}}, "data": {"k": {"x": 1}}}
    assert apply_type_errors("ConfigMap", config) == [
        ".metadata.labels.a: expected string, got &value.valueUnstructured{Value:1}",
        ".data.k: expected string, got "
        '&value.valueUnstructured{Value:map[string]interface {}{"x":1}}',
    ]
    assert apply_type_errors("ConfigMap", {"data": ["x"]}) == [".data: expected map, got &{[x]}"]
