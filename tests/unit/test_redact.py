"""The log filter that keeps credentials out of every log line."""

from __future__ import annotations

import logging

import pytest
from uvicorn.logging import AccessFormatter

from tasksync.redact import RedactTokens, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /ws?user_id=a&token=s3cret HTTP/1.1", "s3cret"),
        # Percent-encoded names are the same parameter to the query parser.
        ("GET /ws?user_id=a&%74oken=s3cret HTTP/1.1", "s3cret"),
        ("GET /ws?tok%65n=s3cret&x=1 HTTP/1.1", "s3cret"),
        ("GET /ws?TOKEN=s3cret", "s3cret"),
        ("< sec-websocket-protocol: tasksync.v1, bearer.eyJhbGciOi.eyJzdWIi.sig", "eyJhbGciOi"),
        ("< Authorization: Bearer backend-key-1", "backend-key-1"),
        ("< dapr-api-token: dapr-s3cret", "dapr-s3cret"),
        ("< x-tasksync-proxy-secret: proxy-s3cret", "proxy-s3cret"),
    ],
)
def test_credentials_are_redacted_whatever_their_spelling(line, secret):
    cleaned = redact(line)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_other_query_parameters_and_headers_are_left_alone():
    line = "GET /ws?user_id=alice&since=4&tokens=fine HTTP/1.1 origin: https://app.example.com"
    assert redact(line) == line


def test_an_access_log_record_keeps_its_arguments_and_formats():
    # uvicorn's access formatter unpacks record.args itself: a filter that pre-formats the
    # record (args None) makes it raise, and the line is lost to a traceback.
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/health?token=s3cret", "1.1", 200), None,
    )
    assert RedactTokens().filter(record)
    line = AccessFormatter(fmt="%(client_addr)s - %(request_line)s %(status_code)s", use_colors=False).format(record)
    assert line == '127.0.0.1:5000 - GET /health?token=[redacted] HTTP/1.1 200 OK'
