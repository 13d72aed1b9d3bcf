"""Log lines as JSON (``--log-format json``): one object a line, the same fields in
``rater worker`` and ``rater notify``: ``ts`` (UTC, milliseconds), ``level``, ``logger``,
``msg`` and, for an exception, ``exc``."""

from __future__ import annotations

import logging
import time

import orjson


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # the "Z" of ``ts`` says UTC

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()
