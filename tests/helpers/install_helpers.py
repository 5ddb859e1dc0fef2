"""Reading what ``vsphere-kale install`` printed (shared by the sandbox and real-plane tests)."""

from __future__ import annotations


def install_outcomes(stdout: str) -> dict[str, str]:
    """``kind/name`` -> the rest of install's line for it (outcome and note)."""
    found = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" ")
        if "/" in name:
            found[name] = rest
    return found
