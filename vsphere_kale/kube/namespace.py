"""The namespace a command works in when none is given, as kubectl picks it.

The kubeconfig context's ``namespace`` (``--context`` or the current context; ``$KUBECONFIG``
may list several files, merged as kubectl merges them), then the in-cluster service account's
namespace file, then ``default``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import config

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    in_cluster_file: Path = IN_CLUSTER_NAMESPACE,
) -> str:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError):
        # No (readable) kubeconfig: in a pod that is normal, the namespace file answers. A
        # broken one is reported, as one sentence, when the client is built from it.
        contexts, active = [], None
    chosen = active
    if context is not None:
        chosen = next((c for c in contexts or [] if c.get("name") == context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    if isinstance(namespace, str) and namespace:
        return namespace
    try:
        text = in_cluster_file.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "default"
