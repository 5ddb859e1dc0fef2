"""The README and docs/ hold together: every relative link resolves, and the README stays short.

A reader follows links from the README into docs/ and between pages; a moved file or a renamed
heading must fail here rather than leave a dead link. Anchors follow GitHub's rules for heading
ids (github-slugger): lower-case, punctuation dropped, each space a hyphen, repeats numbered.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from vsphere_kale.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may carry a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `[x](y)` in a shell sample is not a link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading's rendered text (github-slugger's rule)."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML renders no text of its own
    text = text.replace("**", "").replace("*", "")
    kept = "".join(
        ch
        for ch in text.lower()
        if ch in " -_" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading id of a Markdown file, numbering repeats as GitHub does (x, x-1, x-2)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def link_targets(path: Path) -> list[str]:
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
            continue
        targets += INLINE_LINK.findall(CODE_SPAN.sub("", line))
    return targets


def broken_links(path: Path) -> list[str]:
    """One sentence per relative link of ``path`` that leads nowhere."""
    problems = []
    for target in link_targets(path):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # absolute URLs are not ours to check offline
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if not resolved.exists():
            problems.append(f"{name}: link {target!r}: {file_part} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{name}: link {target!r}: no heading with id #{anchor}")
        elif anchor and resolved.suffix != ".md":
            problems.append(f"{name}: link {target!r}: an anchor into a non-Markdown file")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_docs_exist_and_link_out() -> None:
    pages = documents()
    assert ROOT / "docs" / "README.md" in pages
    # The README is the way in: a page it does not link is a page nobody finds.
    readme_targets = {t.partition("#")[0] for t in link_targets(ROOT / "README.md")}
    for page in pages[1:]:
        assert f"docs/{page.name}" in readme_targets or page.name in {
            t.partition("#")[0] for t in link_targets(ROOT / "docs" / "README.md")
        }, f"docs/{page.name} is linked from neither README.md nor docs/README.md"


def test_readme_fits_on_a_few_screens() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_the_readme_test_command_is_what_ci_runs() -> None:
    command = "pip install -e '.[test]' && python -m pytest"
    assert command in (ROOT / "README.md").read_text(encoding="utf-8")
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def documented_rules(intro: str) -> set[tuple[frozenset[str], ...]]:
    """The rows of the RBAC table that follows ``intro`` in docs/install.md."""
    lines = (ROOT / "docs" / "install.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(intro)
    rows: set[tuple[frozenset[str], ...]] = set()
    for line in lines[start + 1 :]:
        if not line.strip():
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in {"API group", ""} or set(cells[0]) <= {"-"}:
            continue  # the header row and the |---| line
        groups, resources, verbs, names = cells[:4]
        rows.add(
            (
                frozenset(g.strip(" `").replace('""', "") for g in groups.split(",")),
                frozenset(r.strip(" `") for r in resources.split(",")),
                frozenset(v.strip(" `") for v in verbs.split(",")),
                frozenset(n.strip(" `") for n in names.split(",") if n.strip()),
            )
        )
    return rows


def manifest_rules(kind: str) -> set[tuple[frozenset[str], ...]]:
    text = (ROOT / "deploy" / "base" / "rbac.yaml").read_text(encoding="utf-8")
    (role,) = [
        d
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == kind and d["metadata"]["name"] == "vsphere-kale"
    ]
    return {
        (
            frozenset(rule["apiGroups"]),
            frozenset(rule["resources"]),
            frozenset(rule["verbs"]),
            frozenset(rule.get("resourceNames", ())),
        )
        for rule in role["rules"]
    }


@pytest.mark.parametrize(
    ("kind", "intro"),
    [
        ("ClusterRole", "ClusterRole `vsphere-kale` (cluster-wide):"),
        ("Role", "Role `vsphere-kale` (namespace `vsphere-kale` only):"),
    ],
)
def test_the_rbac_table_is_what_the_manifest_grants(kind: str, intro: str) -> None:
    # An admin reads this table to decide whether to install; it must not under- or overstate.
    assert documented_rules(intro) == manifest_rules(kind)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Try it: `vsphere-kale sandbox`", "try-it-vsphere-kale-sandbox"),
        ("RBAC: what the service may do, and why", "rbac-what-the-service-may-do-and-why"),
        ("The sandbox's policy parts: users, RBAC", "the-sandboxs-policy-parts-users-rbac"),
        (
            "The widget `vsphere_kale.jupyter.widget.HealthPanel`",
            "the-widget-vsphere_kalejupyterwidgethealthpanel",
        ),
        ("Measured (2 cores, load average ~7)", "measured-2-cores-load-average-7"),
        ("Health — in Jupyter", "health--in-jupyter"),
        ("p95 ≤ 150 ms", "p95--150-ms"),
        ("**Bold** and [a link](x.md)", "bold-and-a-link"),
    ],
)
def test_slugs_follow_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok](other.md#same-1) [ok](#page) [web](https://example.com/x#y)\n"
        "`[not a link](nowhere.md)`\n"
        "```\n[also not](nowhere.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#different) [self](#nope)\n"
        "[ref]: missing-too.md\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [p.split(": ", 2)[1] for p in problems] == [
        "link 'missing.md'",
        "link 'other.md#different'",
        "link '#nope'",
        "link 'missing-too.md'",
    ]


def settings_keys(cls: type, prefix: str = "") -> list[str]:
    """Every YAML key of the settings, dotted (``storage.rwxStorageClass``)."""
    keys = []
    for f in dataclasses.fields(cls):
        key = prefix + f.metadata["key"]
        if dataclasses.is_dataclass(f.default_factory):
            keys += settings_keys(f.default_factory, key + ".")  # type: ignore[arg-type]
        else:
            keys.append(key)
    return keys


def test_configuration_page_documents_every_settings_key() -> None:
    # A key an admin cannot find in the docs is a key nobody sets on purpose.
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    tables = {
        section: text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
        for section in ("storage", "podSecurity", "server", "adminApi", "namespace")
    }
    missing = []
    for key in settings_keys(Settings):
        section, _, leaf = key.rpartition(".")
        if not section:
            section = leaf
        if f"`{leaf}`" not in tables[section]:
            missing.append(key)
    assert missing == []
