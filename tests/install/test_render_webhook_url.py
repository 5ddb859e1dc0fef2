"""``install --webhook-url``: only a loopback HTTPS URL with a port and a path is rendered."""

from __future__ import annotations

import pytest

from vsphere_kale.errors import ConfigError
from vsphere_kale.install import render
from vsphere_kale.settings import Settings

HOOKS = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "vsphere-kale"},
    "webhooks": [
        {
            "name": "pvc-rwx.vsphere-kale.io",
            "clientConfig": {
                "service": {"namespace": "vsphere-kale", "name": "vsphere-kale", "port": 443}
            },
        }
    ],
}


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8443/mutate/persistentvolumeclaims",
        "https://[::1]:8443/mutate/persistentvolumeclaims",
        "https://localhost:9443/pvc/mutate",
    ],
)
def test_loopback_urls_replace_the_service(url: str) -> None:
    (hooks,) = render.build_manifests([HOOKS], settings=Settings(), webhook_url=url)
    assert hooks["webhooks"][0]["clientConfig"] == {"url": url}
    assert HOOKS["webhooks"][0]["clientConfig"].get("service")  # the input is untouched


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8443/mutate", "must start with https://"),
        ("https://10.0.0.5:8443/mutate", "only a loopback host"),
        ("https://webhook.example.com:8443/mutate", "only a loopback host"),
        ("https://127.0.0.1/mutate", "needs a port"),
        ("https://127.0.0.1:99999/mutate", "needs a port"),
        ("https://127.0.0.1:8443", "needs a path"),
        ("https://127.0.0.1:8443/mutate?x=1", "needs a path"),
    ],
)
def test_other_urls_are_a_config_error_naming_the_flag(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render.check_webhook_url(url)
    assert "--webhook-url" in str(caught.value)
    assert says in str(caught.value)
