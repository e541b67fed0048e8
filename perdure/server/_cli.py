"""The server's command lines: ``perdure serve`` and ``perdure runs resume``.

::

    perdure serve MODULE:ATTR [--host H] [--port P] [--token T] [--heartbeat S] [--max-body B]
    perdure runs resume ID (--tool-result CALL_ID JSON | --approve KEY | --reject KEY
                            | --event NAME JSON | --input KEY JSON)
                           [--approver NAME] [--comment TEXT] [--url URL | --dir D] [--json]

``serve`` imports ``MODULE`` (from the current directory first), takes its
``ATTR`` (a :class:`perdure.Runtime`, or a function returning one), opens it and
serves its HTTP API until SIGINT or SIGTERM. The token defaults to
``$PERDURE_TOKEN``; without one only a loopback address may be bound.

``runs resume`` sends one resume signal: to a live server with ``--url`` (token
from ``$PERDURE_TOKEN``), or straight into an existing store that no process owns
(administration mode, like ``runs cancel``: the run takes the signal now and goes
on when its owner next opens the directory).

Nothing this prints is read as terminal markup: stored strings (keys, ids,
messages) are printed literally.

This module imports no web framework: ``serve`` loads the server only when run.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import msgspec
import trio
from rich.console import Console
from rich.text import Text

from perdure._errors import InvalidInput, PerdureError
from perdure._errors import leaves as error_leaves
from perdure._load_app import load_runtime
from perdure.runtime import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Runtime,
    Signal,
    ToolResult,
)

__all__ = ["add_runs_resume", "add_serve", "check_url", "require_store"]

EXIT_OK = 0
EXIT_ERROR = 2


def add_serve(sub: Any) -> None:
    """Register ``perdure serve`` on the top-level subparsers."""
    p = sub.add_parser("serve", help="serve a runtime's HTTP API (REST + SSE + AG-UI)")
    p.add_argument("target", metavar="MODULE:ATTR", help="where the Runtime is, e.g. app:rt")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks one)")
    p.add_argument(
        "--token",
        default=None,
        help="bearer token every request must carry (default $PERDURE_TOKEN); "
        "required for a non-loopback --host",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds between SSE heartbeat comments (default 15; 0 disables them)",
    )
    p.add_argument(
        "--max-body",
        type=int,
        default=10 * 1024 * 1024,
        metavar="BYTES",
        help="request body cap (default 10 MiB)",
    )
    p.set_defaults(func=_cmd_serve)


def add_runs_resume(runs_sub: Any, add_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``perdure runs resume`` on the ``runs`` subparsers."""
    p = runs_sub.add_parser(
        "resume", help="send a resume signal to a waiting run (through a server or a free dir)"
    )
    p.add_argument("run_id", metavar="ID")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--tool-result", nargs=2, metavar=("CALL_ID", "JSON"), help="a client-side tool's result"
    )
    which.add_argument("--approve", metavar="KEY", help="approve the approval KEY")
    which.add_argument("--reject", metavar="KEY", help="reject the approval KEY")
    which.add_argument("--event", nargs=2, metavar=("NAME", "JSON"), help="an external event")
    which.add_argument("--input", nargs=2, metavar=("KEY", "JSON"), help="human input for KEY")
    p.add_argument("--approver", metavar="NAME", help="who decides (approvals)")
    p.add_argument("--comment", metavar="TEXT", help="a comment on the decision (approvals)")
    p.add_argument("--response", metavar="JSON", help="the decision's response (approvals)")
    p.add_argument(
        "--url",
        default=None,
        help="a running server (e.g. http://127.0.0.1:8000); token from $PERDURE_TOKEN",
    )
    add_dir(p)
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    p.add_argument(
        "--json", action="store_true", help='print {"accepted", "duplicate", "run_id", "key"}'
    )
    p.set_defaults(func=_cmd_resume)


def literal(value: object) -> str:
    """``value`` as text that cannot drive the terminal (control characters escaped)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- serve -----------------------------------------------------------------------------------


def require_store(directory: str) -> None:
    """Refuse, reading only, a ``directory`` that holds no perdure store.

    Commands that write in administration mode (``Runtime(recover=False)``) would
    otherwise create a new, empty store there (``data/`` of the current directory
    without ``--dir``). :class:`StorageError` ``no perdure store at ...`` as
    ``runs cancel`` answers; a foreign directory is refused as it is elsewhere.
    """
    from perdure.storage import Store

    Store(directory, readonly=True).close()


def check_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host[:port]`` address, else :class:`InvalidInput`."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number (or out of range)
    except ValueError as exc:
        raise InvalidInput(f"--url is not a valid URL ({exc}): {url!r}", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"--url must be an http:// or https:// address, e.g. http://127.0.0.1:8000 "
            f"(got {url!r})",
            field="url",
        )
    return url


def check_port(host: str, port: int) -> None:
    """Refuse a ``host:port`` this process cannot listen on, before anything is opened.

    Binds a socket the way hypercorn does (``SO_REUSEADDR``) and closes it again; a
    port another process holds is ``error: ... address already in use``, exit 2.
    ``port=0`` (any free port) needs no check.
    """
    if port == 0:
        return
    bare = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
        sock.listen(1)
    except OSError as exc:
        raise _bind_error(host, port, exc) from None
    finally:
        sock.close()


def _bind_error(host: str, port: int, exc: OSError) -> PerdureError:
    reason = exc.strerror or str(exc)
    return PerdureError(
        f"cannot listen on {host}:{port}: {reason}",
        host=host,
        port=port,
        hint="another process may hold the port: pick another --port (0 picks a free one)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._auth import check_bind

    token = cast(str | None, args.token) or os.environ.get("PERDURE_TOKEN") or None
    host, port = cast(str, args.host), cast(int, args.port)
    check_bind(host, token)  # before importing anything of the user's
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be from 0 to 65535 (got {port})")
    if args.heartbeat < 0 or args.max_body < 1:
        raise InvalidInput("--heartbeat must be >= 0 and --max-body >= 1")
    from ._serve import serve
    from ._sse import SSEOptions

    check_port(host, port)  # a port in use: refused before the runtime is opened
    rt = load_runtime(cast(str, args.target))

    async def until_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    serve,
                    rt,
                    host=host,
                    port=port,
                    token=token,
                    sse=SSEOptions(heartbeat=args.heartbeat),
                    max_body=args.max_body,
                    shutdown_trigger=until_signal,
                )
            )
            sys.stdout.write(f"perdure: serving {' '.join(binds)} (data: {rt.path})\n")
            sys.stdout.flush()

    try:
        trio.run(main)
    except BaseException as exc:
        # Another process took the port between check_port and hypercorn's bind: the
        # OSError of the bind arrives wrapped in the nurseries' exception groups.
        leaves = error_leaves(exc)
        if leaves and all(_is_bind_error(leaf) for leaf in leaves):
            raise _bind_error(host, port, cast(OSError, leaves[0])) from None
        raise
    return EXIT_OK


_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _is_bind_error(exc: BaseException) -> bool:
    return isinstance(exc, socket.gaierror) or (
        isinstance(exc, OSError) and exc.errno in _BIND_ERRNOS
    )


# -- runs resume -----------------------------------------------------------------------------


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} must be JSON ({exc.msg}); quote strings: '\"text\"'") from None


def signal_of(args: argparse.Namespace) -> Signal:
    """The signal the options describe."""
    if args.tool_result:
        call_id, content = args.tool_result
        return ToolResult(tool_call_id=call_id, content=_json_arg(content, "the tool result"))
    if args.approve or args.reject:
        response = _json_arg(args.response, "--response") if args.response else None
        return ApprovalDecision(
            key=args.approve or args.reject,
            approved=bool(args.approve),
            approver=args.approver,
            response=response,
            comment=args.comment,
        )
    if args.event:
        name, payload = args.event
        return ExternalEvent(name=name, payload=_json_arg(payload, "the event payload"))
    key, value = args.input
    return InputResponse(key=key, value=_json_arg(value, "the input"), responder=args.approver)


def _cmd_resume(args: argparse.Namespace) -> int:
    run_id = cast(str, args.run_id)
    sig = signal_of(args)
    if not args.timeout > 0:
        raise InvalidInput(f"--timeout must be positive (got {args.timeout})")
    if args.url:
        if args.dir:
            raise InvalidInput("give --url or --dir, not both")
        url = check_url(cast(str, args.url))
        answer = _resume_remote(url, run_id, sig, float(args.timeout))
        if answer is None:
            return EXIT_ERROR
    else:
        directory = cast(str, args.dir) if args.dir else os.environ.get("PERDURE_DIR") or "data/"
        require_store(directory)  # never create a store to resume a run in it
        answer = trio.run(_resume_local, directory, run_id, sig, float(args.timeout))
    if args.json:
        sys.stdout.write(json.dumps(answer) + "\n")
        return EXIT_OK
    console = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200)
    line = Text("resumed run ")  # Text, not markup: "[/]" in a key prints as "[/]"
    line.append(literal(answer["run_id"]))
    line.append(": ")
    line.append(literal(answer["key"]))
    if answer["duplicate"]:
        line.append(" (already taken: duplicate)", style="dim")
    console.print(line, soft_wrap=True)
    return EXIT_OK


async def _resume_local(directory: str, run_id: str, sig: Signal, timeout: float) -> dict[str, Any]:
    # Administration mode: nothing else is re-run; a directory a live process owns is
    # refused with DIRECTORY_LOCKED naming it (send the signal through its server).
    async with Runtime(directory, durability="sync", recover=False) as rt:
        with trio.fail_after(timeout):
            resumed = await rt.resume(run_id, sig)
    return {"accepted": True, "duplicate": resumed.duplicate, "run_id": run_id, "key": resumed.key}


def _resume_remote(url: str, run_id: str, sig: Signal, timeout: float) -> dict[str, Any] | None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = os.environ.get("PERDURE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    address = f"{url.rstrip('/')}/runs/{urllib.parse.quote(run_id, safe='')}/resume"
    return post_json(url, address, msgspec.json.encode(sig), headers, timeout)


def post_json(
    url: str, address: str, body: bytes, headers: dict[str, str], timeout: float
) -> dict[str, Any] | None:
    """POST ``body`` to ``address`` of the server at ``url``; its JSON answer.

    A refusal of the server is printed (``error: CODE: message``) and gives ``None``;
    a server that cannot be reached, a bad URL or an answer that is not JSON raise
    a :class:`PerdureError` (so: ``error: ...``, exit 2, no traceback).
    """
    try:
        request = urllib.request.Request(address, data=body, headers=headers, method="POST")
    except ValueError as exc:
        raise InvalidInput(f"--url is not a valid URL ({exc}): {url!r}", field="url") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            refusal = json.loads(exc.read())
            code, message = str(refusal["code"]), str(refusal["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"HTTP_{exc.code}", exc.reason
        sys.stderr.write(f"error: {literal(code)}: {literal(message)}\n")
        return None
    except (urllib.error.URLError, OSError) as exc:
        raise PerdureError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except (http.client.InvalidURL, ValueError) as exc:
        raise InvalidInput(f"--url is not a valid URL ({exc}): {url!r}", field="url") from None
    except http.client.HTTPException as exc:  # a server that does not speak HTTP
        raise PerdureError(f"cannot talk to {url}: {type(exc).__name__}: {exc}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PerdureError(f"{url} did not answer like a perdure server (no JSON object)")
    return cast(dict[str, Any], answer)
