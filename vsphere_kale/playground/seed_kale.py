"""``kubeflow-demo``'s Kale 2 and Pod Security picture (part of :mod:`.seed`).

In ``alice``, beside the Kale 0.7 marshal claim:

- the claim ``raw-data``: ReadWriteOnce on the vSphere CSI block class, the volume a Kale 2
  notebook mounts on every step (``metadata.kubeflow_notebook.volumes``, as in Kale's own
  ``mount_pvc.ipynb``). Its notebook, :data:`KALE2_NOTEBOOK`, is written into the
  playground's notebook directory (:func:`write_kale2_notebook`), so ``check-notebook`` and the
  panel have a real file to flag: ``raw-data`` is ``rwo``.
- a notebook server the Kubeflow notebook controller made, StatefulSet ``kale-nb``, whose pod
  ``kale-nb-0`` Pod Security refused: alice has ``istio-injection: enabled`` and the cluster no
  Istio CNI, so the injected ``istio-init`` adds NET_ADMIN and NET_RAW, which ``baseline`` (the
  default psaLevel) forbids. The ``FailedCreate`` Event carries the text kube-apiserver 1.36
  writes (recorded: tests/fixtures/podsecurity_rejections.json, checked by tests/realcp).

The playground has no Istio webhook, so the StatefulSet's template holds ``istio-init`` itself
(what the injector would add to the pod): on the real control plane the controller manager's
StatefulSet controller then meets the same rejection and records its own Event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsphere_kale.sandbox.types import JSONObject, ResourceRef

NAMESPACE = "alice"
RAW_DATA_PVC = "raw-data"
NOTEBOOK_NAME = "kale-nb"
NOTEBOOK_POD = f"{NOTEBOOK_NAME}-0"
KALE2_NOTEBOOK = "kale2-mount-pvc.ipynb"
STATEFUL_SETS = ResourceRef("apps", "statefulsets")

#: kube-apiserver 1.36's rejection of an istio-init pod at baseline, verbatim (the fixture's
#: ``baseline-istio-init`` case); the checks part does not depend on the pod's name.
BASELINE_ISTIO_INIT = (
    'violates PodSecurity "baseline:latest": non-default capabilities (container '
    '"istio-init" must not include "NET_ADMIN", "NET_RAW" in '
    "securityContext.capabilities.add)"
)
#: What the StatefulSet controller writes around the API server's error
#: (k8s.io/kubernetes pkg/controller/statefulset, ``recordPodEvent``; checked by tests/realcp).
FAILED_CREATE_MESSAGE = (
    f"Create Pod {NOTEBOOK_POD} in StatefulSet {NOTEBOOK_NAME} failed error: "
    f'pods "{NOTEBOOK_POD}" is forbidden: {BASELINE_ISTIO_INIT}'
)

ISTIO_INIT: JSONObject = {
    # What istio's sidecar injector adds without the Istio CNI plugin (iptables as root).
    "name": "istio-init",
    "image": "docker.io/istio/proxyv2:1.24.2",
    "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT"],
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "privileged": False,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "runAsUser": 0,
    },
}


def raw_data_pvc() -> JSONObject:
    """The claim a Kale 2 notebook mounts on every step: RWO on the block class (unfit)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": RAW_DATA_PVC, "namespace": NAMESPACE},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "vsan-default-storage-policy",
            "volumeMode": "Filesystem",
        },
    }


def build_kale2_notebook() -> dict[str, Any]:
    """A Kale 2 notebook mounting ``raw-data`` at ``/data`` (the shape of Kale's mount_pvc)."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "kubeflow_notebook": {
                "pipeline_name": "mount-pvc-demo",
                "experiment_name": "demo",
                "base_image": "python:3.12",
                "volumes": [{"name": RAW_DATA_PVC, "type": "pvc", "mount_point": "/data"}],
            },
        },
        "cells": [
            {
                "cell_type": "markdown",
                "id": "intro",
                "metadata": {},
                "source": [
                    "# A Kale 2 pipeline that mounts `raw-data`\n",
                    "\n",
                    "Kale mounts the claim on **every** step. `raw-data` is ReadWriteOnce on the "
                    "block class: run `vsphere-kale check-notebook " + KALE2_NOTEBOOK + "` to "
                    "see why that fails once a step lands on another node.",
                ],
            },
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "load",
                "metadata": {"tags": ["step:load"]},
                "outputs": [],
                "source": ["rows = open('/data/rows.csv').read().splitlines()"],
            },
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "count",
                "metadata": {"tags": ["step:count", "prev:load"]},
                "outputs": [],
                "source": ["print(len(rows))"],
            },
        ],
    }


def write_kale2_notebook(directory: Path) -> Path:
    """Write :data:`KALE2_NOTEBOOK` into ``directory`` (kept if the user already has one)."""
    target = directory / KALE2_NOTEBOOK
    if not target.exists():
        target.write_text(json.dumps(build_kale2_notebook(), indent=1) + "\n", encoding="utf-8")
    return target


def notebook_statefulset() -> JSONObject:
    """The notebook controller's StatefulSet for notebook ``kale-nb`` (istio-init included)."""
    labels = {"statefulset": NOTEBOOK_NAME, "notebook-name": NOTEBOOK_NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": NOTEBOOK_NAME,
            "namespace": NAMESPACE,
            "labels": {"app": NOTEBOOK_NAME},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"statefulset": NOTEBOOK_NAME}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "default-editor",
                    "initContainers": [ISTIO_INIT],
                    "containers": [
                        {
                            "name": NOTEBOOK_NAME,
                            "image": "kubeflownotebookswg/jupyter-scipy:v1.9.0",
                            "ports": [{"containerPort": 8888, "name": "notebook-port"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/home/jovyan/data"}],
                        }
                    ],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": RAW_DATA_PVC}}
                    ],
                },
            },
        },
    }


def failed_create_event(statefulset: JSONObject) -> JSONObject:
    """The StatefulSet controller's Warning for the refused pod."""
    meta = statefulset.get("metadata") or {}
    when = str(meta.get("creationTimestamp") or "")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{NOTEBOOK_NAME}.18a2c4e6f8b0d1e3", "namespace": NAMESPACE},
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": NOTEBOOK_NAME,
            "namespace": NAMESPACE,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": "FailedCreate",
        "message": FAILED_CREATE_MESSAGE,
        "type": "Warning",
        "source": {"component": "statefulset-controller"},
        "reportingComponent": "statefulset-controller",
        "count": 7,
        "firstTimestamp": when,
        "lastTimestamp": when,
    }
