"""One line of ``vsphere-kale doctor``: a check, its status, what it found, how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from vsphere_kale.policy import health
from vsphere_kale.policy.text import describe_user

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.name,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
        }


def decide_unreadable(name: str, what: health.Unreadable, *, caller: str = "") -> Check:
    """A read the caller may not do: "cannot check", and that the right missing is theirs."""
    if caller:
        hint = (
            f"{describe_user(caller)} may not read it -- your own rights, not the "
            "installation's: run doctor as a cluster admin"
        )
    else:
        hint = "run doctor as a cluster admin (or with a kubeconfig that may read it)"
    return Check(name, "fail", f"cannot check: {what.reason}", hint)


def decide_exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0
