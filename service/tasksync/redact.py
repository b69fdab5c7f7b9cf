"""Keep credentials out of every log line.

Credentials reach log lines three ways, and each is rewritten on every handler before it is
written:
- a `token` query parameter (only accepted where `token_query_param` is on) in the path of
  uvicorn's access log, under any spelling the query parser accepts (`%74oken=` is `token=`);
- the `bearer.<token>` subprotocol entry, in the handshake headers the websockets library logs
  at debug level;
- secret-bearing headers (Authorization, the Dapr app token, header auth's proxy secret,
  cookies), in those same debug lines.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
CREDENTIAL_QUERY_PARAMS = frozenset({"token"})
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "dapr-api-token", "x-tasksync-proxy-secret")

_QUERY_PAIR = re.compile(r"([?&])([^=&\s\"'#]+)=([^&\s\"'#]*)")
_BEARER_SUBPROTOCOL = re.compile(r"(bearer\.)[^\s,\"']+", re.IGNORECASE)
_SECRET_HEADER_LINE = re.compile(rf"((?:{'|'.join(SECRET_HEADERS)})\s*:\s*)[^\r\n]*", re.IGNORECASE)


def _redact_pair(match: re.Match[str]) -> str:
    separator, name, _ = match.groups()
    if unquote_plus(name).lower() in CREDENTIAL_QUERY_PARAMS:
        return f"{separator}{name}={REDACTED}"
    return match.group(0)


def redact(text: str) -> str:
    text = _QUERY_PAIR.sub(_redact_pair, text)
    text = _BEARER_SUBPROTOCOL.sub(rf"\1{REDACTED}", text)
    return _SECRET_HEADER_LINE.sub(rf"\1{REDACTED}", text)


def _redact_arg(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are redacted one by one, keeping their shape: some formatters (uvicorn's
        # access log) unpack `record.args` themselves and would fail on a pre-formatted record.
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            # A credential that only appears once formatted (an argument's own str()).
            record.msg, record.args = cleaned, ()
        return True


def install(logger_names: tuple[str, ...] = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "litestar")) -> None:
    """Attach the filter to every handler of these loggers (filters on a logger do not apply to
    records propagated from its children; filters on handlers do)."""
    redactor = RedactTokens()
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(redactor)
