"""Registered code: agents, workflows and tasks, and how targets resolve to them.

A definition's input type is read from the annotation of its body's second
parameter; ``start`` converts the caller's input to it (rejecting what does not
fit, R5) and the body receives the converted value, on first run and on replay
alike.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from perdure._errors import InvalidInput, InvalidOutput, SerializationError, UnknownTarget
from perdure.agui import AgentInput
from perdure.storage import Conversation, Kind, Owner, Project

from ._boundary import plain, seconds
from ._schemas import CompiledSchema

if typing.TYPE_CHECKING:
    from ._schedules import Declaration

__all__ = [
    "Body",
    "Definition",
    "Registry",
    "RestartPolicy",
    "validate_identifier",
    "validate_owner",
]

Body = Callable[[Any, Any], Awaitable[Any]]

_TARGET_KINDS: dict[str, Kind] = {"agent": "agent", "workflow": "workflow", "task": "job"}
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_IDENT = re.compile(r"[A-Za-z0-9_.:\-]+")


def validate_identifier(value: object, what: str, max_len: int = 128) -> str:
    """Ids end up inside LMDB keys: 1..max_len characters of ``[A-Za-z0-9_.:-]``."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not _IDENT.fullmatch(value):
        raise InvalidInput(
            f"{what} must be 1-{max_len} characters of letters, digits and _.:- (got {value!r})",
            field=what,
        )
    return value


def validate_owner(owner: object) -> Owner:
    """``owner`` if it is a Conversation or Project with a valid id, else InvalidInput."""
    if not isinstance(owner, Conversation | Project):
        raise InvalidInput(
            f"owner must be perdure.Conversation(id) or perdure.Project(id) (got {owner!r})",
            field="owner",
        )
    validate_identifier(owner.id, "owner id", 128)
    return owner


@dataclass(frozen=True)
class RestartPolicy:
    """OTP-style restart of failed runs: at most ``max_restarts`` within ``period`` seconds."""

    max_restarts: int = 3
    period: float = 60.0
    backoff: float = 1.0


@dataclass
class Definition:
    """One registered agent, workflow or task."""

    kind: Kind
    name: str
    fn: Body
    input_type: Any
    timeout: float | None = None
    restart: RestartPolicy | None = None
    inline_steps: bool = False
    """Plain step functions run on the trio thread (no worker-thread hop)."""
    description: str | None = None
    input_schema: CompiledSchema | None = None
    """JSON Schema the stored (plain) input must satisfy (tasks, step graphs, R5, R24)."""
    output_schema: CompiledSchema | None = None
    """JSON Schema the result must satisfy, else the run fails ``INVALID_OUTPUT``."""
    max_attempts: int | None = None
    """Whole-job attempts (tasks): carried out as a count-based ``restart`` policy."""
    version: int | None = None
    """The version new runs are stamped with (``RunRecord.version``, R37); step graphs
    set it from the graph's ``version``."""
    versions: frozenset[int] | None = None
    """The versions this process can run; ``None``: any (code definitions have none).

    A stored run pinned to a version not in this set is left as it is (R26), exactly as
    a run whose target is not registered here."""

    @property
    def target(self) -> str:
        prefix = "task" if self.kind == "job" else self.kind
        return f"{prefix}:{self.name}"

    @property
    def owner_type(self) -> type[Conversation] | type[Project]:
        return Conversation if self.kind == "agent" else Project

    def runs_version(self, version: int | None) -> bool:
        """Whether a run pinned to ``version`` can run under this definition."""
        return self.versions is None or version in self.versions

    def convert_input(self, value: Any) -> tuple[Any, Any]:
        """``(typed value for the body, plain value to store)``; :class:`InvalidInput` if unfit.

        The plain value is checked as stored (R30): it survives msgpack and JSON.
        """
        try:
            typed = msgspec.convert(value, self.input_type, from_attributes=True)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"input for {self.target}: {exc}", target=self.target) from None
        except (TypeError, ValueError, OverflowError, RecursionError, UnicodeError) as exc:
            raise InvalidInput(
                f"input for {self.target} cannot be read: {exc}", target=self.target
            ) from None
        stored = plain(typed, f"input for {self.target}", SerializationError)
        if self.input_schema is not None:
            self.input_schema.check(stored, self.target)
        return typed, stored

    def check_output(self, plain: Any) -> None:
        """:class:`InvalidOutput` unless the body's (plain) result fits ``output_schema``."""
        if self.output_schema is not None:
            problem = self.output_schema.problem(plain)
            if problem is not None:
                message, detail = problem
                raise InvalidOutput(
                    f"result of {self.target} fails its output_schema: {message}", **detail
                )

    def decode_input(self, stored: Any) -> Any:
        """Rebuild the body's typed input from its stored plain form."""
        return msgspec.convert(stored, self.input_type, from_attributes=True)


def _schema(schema: Any, what: str) -> CompiledSchema | None:
    return None if schema is None else CompiledSchema(schema, what)


def attempts_policy(
    kind: str, name: str, max_attempts: object, restart: RestartPolicy | None
) -> RestartPolicy:
    """``max_attempts=N`` as the restart policy that carries it out (R18, R24).

    A whole-job retry is a supervision restart: the body re-runs from its journal with
    the failed step's record dropped, logged as ``CUSTOM perdure.restart``. N attempts
    are N - 1 restarts over an unbounded period, waiting 1 s, 2 s, 4 s … between them.
    """
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidInput(f"{kind} {name!r}: max_attempts must be an integer >= 1")
    if restart is not None:
        raise InvalidInput(
            f"{kind} {name!r}: give max_attempts or a restart policy, not both "
            "(max_attempts=N is RestartPolicy(max_restarts=N - 1, period=inf))"
        )
    return RestartPolicy(max_restarts=max_attempts - 1, period=math.inf, backoff=1.0)


def _input_type(fn: Body) -> Any:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
        return Any
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    return hints.get(params[1].name, Any)


class Registry:
    """Definitions by target (``agent:NAME``, ``workflow:NAME``, ``task:NAME``)."""

    def __init__(self) -> None:
        self._defs: dict[str, Definition] = {}
        self.schedules: dict[str, Declaration] = {}
        """Schedules declared in code (``rt.schedule``), applied at open (R25)."""

    def add(
        self,
        kind: Kind,
        name: str,
        fn: Body,
        *,
        input_type: Any = None,
        timeout: float | None = None,
        restart: RestartPolicy | None = None,
        inline_steps: bool = False,
        description: str | None = None,
        input_schema: Any = None,
        output_schema: Any = None,
        max_attempts: int | None = None,
        version: int | None = None,
    ) -> Definition:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput(f"definition name must match {_NAME.pattern} (got {name!r})")
        if not inspect.iscoroutinefunction(fn):
            raise InvalidInput(f"{kind} {name!r}: the body must be an `async def` function")
        if version is not None and (
            not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**63
        ):
            raise InvalidInput(
                f"{kind} {name!r}: version must be an integer >= 0 (got {version!r})"
            )
        if timeout is not None:
            # Checked here: a bad value would otherwise first fail at a start, or at a
            # cron tick inside the engine.
            timeout = seconds(timeout, f"{kind} {name!r}: timeout", positive=True)
        if input_type is None:
            input_type = _input_type(fn)
            if kind == "agent" and input_type is Any:
                input_type = AgentInput  # agent input is AG-UI RunAgentInput-shaped
        if description is not None and not isinstance(description, str):
            raise InvalidInput(f"{kind} {name!r}: description must be a string")
        if max_attempts is not None:
            restart = attempts_policy(kind, name, max_attempts, restart)
        definition = Definition(
            description=description if description is not None else inspect.getdoc(fn),
            input_schema=_schema(input_schema, "input_schema"),
            output_schema=_schema(output_schema, "output_schema"),
            max_attempts=max_attempts,
            kind=kind,
            name=name,
            fn=fn,
            input_type=input_type,
            timeout=timeout,
            restart=restart,
            inline_steps=bool(inline_steps),
            version=version,
        )
        if definition.target in self._defs:
            raise InvalidInput(f"{definition.target} is already registered")
        self._defs[definition.target] = definition
        return definition

    def resolve(self, target: object) -> Definition:
        if not isinstance(target, str):
            raise UnknownTarget(f"target must be a string like 'workflow:NAME' (got {target!r})")
        prefix, _, name = target.partition(":")
        if prefix not in _TARGET_KINDS or not name:
            raise UnknownTarget(
                f"target {target!r} must be 'agent:NAME', 'workflow:NAME' or 'task:NAME'",
                target=target,
            )
        definition = self._defs.get(target)
        if definition is None:
            raise UnknownTarget(f"no definition is registered for {target!r}", target=target)
        return definition

    def get(self, target: str) -> Definition | None:
        return self._defs.get(target)

    def check_owner(self, definition: Definition, owner: object) -> Owner:
        owner = validate_owner(owner)
        if not isinstance(owner, definition.owner_type):
            raise InvalidInput(
                f"{definition.target} is a {definition.kind} target: its owner must be a "
                f"{definition.owner_type.__name__}, not a {type(owner).__name__}",
                field="owner",
            )
        return owner

    def __iter__(self) -> typing.Iterator[Definition]:
        return iter(self._defs.values())
