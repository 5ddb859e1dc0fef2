"""Server-side apply and ``metadata.managedFields``, a reduced structured-merge-diff.

What kube-apiserver does and this does too (https://kubernetes.io/docs/reference/using-api/server-side-apply/):

- every write records who set which fields in ``metadata.managedFields`` (``FieldsV1``), one
  entry per manager and operation (``Apply`` for apply patches, ``Update`` for the rest); the
  manager is ``?fieldManager=`` or, if absent, the user agent up to its first ``/``;
- an apply sets the fields of its configuration; a field another manager owns with a
  different value is a conflict: 409 with kube's message and one ``FieldManagerConflict``
  cause per field, unless ``force=true``, which takes the field over;
- fields the applier owned before and left out of this configuration are removed, unless
  another manager owns them too (pruning);
- a non-apply write takes over the fields it changed from every other manager.

Reduced: every list is atomic (kube merges associative lists such as ``containers`` by key
and treats ``finalizers`` as a set), ``status`` is not tracked, and no schema decides which
fields exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.store import clone
from vsphere_kale.sandbox.types import JSONObject

Path = tuple[str, ...]

#: Not owned by anyone: identity and server-set metadata, and the status.
_UNTRACKED_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "generateName",
    }
)
_UNTRACKED_TOP = frozenset({"apiVersion", "kind", "status"})


@dataclass
class Entry:
    manager: str
    operation: str  # Apply | Update
    api_version: str
    time: str
    fields: set[Path]

    def to_json(self) -> JSONObject:
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }


def leaf_paths(obj: Mapping[str, Any]) -> set[Path]:
    """The owned fields of an object: leaves of nested maps (a list is one leaf; an empty map
    owns nothing, so applying ``data: {}`` neither conflicts with nor prunes others' keys)."""
    paths: set[Path] = set()

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                walk(child, (*path, str(key)))
        else:
            paths.add(path)

    for key, value in obj.items():
        if key in _UNTRACKED_TOP:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            for mkey, mvalue in value.items():
                if mkey not in _UNTRACKED_META:
                    walk(mvalue, ("metadata", mkey))
            continue
        walk(value, (key,))
    return paths


def to_fields_v1(paths: Iterable[Path]) -> JSONObject:
    tree: JSONObject = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def from_fields_v1(tree: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    children = {k: v for k, v in tree.items() if k.startswith("f:")}
    if not children:
        return {prefix} if prefix else set()
    for key, child in children.items():
        paths |= from_fields_v1(child if isinstance(child, Mapping) else {}, (*prefix, key[2:]))
    return paths


def read_entries(obj: Mapping[str, Any]) -> list[Entry]:
    entries = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(raw, Mapping) or not raw.get("manager"):
            continue
        entries.append(
            Entry(
                str(raw["manager"]),
                str(raw.get("operation") or "Update"),
                str(raw.get("apiVersion") or ""),
                str(raw.get("time") or ""),
                from_fields_v1(raw.get("fieldsV1") or {}),
            )
        )
    return entries


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


def _overlaps(a: Path, b: Path) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _remove(obj: JSONObject, path: Path) -> None:
    parents = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps the removal emptied
        if parent[key] == {} and len(path) > 1:
            del parent[key]
        else:
            break


def _merge(base: JSONObject, config: Mapping[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = clone(value)


def _conflict(conflicts: list[tuple[Entry, Path]]) -> StatusError:
    """kube's 409: an Update manager is named with its version (``"kubectl-edit" using v1``,
    observed on kube-apiserver 1.36 with the same version as the request), an Apply manager
    by name only (the apiserver's fieldmanager ``printManager``)."""

    def dotted(path: Path) -> str:
        return "".join(f".{p}" for p in path)

    def who(entry: Entry) -> str:
        version = f" using {entry.api_version}" if entry.operation == "Update" else ""
        return f'"{entry.manager}"{version}'

    by_manager: dict[str, list[Path]] = {}
    for entry, path in conflicts:
        by_manager.setdefault(who(entry), []).append(path)
    count = len(conflicts)
    parts = []
    for manager, paths in by_manager.items():
        if len(paths) == 1:
            parts.append(f"conflict with {manager}: {dotted(paths[0])}")
        else:
            listed = "".join(f"\n- {dotted(p)}" for p in paths)
            parts.append(f"conflicts with {manager}:{listed}")
    noun = "conflict" if count == 1 else "conflicts"
    message = f"Apply failed with {count} {noun}: " + "\n".join(parts)
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}", "field": dotted(p)}
        for e, p in conflicts
    ]
    return StatusError(409, "Conflict", message, details={"causes": causes})


def apply(
    current: JSONObject | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    now: str,
    force: bool,
) -> JSONObject:
    """The object after ``manager`` applies ``config`` (409 Conflict unless ``force``)."""
    base = clone(current) if current is not None else {}
    entries = read_entries(base)
    mine = next(
        (e for e in entries if e.manager == manager and e.operation == "Apply"),
        None,
    )
    wanted = leaf_paths(config)
    conflicts: list[tuple[Entry, Path]] = []
    taken: list[tuple[Entry, Path]] = []
    for entry in entries:
        if entry is mine:
            continue
        for owned in sorted(entry.fields):
            for path in wanted:
                if not _overlaps(owned, path):
                    continue
                shorter = owned if len(owned) <= len(path) else path
                if _get(base, shorter) != _get(config, shorter):
                    conflicts.append((entry, owned))
                    taken.append((entry, owned))
                break
    if conflicts and not force:
        raise _conflict(conflicts)
    for entry, owned in taken:
        entry.fields.discard(owned)
    # Prune what this manager applied before and no longer does, if nobody else holds it.
    if mine is not None:
        others = [f for e in entries if e is not mine for f in e.fields]
        for path in sorted(mine.fields - wanted, key=len, reverse=True):
            if not any(_overlaps(path, w) for w in wanted) and not any(
                _overlaps(path, o) for o in others
            ):
                _remove(base, path)
    before = set(mine.fields) if mine is not None else None
    _merge(base, config)
    if mine is None:
        mine = Entry(manager, "Apply", api_version, now, set())
        entries.append(mine)
    # A no-op apply stays a no-op (same resourceVersion, no event): kube does not move the
    # manager's timestamp when neither the object nor the owned fields changed
    # (IgnoreManagedFieldsTimestampsTransformer).
    noop = (
        current is not None
        and before == wanted
        and not taken
        and mine.api_version == api_version
        and _without_managed_fields(base) == _without_managed_fields(current)
    )
    mine.fields = wanted
    if not noop:
        mine.time = now
    mine.api_version = api_version
    _store_entries(base, entries)
    return base


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def record_update(
    old: Mapping[str, Any] | None,
    new: JSONObject,
    *,
    manager: str,
    api_version: str,
    now: str,
) -> None:
    """Set ``new``'s managedFields after a non-apply write by ``manager`` (in place)."""
    given = (new.get("metadata") or {}).get("managedFields")
    if given is not None and given != []:
        source: Mapping[str, Any] = new  # the client set them: kube keeps what it sent
    else:
        source = old or {}
    entries = [] if given == [] else read_entries(source)
    old_meta = (old or {}).get("metadata") or {}
    if old is not None and _same_owners(entries, read_entries(old)):
        # What the client sent back differs at most in timestamps (a client's datetime
        # round trip): keep the stored entries, so a no-op update stays a no-op, as kube's
        # IgnoreManagedFieldsTimestampsTransformer does.
        entries = read_entries(old)
        if _changed_paths(old, new) == (set(), set()):
            if old_meta.get("managedFields"):
                new.setdefault("metadata", {})["managedFields"] = clone(old_meta["managedFields"])
            else:
                new.get("metadata", {}).pop("managedFields", None)
            return
    changed, removed = _changed_paths(old, new)
    for entry in entries:
        entry.fields = {
            f
            for f in entry.fields
            if not any(_overlaps(f, c) for c in changed) and f not in removed
        }
    if changed:
        mine = next((e for e in entries if e.manager == manager and e.operation == "Update"), None)
        if mine is None:
            mine = Entry(manager, "Update", api_version, now, set())
            entries.append(mine)
        mine.fields |= changed
        mine.time = now
    _store_entries(new, entries)


def _same_owners(a: list[Entry], b: list[Entry]) -> bool:
    def key(entries: list[Entry]) -> list[tuple[str, str, str, list[Path]]]:
        return sorted((e.manager, e.operation, e.api_version, sorted(e.fields)) for e in entries)

    return key(a) == key(b)


def _changed_paths(
    old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> tuple[set[Path], set[Path]]:
    """Fields ``new`` set or changed, and fields it removed, relative to ``old``."""
    old_paths = leaf_paths(old or {})
    new_paths = leaf_paths(new)
    changed = {p for p in new_paths if p not in old_paths or _get(old, p) != _get(new, p)}
    return changed, old_paths - new_paths


def _store_entries(obj: JSONObject, entries: list[Entry]) -> None:
    kept = [e.to_json() for e in entries if e.fields]
    meta = obj.setdefault("metadata", {})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def default_manager(user_agent: str) -> str:
    """kube's default field manager: the user agent up to its first ``/``."""
    return (user_agent.split("/", 1)[0] or "unknown")[:128]
