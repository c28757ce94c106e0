"""JSON responses serialised with orjson."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, overload

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from inferd.store.models import as_utc

_JSON = b"application/json"


class JSONResponse(Response):
    media_type = "application/json"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if headers is not None or media_type is not None or background is not None:
            super().__init__(content, status_code, headers, media_type, background)
            return
        # The common case, every inference answer: two headers built directly.
        self.status_code = status_code
        self.background = None
        self.body = body = self.render(content)
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@overload
def unix_time(value: datetime) -> int: ...
@overload
def unix_time(value: None) -> None: ...
@overload
def unix_time(value: datetime | None) -> int | None: ...


def unix_time(value: datetime | None) -> int | None:
    """A stored timestamp as OpenAI's wire writes times: whole unix seconds."""
    return None if value is None else int(as_utc(value).timestamp())
