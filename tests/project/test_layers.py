"""What each face loads: the Jupyter extension stays small, the client library stays in kube/."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vsphere_kale"
IMPORTS_CLIENT = re.compile(r"^\s*(import|from) (kubernetes|urllib3)\b", re.MULTILINE)


def _loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(done.stdout))


def _ours(loaded: set[str]) -> set[str]:
    return {
        name
        for name in loaded
        if name.startswith(("vsphere_kale.reconcile", "vsphere_kale.webhook"))
    }


def _metrics(loaded: set[str]) -> set[str]:
    return {name for name in loaded if name.split(".")[0] == "prometheus_client"}


def test_the_jupyter_extension_loads_no_reconciler_webhook_or_metrics_of_ours() -> None:
    # Given the server extension as Jupyter loads it
    loaded = _loaded_after("import vsphere_kale.jupyter")
    assert "vsphere_kale.jupyter.service" in loaded  # (not vacuous: it did load)
    # Then none of the reconciler's or the webhook's modules came with it
    assert _ours(loaded) == set()
    # And prometheus_client only as far as jupyter_server itself loads it (its own metrics)
    jupyter_server = _loaded_after(
        "import jupyter_server.extension.application, jupyter_server.base.handlers, "
        "jupyter_server.auth.decorator"
    )
    assert _metrics(loaded) <= _metrics(jupyter_server)


def test_the_status_path_loads_no_metrics() -> None:
    # (Any module of vsphere_kale.jupyter loads jupyter_server, which loads prometheus_client
    # for its own metrics; the status the extension computes must not add it elsewhere.)
    loaded = _loaded_after("import vsphere_kale.health.status, vsphere_kale.kube")
    assert "vsphere_kale.health.status" in loaded
    assert _ours(loaded) == set()
    assert _metrics(loaded) == set()


def test_only_the_kube_package_imports_the_client_library() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if IMPORTS_CLIENT.search(path.read_text(encoding="utf-8"))
    )
    # sandbox/testing.py is test scaffolding: it hands tests a real ApiClient.
    allowed = [p for p in importers if p.startswith("vsphere_kale/kube/")]
    assert set(importers) - set(allowed) <= {"vsphere_kale/sandbox/testing.py"}
    assert allowed, "the kube package itself must be found"


def test_leader_election_overrides_match_the_installed_library() -> None:
    # leaderelection.py subclasses and calls these library methods; an upgrade of
    # ``kubernetes`` that renames or reorders their parameters must fail here, loudly.
    from kubernetes.leaderelection.leaderelection import LeaderElection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    from vsphere_kale.kube.leaderelection import LIBRARY_METHODS

    owners = {"LeaderElection": LeaderElection, "LeaseLock": LeaseLock}
    for qualified, expected in LIBRARY_METHODS.items():
        owner, _, method = qualified.partition(".")
        found = getattr(owners[owner], method, None)
        assert found is not None, f"kubernetes no longer has {qualified}"
        assert tuple(inspect.signature(found).parameters) == expected, qualified


def test_the_import_contracts_hold() -> None:
    # The layers of pyproject's [tool.importlinter]: the pure core imports no I/O, the Jupyter
    # extension no reconciler or webhook, nothing but the CLI the commands, the sandbox none
    # of the product but errors and policy, and only kube/ the Kubernetes client.
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
        "lint-imports"
    )
    assert lint, "lint-imports is not installed (pip install -e .[test])"
    done = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout
