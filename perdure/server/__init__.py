"""perdure's HTTP API: REST + SSE over a runtime, and an AG-UI endpoint (R33-R35).

- :func:`asgi_app` ``(rt)``: the API as a starlette app over a
  :class:`~perdure.Runtime` (served on its own trio loop) or a
  :class:`~perdure.AsyncioHost` (mounted into an asyncio application).
- :func:`serve` ``(rt, host=..., port=..., token=...)``: hypercorn's trio worker
  inside the runtime's trio run; ``perdure serve module:rt`` on the command line.
- :class:`SSEOptions`: heartbeats, per-client buffers, the slow-client policy.

Needs the ``server`` extra (``pip install 'perdure[server]'``: starlette and
hypercorn). The names load on first use, so ``import perdure`` and the command
line work without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import asgi_app
    from ._serve import serve
    from ._sse import SSEOptions

__all__ = ["SSEOptions", "asgi_app", "serve"]

_WHERE = {"asgi_app": "._app", "serve": "._serve", "SSEOptions": "._sse"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'perdure.server' has no attribute {name!r}")
    import importlib

    try:
        loaded = importlib.import_module(module, __name__)
    except ImportError as exc:
        raise ImportError(
            f"perdure.server.{name} needs the server extra: pip install 'perdure[server]' ({exc})"
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value
