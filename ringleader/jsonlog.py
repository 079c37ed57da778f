"""JSON-lines logging for every Ringleader process: one object per line on stderr.

Each line carries the component and pid, so lines from many processes can be merged and
still localize a fault; call sites add context with `extra={"ctx": {...}}`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any


class JSONFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self._component,
            "pid": os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict):
            entry.update(ctx)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(component: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; on peer RPC that is thousands of lines a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
