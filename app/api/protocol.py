"""uvicorn's HTTP protocol, with its own error answers in problem+json too.

A request that is not valid HTTP (a malformed request line or header, a bad `Content-Length`,
broken chunked encoding) never reaches the app: uvicorn's parser refuses it with a plain-text
400 and closes the connection. `ProblemHttpProtocol` is uvicorn's protocol — httptools where
it is installed, h11 otherwise, as uvicorn's `auto` picks — answering that 400 as the app
answers every error, an RFC 9457 problem document. `optaas serve` runs uvicorn with it.
"""

from __future__ import annotations

import orjson

from app.api.errors import PROBLEM_MEDIA_TYPE

MALFORMED_REQUEST = orjson.dumps(
    {
        "type": "/problems/malformed-request",
        "title": "Malformed HTTP request",
        "status": 400,
        "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)",
    }
)


def problem_400(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The raw HTTP/1.1 400 answer, closing the connection (the parser cannot go on)."""
    headers = [
        *default_headers,
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(MALFORMED_REQUEST)).encode()),
        (b"connection", b"close"),
    ]
    lines = [b"HTTP/1.1 400 Bad Request", *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + MALFORMED_REQUEST


try:
    import httptools  # noqa: F401  (uvicorn's choice: httptools where it is installed)
except ImportError:  # pragma: no cover
    from uvicorn.protocols.http.h11_impl import H11Protocol as UvicornProtocol
else:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornProtocol


class ProblemHttpProtocol(UvicornProtocol):
    """uvicorn's protocol; a request it cannot parse gets a problem document."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(problem_400(list(self.server_state.default_headers)))
        self.transport.close()
