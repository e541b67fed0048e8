"""Request bodies: capped while they are read, decoded into typed structs.

The cap is checked twice: against ``Content-Length`` before reading anything,
and against the bytes actually received (a chunked upload has no length), so a
client can never make the server buffer more than the cap. Bad JSON or a body of
the wrong shape is :class:`~perdure.InvalidInput` (400): nothing is stored.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from perdure._errors import InvalidInput

from ._errors_http import HTTPProblem

__all__ = ["MAX_BODY_BYTES", "decode_json", "read_body"]

MAX_BODY_BYTES = 10 * 1024 * 1024
"""Default request body cap (10 MiB)."""

T = TypeVar("T")


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(
        413, "PAYLOAD_TOO_LARGE", f"request bodies are capped at {limit} bytes", limit=limit
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``413 PAYLOAD_TOO_LARGE`` as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidInput("Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes, into: type[T], what: str = "request body") -> T:
    """Decode ``body`` as JSON into ``into``; :class:`InvalidInput` if it does not fit."""
    try:
        return msgspec.json.decode(body, type=into)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{what} does not have the expected shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply") from None
