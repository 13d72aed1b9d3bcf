"""One log line, not a traceback, for each malformed HTTP request to the worker's port.

aiohttp logs ``Error handling request from <peer>`` with the parser's exception and its
traceback (about 20 lines) for every request it cannot parse, so any client, scanner or
load balancer probe with a bad request floods the log. A malformed request is the
client's problem, answered 400: it is logged as one WARNING line naming the peer and
what was wrong. Any other exception in a request keeps its traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

_LOGGER = "aiohttp.server"


class _BadRequestsInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and str(record.msg).startswith("Error handling request"):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            why = " ".join(str(getattr(exc, "message", "") or exc).split())[:200]
            record.msg, record.args = "bad HTTP request from %s: %s: %s", (peer, type(exc).__name__, why)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Idempotent: the filter sits on aiohttp's server logger, whatever its handlers."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _BadRequestsInOneLine) for f in logger.filters):
        logger.addFilter(_BadRequestsInOneLine())
