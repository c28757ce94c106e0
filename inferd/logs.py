"""JSON log lines with metadata only.

Only whitelisted `extra` fields are written, so a careless `log.info(..., extra={...})` cannot
put a prompt or an output into the logs.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

METADATA_FIELDS = (
    "request_id",
    "account",
    "model",
    "route",
    "method",
    "path",
    "status",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "finish_reason",
    "pid",
    "replica",
    "error",
    "host",
    "port",
    "deploy_id",
    "to_status",
    "reason",
    "instances",
    "served_by",  # a route's target: a model name or `model@host:port`, never a URL path or key
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in METADATA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            # Exception type only: messages and tracebacks may quote request content.
            line["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else "unknown"
        return orjson.dumps(line).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by inferd.access
    logging.getLogger("alembic").setLevel(logging.WARNING)  # per-plugin start-up chatter
    # One line per Hub request (huggingface_hub's client): URLs, noise in a server log.
    for name in ("httpx", "httpx2", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
