"""The lines of a batch input file, read and checked one at a time.

OpenAI's rules: every line a JSON object with a unique `custom_id`, `method` POST, `url` equal
to the batch's endpoint, and a `body` valid for that endpoint; every line names the same model.
The first problems found (with their line numbers) fail the batch in `validating`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_LINES = 50_000
MAX_ERRORS = 20  # reported per batch; the rest are counted
MAX_CUSTOM_ID = 64 * 4  # characters
_BOM = b"\xef\xbb\xbf"

# (endpoint, body) -> None when the body is valid for the endpoint, else the reason.
CheckBody = Callable[[str, dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based, as editors and OpenAI's errors count
    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class LineError:
    code: str
    message: str
    line: int | None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


class Checker:
    """Checks lines one by one (the caller streams the file and stores what passes), keeping
    the first errors with their line numbers."""

    def __init__(self, endpoint: str, check_body: CheckBody) -> None:
        self.endpoint = endpoint
        self.check_body = check_body
        self.errors: list[LineError] = []
        self.error_count = 0
        self.model: str | None = None
        self.count = 0  # lines that passed
        self._seen: set[str] = set()

    def _fail(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(code, message, line, param))

    def line(self, raw: bytes, number: int) -> Line | None:
        """The request on line `number`, or None (blank, or an error was recorded)."""
        if not raw.strip():
            return None
        if self.count >= MAX_LINES:
            self._fail("too_many_requests", f"A batch holds at most {MAX_LINES} requests.", number)
            return None
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]  # an editor's UTF-8 byte order mark
        try:
            # Parsed as the HTTP API parses the body the line replays: strict UTF-8 (no lone
            # surrogates, which neither the database nor the replay could encode), no NaN,
            # nesting at most 1024 deep (the standard library's parser recurses: RecursionError).
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._fail("invalid_json_line", "This line is not valid JSON.", number)
            return None
        if not isinstance(item, dict):
            self._fail("invalid_json_line", "This line is not a JSON object.", number)
            return None
        custom_id = item.get("custom_id")
        if (
            not isinstance(custom_id, str)
            or not custom_id
            or len(custom_id) > MAX_CUSTOM_ID
            or "\x00" in custom_id  # stored as text: PostgreSQL's cannot hold NUL
        ):
            self._fail(
                "missing_required_parameter",
                f"`custom_id` must be a non-empty string of at most {MAX_CUSTOM_ID} characters "
                "(no NUL).",
                number,
                "custom_id",
            )
            return None
        if custom_id in self._seen:
            self._fail(
                "duplicate_custom_id",
                f"The custom_id `{custom_id}` is used more than once.",
                number,
                "custom_id",
            )
            return None
        self._seen.add(custom_id)
        if item.get("method") != "POST":
            self._fail("invalid_method", "`method` must be POST.", number, "method")
            return None
        if item.get("url") != self.endpoint:
            self._fail(
                "mismatched_url",
                f"`url` must be the batch's endpoint, {self.endpoint}.",
                number,
                "url",
            )
            return None
        body = item.get("body")
        if not isinstance(body, dict):
            self._fail("invalid_request", "`body` must be a JSON object.", number, "body")
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._fail(
                "missing_required_parameter", "`body.model` is required.", number, "body.model"
            )
            return None
        if self.model is None:
            self.model = model
        elif model != self.model:
            self._fail(
                "mismatched_model",
                f"Every request of a batch must use one model; this line uses `{model}`, the "
                f"first used `{self.model}`.",
                number,
                "body.model",
            )
            return None
        problem = self.check_body(self.endpoint, body)
        if problem is not None:
            self._fail("invalid_request", problem, number, "body")
            return None
        self.count += 1
        return Line(number, custom_id, body)

    def finish(self) -> list[LineError]:
        """The errors that fail the batch (none: it may run)."""
        if not self.count and not self.errors:
            self._fail("empty_file", "The input file holds no requests.", None)
        return self.errors
