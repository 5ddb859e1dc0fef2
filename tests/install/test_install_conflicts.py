"""What install says it took over, from kube-apiserver's server-side apply conflicts (pure).

The messages are kube-apiserver 1.36's (``Apply failed with N conflict(s): ...``), as
recorded in tests/realcp/test_realcp_install.py and the sandbox's equivalent.
"""

from __future__ import annotations

import pytest

from vsphere_kale.install.installer import describe_conflicts


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            "apply deployments vsphere-kale/vsphere-kale: Apply failed with 1 conflict: conflict "
            'with "kubectl" with subresource "scale" using apps/v1: .spec.replicas',
            '.spec.replicas from "kubectl"',
        ),
        (
            'apply configmaps ns/x: Apply failed with 1 conflict: conflict with "kubectl-edit": '
            ".data.k",
            '.data.k from "kubectl-edit"',
        ),
        (
            'apply deployments ns/x: Apply failed with 2 conflicts: conflicts with "kubectl-edit" '
            'using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name="x"].image',
            '.spec.replicas, .spec.template.spec.containers[name="x"].image from "kubectl-edit"',
        ),
        (
            'apply services ns/x: Apply failed with 2 conflicts: conflict with "a" using v1: '
            '.spec.ports[port=443,protocol="TCP"].targetPort\nconflict with "b" using v1: .x',
            '.spec.ports[port=443,protocol="TCP"].targetPort from "a"; .x from "b"',
        ),
    ],
)
def test_each_taken_field_is_named_with_its_manager(message: str, said: str) -> None:
    assert describe_conflicts(message) == said


def test_an_unexpected_message_is_passed_on_rather_than_lost() -> None:
    assert describe_conflicts("apply x: something else") == "apply x: something else"
