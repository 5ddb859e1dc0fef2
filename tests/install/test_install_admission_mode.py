"""``install --admission policy`` against an API server that serves no MutatingAdmissionPolicy
(the embedded sandbox, like a 1.33 cluster or 1.34/35 without the gate): one sentence, exit
non-zero, nothing written. And the flags that do not go together."""

from __future__ import annotations

from click.testing import CliRunner

from vsphere_kale.cli import main
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.sandbox.testing import RunningSandbox


def _install(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["install", *args], env={"VSPHERE_KALE_CONFIG": ""})
    return result.exit_code, result.stderr


def test_a_cluster_without_admission_policies_gets_a_sentence_and_no_writes(
    sandbox: RunningSandbox,
) -> None:
    code, err = _install(
        "--kubeconfig",
        str(sandbox.kubeconfig_path),
        "--namespace",
        "kale-nomap",
        "--rwx-storage-class",
        "nfs-client",
        "--admission",
        "policy",
    )
    assert code != 0
    assert "serves no MutatingAdmissionPolicy" in err and "--admission webhook" in err
    assert "Traceback" not in err
    kube = Kube(sandbox.api_client())
    assert kube.get_optional(r.NAMESPACE, "kale-nomap") is None  # discovery ran before writes


def test_flags_that_belong_to_the_other_mode_are_refused() -> None:
    code, err = _install(
        "-o",
        "yaml",
        "--rwx-storage-class",
        "nfs-client",
        "--admission",
        "policy",
        "--webhook-url",
        "https://127.0.0.1:8443/mutate/persistentvolumeclaims",
    )
    assert code == 2 and "drop it with --admission policy" in err
    code, err = _install(
        "-o", "yaml", "--rwx-storage-class", "nfs-client", "--admission-policy-version", "v1"
    )
    assert code == 2 and "only goes with --admission policy" in err
