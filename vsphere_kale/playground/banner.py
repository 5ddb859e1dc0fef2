"""What ``vsphere-kale sandbox`` prints once everything answers: where things are, what to try.

Every command in it runs as printed, from any directory: paths are absolute, and what it says
about pod security depends on the flavor (psp: a RoleBinding; psa: namespace labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from vsphere_kale.playground.seed import MARSHAL_PVC, NFS_CLASS
from vsphere_kale.sandbox.kubeconfig import context_name

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


class _System(Protocol):
    flavor: str
    user: str
    namespace: str
    kubeconfig_path: Path
    ca_file: Path
    serve_log: Path
    webhook_log: Path
    install_log: Path

    @property
    def admin_url(self) -> str: ...

    @property
    def webhook_url(self) -> str: ...

    @property
    def api_url(self) -> str: ...

    @property
    def users(self) -> list[str]: ...

    @property
    def real_control_plane(self) -> bool: ...

    def jupyter_traits(self) -> dict[str, Any]: ...


def build_pod_security_steps(flavor: str, kubectl: str) -> list[str]:
    """A new Profile, and where to see what the reconciler did for it."""
    profile = [
        f"  {kubectl} apply -f - <<'YAML'   # a new Profile: "
        + (
            "the reconciler grants its pods the PSP"
            if flavor == "psp"
            else "the reconciler sets its Pod Security labels"
        ),
        "apiVersion: kubeflow.org/v1",
        "kind: Profile",
        "metadata: {name: carol}",
        "spec: {owner: {kind: User, name: carol@example.com}}",
        "YAML",
    ]
    if flavor == "psp":
        return [*profile, f"  {kubectl} get rolebinding vsphere-kale-psp -n carol"]
    return [*profile, f"  {kubectl} get ns carol --show-labels"]


def build_banner(system: _System, *, lab_url: str | None) -> str:
    """The ready banner (pure: everything comes from ``system``)."""
    kubeconfig = system.kubeconfig_path
    contexts = ", ".join(context_name(user) for user in system.users)
    lines = [
        f"vsphere-kale sandbox is running ({system.flavor} flavor, seed kubeflow-demo)",
        f"  API server  {system.api_url}"
        + ("  (real kube-apiserver)" if system.real_control_plane else ""),
        f"  kubeconfig  {kubeconfig}  (contexts: {contexts})",
        f"  admin API   {system.admin_url}  (CA {system.ca_file})",
        f"              log: {system.serve_log}",
        f"  webhook     {system.webhook_url}",
        f"              log: {system.webhook_log}",
        f"  install     as `vsphere-kale install` does it; log: {system.install_log}",
    ]
    if lab_url:
        lines.append(f"  JupyterLab  {lab_url}")
        lines.append(
            f"              (the notebook acts as {system.user} in namespace {system.namespace})"
        )
    else:
        lines += [
            "  JupyterLab  not started (--no-lab). To point your own Jupyter server at it:",
            "    jupyter lab "
            + " ".join(
                f"--VsphereKaleApp.{name}={value}"
                for name, value in system.jupyter_traits().items()
            ),
        ]
    k = f"kubectl --kubeconfig {kubeconfig}"
    rwm = EXAMPLES / "kale-rwm-volume.yaml"
    lines += [
        "",
        "Try next:",
        f"  {k} get pvc -n alice      # the stuck Kale marshal volume, on a block class",
        f"  {k} apply -f {rwm}   # a Kale rwm volume (RWX)",
        f"  {k} get pvc -n alice -o custom-columns=NAME:.metadata.name,"
        f"CLASS:.spec.storageClassName      # the webhook put it on {NFS_CLASS}",
        *build_pod_security_steps(system.flavor, k),
        f"  vsphere-kale recreate-pvc {MARSHAL_PVC} -n alice --kubeconfig {kubeconfig} "
        f"--rwx-storage-class {NFS_CLASS}   # the stuck claim, recreated on {NFS_CLASS}",
        f"  {k} get pvc -n alice      # ...and Bound by the {NFS_CLASS} provisioner",
        f"  vsphere-kale doctor --kubeconfig {kubeconfig}   # the installation, checked",
    ]
    if lab_url:
        lines.append("  In the notebook, the panel shows alice's namespace and its fixes.")
    lines += ["", "Press Ctrl-C to stop everything."]
    return "\n".join(lines)
