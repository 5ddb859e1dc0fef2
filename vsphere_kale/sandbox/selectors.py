"""Label and field selectors, parsed like k8s.io/apimachinery's ``labels.Parse`` and ``fields``.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists),
``!k`` (does not exist); a comma means AND. Field selectors: ``path=v``, ``path==v``,
``path!=v`` over the fields each type supports (``metadata.name``, ``metadata.namespace`` for
all; a few more for events, namespaces, secrets). A field the real API server would refuse is
refused here too (400 "... is not a known field selector"), so a typo fails loudly instead
of matching everything.

Pure: no I/O. ``ValueError`` means a malformed selector; the server answers 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$"
)
_VALUE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as in Kubernetes.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in selector {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise ValueError(f"unbalanced '(' in selector {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"invalid label key {key!r} in selector {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise ValueError(f"invalid label value {value!r} in selector {text!r}")
    return value


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter; ``ValueError`` if malformed."""
    if not text or not text.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty requirement in label selector {text!r}")
        set_match = _SET_RE.match(part)
        if set_match:
            key, op, inner = set_match.groups()
            values = tuple(_check_value(v.strip(), text) for v in inner.split(","))
            reqs.append(Requirement(_check_key(key, text), op, values))
            continue
        for op in ("==", "!=", "="):
            if op in part:
                key, _, value = part.partition(op)
                reqs.append(
                    Requirement(
                        _check_key(key.strip(), text),
                        "!=" if op == "!=" else "=",
                        (_check_value(value.strip(), text),),
                    )
                )
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_key(part[1:].strip(), text), "!"))
            else:
                reqs.append(Requirement(_check_key(part, text), "exists"))
    return LabelSelector(tuple(reqs))


def selector_from_label_selector_object(obj: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (``matchLabels`` / ``matchExpressions``) as a selector.

    An absent selector matches everything, like webhook namespaceSelector/objectSelector.
    """
    if not obj:
        return LabelSelector()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (obj.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in obj.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise ValueError(f"unsupported matchExpressions operator {expr.get('operator')!r}")
        reqs.append(Requirement(str(expr.get("key")), op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


# --- field selectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, r.path) == r.value) == r.equal for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def exact_name(self) -> str | None:
        """``metadata.name=x`` if present (kubectl uses it to watch one object)."""
        for r in self.requirements:
            if r.path == "metadata.name" and r.equal:
                return r.value
        return None


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


def parse_field_selector(
    text: str | None, *, supported: frozenset[str] = COMMON_FIELDS
) -> FieldSelector:
    """Parse a ``fieldSelector``; ``ValueError`` for bad syntax or an unsupported field."""
    if not text or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        for op in ("==", "!=", "="):
            if op in part:
                path, _, value = part.partition(op)
                path = path.strip()
                if path not in supported:
                    # kube-apiserver 1.36's wording, the metadata fields first.
                    first = [f for f in ("metadata.name", "metadata.namespace") if f in supported]
                    rest = sorted(f for f in supported if f not in first)
                    only = ", ".join(f'"{f}"' for f in first + rest)
                    raise ValueError(f'"{path}" is not a known field selector: only {only}')
                reqs.append(FieldRequirement(path, op != "!=", value.strip()))
                break
        else:
            raise ValueError(f"invalid field selector {text!r}: {part!r} has no operator")
    return FieldSelector(tuple(reqs))
