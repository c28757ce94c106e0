"""Why a request was refused or failed, in protocol-neutral terms.

`status` is the HTTP status clients of every API expect for the class of problem (the seed
pages fix 429 and 402, for example); `api/` renders the error in its wire shape and a
background job records it. Messages name the problem and never echo request content.
"""

from __future__ import annotations

from inferd.requests import Failed


class RequestError(Exception):
    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        # Response headers the error carries (a provider's Retry-After).
        self.headers: dict[str, str] | None = None


def from_failed(event: Failed) -> RequestError:
    """An engine's (or the runtime's) error event as a request error."""
    return RequestError(event.status, event.message, code=event.code)


def out_of_order() -> RequestError:
    return RequestError(500, "The model answered out of order.", code="protocol_error")
