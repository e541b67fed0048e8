"""Who may call: loopback by default, a bearer token for anything else (R33).

A server bound to a loopback address answers anyone on the machine, like a
database's default local socket. Binding any other address without a token is
refused at start (:func:`check_bind`): an agent runtime reachable from a network
without authentication is never what anyone meant. With a token every request
but ``GET /health`` must carry ``Authorization: Bearer <token>``; tokens are
compared with :func:`hmac.compare_digest`, so the time an answer takes does not
tell how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from perdure._errors import InvalidInput

from ._errors_http import error_response

__all__ = ["BearerAuth", "check_bind", "is_loopback"]

OPEN_PATHS = frozenset({"/health"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, before anything is opened."""
    if token is not None and not token:
        raise InvalidInput("the token must not be empty")
    if token is None and not is_loopback(host):
        raise InvalidInput(
            f"refusing to listen on {host!r} without a token: only loopback addresses are "
            "served without one",
            host=host,
            hint="pass --token (or set PERDURE_TOKEN), or bind 127.0.0.1",
        )


class BearerAuth:
    """ASGI middleware: ``401 UNAUTHORIZED`` unless the request carries the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, credentials = given.partition(b" ")
        # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials, self._expected):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "UNAUTHORIZED",
            "a valid bearer token is required" if given else "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)
