"""The one error tree of vsphere-kale.

Errors are translated once on the way in (where the Kubernetes client raises
``ApiException``, see :mod:`vsphere_kale.kube`) and once on the way out (HTTP
handlers map them to status codes, the CLI to exit codes and a sentence).
"""

from __future__ import annotations


class VsphereKaleError(Exception):
    """Base class: the message is a sentence a user can act on."""


class ConfigError(VsphereKaleError):
    """Settings are invalid; the message names the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class AdmissionError(VsphereKaleError):
    """An AdmissionReview could not be read; the HTTP edge answers 400."""


class CertificateError(VsphereKaleError):
    """A certificate or key could not be built, read, written or paired."""


class KubeError(VsphereKaleError):
    """The Kubernetes API refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        """Seconds from the answer's ``Retry-After`` header (429, 503), if it had one."""
        super().__init__(message)


class KubeConflict(KubeError):
    """409: AlreadyExists or a stale resourceVersion."""


class KubeForbidden(KubeError):
    """403: the message says which verb on which resource is missing."""


class KubeNotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeUnavailable(KubeError):
    """The API server could not be reached, timed out, or answered 5xx/429."""


class RequestRefused(VsphereKaleError):
    """One of our HTTP servers refuses a request (bad input, no or invalid token, denied,
    too many at once, not the leader): the HTTP code, the ``Status`` reason and a sentence,
    answered as a Kubernetes ``Status`` body by the handler's one error mapping."""

    def __init__(
        self, message: str, *, code: int, reason: str, retry_after: int | None = None
    ) -> None:
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        """Seconds for the answer's ``Retry-After`` header, if it should have one."""
        super().__init__(message)
