"""Errors as HTTP answers: ``{"code", "message", "detail"}`` at the right status (R33).

A :class:`~perdure.PerdureError` already carries its stable ``code`` and its
``http_status`` (``perdure/_errors.py``): the server maps it, never re-decides it.
What is not a runtime error (an oversized body, a missing token, a route the
runtime does not implement yet) is an :class:`HTTPProblem` with a code of the
same kind. Anything else is a bug: it is logged and answered as a bare 500
``INTERNAL_ERROR``, without the exception's text (it may hold stored data).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from perdure._errors import PerdureError

__all__ = ["HTTPProblem", "error_response", "json_response", "problem_of", "translate_errors"]

log = logging.getLogger("perdure.server")

_ENCODER = msgspec.json.Encoder()


class HTTPProblem(Exception):
    """An HTTP-level refusal that is not a runtime error (413, 401, 404 ...)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **detail: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.detail = detail


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``value`` (plain data or msgspec structs) as a JSON response."""
    return Response(_ENCODER.encode(value), status, headers, media_type="application/json")


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"code": code, "message": message, "detail": dict(detail or {})}
    try:
        encoded = _ENCODER.encode(body)
    except (TypeError, msgspec.EncodeError):  # a detail that does not encode: drop it
        encoded = _ENCODER.encode({"code": code, "message": message, "detail": {}})
    return Response(encoded, status, headers, media_type="application/json")


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def problem_of(exc: BaseException) -> Response | None:
    """The answer for a known error (``None`` for anything else)."""
    leaf = _leaf(exc)
    if isinstance(leaf, PerdureError):
        return error_response(leaf.http_status, leaf.code, leaf.message, leaf.detail)
    if isinstance(leaf, HTTPProblem):
        return error_response(leaf.status, leaf.code, leaf.message, leaf.detail, leaf.headers)
    return None


Endpoint = Callable[[Request], Awaitable[Response]]


def translate_errors(endpoint: Endpoint) -> Endpoint:
    """Wrap an endpoint so every error leaves it as a JSON error response."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            answer = problem_of(exc)
            if answer is not None:
                return answer
            log.exception("perdure.server: %s %s failed", request.method, request.url.path)
            return error_response(500, "INTERNAL_ERROR", "internal server error")

    return wrapped
