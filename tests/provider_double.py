"""An external OpenAI-compatible provider on loopback, for faults a real server will not make
on demand (a test double for a third party we do not run: DESIGN.md, Conventions).

It serves `POST /v1/chat/completions` and `POST /v1/embeddings` as OpenAI does; the model name
picks the behaviour:

- `ok` (or any other name): a completion `"Hello from the provider"`, streamed as a role chunk,
  two content chunks, a finishing chunk, then (only with `stream_options.include_usage`) an
  empty-choices usage chunk and `[DONE]`. Usage: 7 prompt and 3 completion tokens.
- `status-NNN`: answers NNN with an OpenAI error body (`Retry-After: 7` on 429).
- `drop`: streams one content chunk, then closes the connection mid-stream.
- `no-usage`: like `ok`, but never sends usage.

Every request's body and Authorization header are kept in `requests` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_PARTS = ("Hello from", " the provider")
PROMPT_TOKENS, COMPLETION_TOKENS = 7, 3


class ProviderDouble:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], str | None]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                provider.requests.append((body, self.headers.get("Authorization")))
                model = str(body.get("model", ""))
                if model.startswith("status-"):
                    self._error(int(model.removeprefix("status-")))
                elif self.path.endswith("/embeddings"):
                    self._json(
                        {
                            "object": "list",
                            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                            "model": model,
                            "usage": {
                                "prompt_tokens": PROMPT_TOKENS,
                                "total_tokens": PROMPT_TOKENS,
                            },
                        }
                    )
                elif body.get("stream"):
                    self._stream(body, model)
                else:
                    self._json(completion(model, usage=model != "no-usage"))

            def _json(self, payload: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "7")
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int) -> None:
                self._json(
                    {
                        "error": {
                            "message": f"provider says {status}",
                            "type": "invalid_request_error",
                            "code": f"provider_{status}",
                        }
                    },
                    status,
                )

            def _stream(self, body: dict[str, Any], model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                head = {
                    "id": "up-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                }

                def send(payload: dict[str, Any] | str) -> None:
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()

                send({**head, "choices": [_delta({"role": "assistant", "content": ""})]})
                for n, part in enumerate(TEXT_PARTS):
                    send({**head, "choices": [_delta({"content": part})]})
                    if model == "drop" and n == 0:
                        time.sleep(0.05)
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                send({**head, "choices": [_delta({}, finish="stop")]})
                wants_usage = (body.get("stream_options") or {}).get("include_usage")
                if wants_usage and model != "no-usage":
                    send({**head, "choices": [], "usage": _usage()})
                send("[DONE]")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.netloc = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def last(self) -> tuple[dict[str, Any], str | None]:
        return self.requests[-1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(model: str, usage: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "up-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "system_fingerprint": "fp_double",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(TEXT_PARTS)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    if usage:
        answer["usage"] = _usage()
    return answer


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }
