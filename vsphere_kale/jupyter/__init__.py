"""Jupyter server extension: the notebook namespace's vsphere-kale health and a reconcile action.

Enabled by ``jupyter-config/jupyter_server_config.d/vsphere_kale.json`` (installed with the
package); ``jupyter server extension list`` shows ``vsphere_kale.jupyter enabled``.
"""

from __future__ import annotations

from typing import Any

from vsphere_kale.jupyter.app import VsphereKaleApp

__all__ = ["VsphereKaleApp"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "vsphere_kale.jupyter", "app": VsphereKaleApp}]
