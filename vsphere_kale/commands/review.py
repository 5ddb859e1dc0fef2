"""``vsphere-kale review``: the webhook's policy, offline, like ``kyverno apply``.

Every object goes through the same pure path as a live AdmissionReview
(:func:`vsphere_kale.webhook.admission.review`), so what ``review`` prints is what the API server
would store.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import click
import jsonpatch
import yaml

from vsphere_kale.settings import Settings, load_settings
from vsphere_kale.webhook import admission

EXIT_BAD_INPUT = 2


class InputError(click.ClickException):
    """Unreadable or invalid input: exit 2 with the file and document index."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


@dataclass(frozen=True)
class Reviewed:
    obj: dict[str, Any]
    line: str  # the stderr summary line: every object gets one, claim or not


def parse_input_documents(stream: TextIO, source: str) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{source}: not valid YAML or JSON{where}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not a text file ({exc.reason})") from exc


def _check_object(doc: object, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}"
        )
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InputError(f"{where}: missing {key}")
    return doc


def _is_list(obj: dict[str, Any]) -> bool:
    return obj["kind"] == "List" or (obj["kind"].endswith("List") and "items" in obj)


def iter_objects(docs: list[Any], source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, object) for every object, looking inside ``List`` kinds."""
    for index, doc in enumerate(docs):
        where = f"{source}: document {index}"
        obj = _check_object(doc, where)
        if _is_list(obj):
            items = obj.get("items")
            if not isinstance(items, list):
                raise InputError(f"{where}: items must be a list")
            for item_index, item in enumerate(items):
                yield (
                    f"{where} item {item_index}",
                    _check_object(item, f"{where} item {item_index}"),
                )
        else:
            yield where, obj


def review_documents(
    docs: list[Any], source: str, *, namespace: str, settings: Settings
) -> tuple[list[dict[str, Any]], list[str]]:
    """The documents as they would be stored, in the same shape (a ``List`` stays a ``List``
    with its own apiVersion, kind and metadata), and one summary line per object."""
    stored: list[dict[str, Any]] = []
    lines: list[str] = []
    for index, doc in enumerate(docs):
        where = f"{source}: document {index}"
        obj = _check_object(doc, where)
        if not _is_list(obj):
            result = review_object(obj, namespace=namespace, settings=settings)
            stored.append(result.obj)
            lines.append(result.line)
            continue
        items = []
        for item_where, item in iter_objects([obj], source):
            del item_where
            result = review_object(item, namespace=namespace, settings=settings)
            items.append(result.obj)
            lines.append(result.line)
        stored.append({**obj, "items": items})
    return stored, lines


def review_object(obj: dict[str, Any], *, namespace: str, settings: Settings) -> Reviewed:
    group, _, version = obj["apiVersion"].rpartition("/")
    raw_metadata = obj.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    ns = metadata.get("namespace") or namespace
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    if (group, obj["kind"]) != ("", "PersistentVolumeClaim"):
        return Reviewed(obj, f"{ns}/{name}: {obj['kind']}, not a claim: unchanged")
    request = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": "persistentvolumeclaims"},
            "namespace": ns,
            "name": name,
            "operation": "CREATE",
            "userInfo": {"username": "vsphere-kale-review"},
            "object": obj,
        },
    }
    outcome = admission.review(request, settings)
    stored = obj
    if outcome.decision.patch:
        stored = jsonpatch.apply_patch(obj, list(outcome.decision.patch))
    line = f"{ns}/{name}: {outcome.decision.summary}"
    return Reviewed(stored, line)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _dump(objects: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        doc: Any = (
            objects[0]
            if len(objects) == 1
            else {
                "apiVersion": "v1",
                "kind": "List",
                "items": objects,
            }
        )
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=len(objects) > 1)


@click.command()
@click.option("-f", "--filename", "filename", required=True, help="Manifest file, or - for stdin.")
@click.option(
    "-n",
    "--namespace",
    default="default",
    show_default=True,
    help="Namespace for objects that name none.",
)
@click.option("--rwx-storage-class", help="Class RWX claims move to (overrides the config).")
@click.option("--config", "config_path", help="Settings file (default $VSPHERE_KALE_CONFIG).")
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def review(
    filename: str,
    namespace: str,
    rwx_storage_class: str | None,
    config_path: str | None,
    output: str,
) -> None:
    """Show how the webhook would store the objects in a manifest (offline).

    Prints every object as it would be stored (non-claims unchanged, a List kept as a List)
    to stdout; to stderr one line per object and a total.
    """
    settings = load_settings(config_path, rwx_storage_class=rwx_storage_class)
    if not settings.storage.rwx_storage_class:
        raise InputError(
            "no RWX storage class: pass --rwx-storage-class or set storage.rwxStorageClass "
            "in the --config file"
        )
    source = "<stdin>" if filename == "-" else filename
    try:
        if filename == "-":
            docs = parse_input_documents(sys.stdin, source)
        else:
            with open(filename, encoding="utf-8") as handle:
                docs = parse_input_documents(handle, source)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc

    stored, lines = review_documents(docs, source, namespace=namespace, settings=settings)
    if not stored:
        raise InputError(f"{source}: no objects found")
    for line in lines:
        click.echo(line, err=True)
    kinds = sum(1 for line in lines if ", not a claim: " not in line)
    rewritten = sum(1 for line in lines if ": rewritten " in line)
    click.echo(
        f"{_count(len(lines), 'object')}, {_count(kinds, 'claim')}, {rewritten} rewritten",
        err=True,
    )
    click.echo(_dump(stored, output), nl=False)
