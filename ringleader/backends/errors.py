"""Failures of a cache server, as the router sees them."""


class BackendError(Exception):
    """The backend could not answer. Reads turn this into a miss, writes into a 503."""

    kind = "error"

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"backend {backend}: {detail}")
        self.backend = backend
        self.detail = detail


class BackendUnavailable(BackendError):
    """No connection: refused, reset, closed, or inside the reconnect backoff window."""

    kind = "unavailable"


class BackendTimeout(BackendError):
    """Connected, but the reply did not come in time; the connection is dropped."""

    kind = "timeout"


class BackendProtocolError(BackendError):
    """The backend answered something we cannot parse or did not expect."""

    kind = "protocol"


class BackendRejected(BackendError):
    """The backend refused this one request (for example, an item over its size limit).
    It says nothing about the backend's health."""

    kind = "rejected"
