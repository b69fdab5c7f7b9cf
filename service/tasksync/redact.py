"""Keep credentials out of every log line.

A `token` query parameter (only accepted where `token_query_param` is on) appears in uvicorn's
access log as part of the path; this filter rewrites it on every handler before it is written.
"""

from __future__ import annotations

import logging
import re

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(logger_names: tuple[str, ...] = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "litestar")) -> None:
    """Attach the filter to every handler of these loggers (filters on a logger do not apply to
    records propagated from its children; filters on handlers do)."""
    redactor = RedactTokens()
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(redactor)
