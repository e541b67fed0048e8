"""JSON Schemas that cannot hang the runtime (R12, R24, R5, R30, R31): checked within a budget.

Two kinds of schema use this one checker: a wait's ``schema`` (the payload of the signal
that answers it, R12) and a task's ``input_schema`` (checked at start, before anything
is stored: a failing input is :class:`~perdure.InvalidInput`) and ``output_schema``
(checked when the body returns: a failing result fails the job with code
``INVALID_OUTPUT``). The schemas are JSON Schema (the dialect named by ``$schema``,
else 2020-12), checked with the maintained ``jsonschema`` library.

Why a budget. Validation runs on the trio thread, which every run of the process
shares, and its input comes from callers. Two things could stall it:

- a ``pattern`` with catastrophic backtracking (``"^(a+)+$"`` against ``"aaaa…b"``)
  takes exponential time, and Python's ``re`` holds the GIL for the whole match, so
  not even a worker thread would keep the trio thread alive. Patterns
  (``pattern``, ``patternProperties``) are therefore matched with the ``regex``
  package, whose matcher takes a timeout;
- a schema whose keywords multiply (nested ``anyOf``, ``uniqueItems`` over large
  arrays) walks long. Every keyword checks the clock before it runs.

One check gets :data:`BUDGET` seconds in all; past it the value is refused
(``INVALID_INPUT``, ``detail.reason = "budget"``) instead of freezing every run.

Never remote: ``$ref`` is resolved only inside the schema itself (and the
meta-schemas). A ``$ref`` to ``http(s)://`` or ``file:`` is refused when the schema is
declared, as is a local one that does not resolve; nothing is ever fetched
(jsonschema's default registry would download remote references).
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import msgspec
import referencing
import referencing.exceptions
import regex

from perdure._errors import InvalidInput

from ._boundary import plain

__all__ = [
    "BUDGET",
    "MAX_SCHEMA_BYTES",
    "CompiledSchema",
    "OverBudget",
    "check_schema",
    "schema_errors",
]

MAX_SCHEMA_BYTES: Final = 64 * 1024
"""The largest schema a wait or a task may declare (encoded)."""

BUDGET = 0.1
"""Seconds one validation may take on the trio thread (module attribute: tests lower it)."""

_MAX_ERROR: Final = 500
_REMOTE: Final = ("http://", "https://", "file:", "//", "urn:")
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("perdure_schema_deadline")


class OverBudget(Exception):
    """A validation ran past :data:`BUDGET`."""


def _remaining() -> float:
    left = _deadline.get() - time.monotonic()
    if left <= 0:
        raise OverBudget
    return left


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


def _budgeted(fn: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _remaining()
        errors = fn(validator, value, instance, schema)
        if errors is not None:
            yield from errors

    return keyword


def _compile(pattern: object, where: str) -> regex.Pattern[str]:
    if not isinstance(pattern, str):
        raise InvalidInput(f"{where}: a pattern must be a string (got {pattern!r})")
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise InvalidInput(f"{where}: invalid pattern {pattern!r}: {exc}") from None


class CompiledSchema:
    """A checked JSON Schema and its bounded validator."""

    __slots__ = ("_patterns", "_validator", "schema", "what")

    def __init__(self, schema: object, what: str) -> None:
        self.what = what
        if not isinstance(schema, dict | bool):
            raise InvalidInput(f"{what} must be a JSON Schema (a dict or a bool)")
        try:
            plain = msgspec.json.decode(msgspec.json.encode(schema))
        except (TypeError, msgspec.EncodeError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"{what} is not JSON: {exc}") from None
        self.schema: dict[str, Any] | bool = plain
        base = jsonschema.validators.validator_for(plain, default=jsonschema.Draft202012Validator)
        try:
            base.check_schema(plain)
        except jsonschema.exceptions.SchemaError as exc:
            raise InvalidInput(f"{what} is not a valid JSON Schema: {exc.message}") from None
        self._patterns: dict[str, regex.Pattern[str]] = {}
        self._scan(plain)
        keywords = {name: _budgeted(fn) for name, fn in base.VALIDATORS.items()}
        keywords["pattern"] = _budgeted(self._pattern)
        keywords["patternProperties"] = _budgeted(self._pattern_properties)
        validator_cls = jsonschema.validators.extend(base, keywords)  # type: ignore[no-untyped-call]
        # attrs classes: mypy does not see their generated __init__ parameters
        registry: referencing.Registry[Any] = referencing.Registry(  # type: ignore[call-arg]
            retrieve=_refuse_retrieval
        )
        self._validator = validator_cls(plain, registry=registry)
        self._check_refs(plain)

    def _check_refs(self, node: object) -> None:
        """Every local ``$ref`` must resolve now, not when a value is checked."""
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                ref = item.get("$ref")
                if isinstance(ref, str):
                    try:
                        self._validator._resolver.lookup(ref)
                    except referencing.exceptions.Unresolvable:
                        raise InvalidInput(
                            f"{self.what}: $ref {ref!r} does not resolve within the schema"
                        ) from None
                stack.extend(item.values())

    def _scan(self, node: object) -> None:
        """Compile every pattern and refuse remote references, once, at registration."""
        if isinstance(node, list):
            for item in node:
                self._scan(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                self._patterns[value] = _compile(value, self.what)
            elif key == "patternProperties" and isinstance(value, dict):
                for pattern in value:
                    self._patterns[pattern] = _compile(pattern, self.what)
            elif (
                key in ("$ref", "$dynamicRef")
                and isinstance(value, str)
                and value.lower().startswith(_REMOTE)
            ):
                raise InvalidInput(
                    f"{self.what}: remote $ref {value!r} refused: schemas are resolved "
                    "locally only (put the referenced schema under $defs)"
                )
            self._scan(value)

    def _search(self, pattern: str, text: str) -> bool:
        compiled = self._patterns.get(pattern)
        if compiled is None:  # a pattern only reachable through an unusual path
            compiled = self._patterns[pattern] = _compile(pattern, self.what)
        try:
            return compiled.search(text, timeout=_remaining()) is not None
        except TimeoutError:
            raise OverBudget from None

    def _pattern(self, validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not self._search(pattern, instance):
            yield jsonschema.ValidationError(f"{_short(instance)} does not match {pattern!r}")

    def _pattern_properties(
        self, validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
    ) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if self._search(pattern, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)

    def problem(self, value: Any) -> tuple[str, dict[str, Any]] | None:
        """Why ``value`` (plain data) fails the schema, or ``None`` if it passes."""
        token = _deadline.set(time.monotonic() + BUDGET)
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        except OverBudget:
            return (
                f"checking it against the schema took longer than its {BUDGET} s budget",
                {"reason": "budget"},
            )
        except referencing.exceptions.Unresolvable as exc:
            return f"the schema has an unresolvable $ref: {exc}"[:_MAX_ERROR], {"reason": "ref"}
        finally:
            _deadline.reset(token)
        if error is None:
            return None
        path = "/".join(str(part) for part in error.absolute_path)
        return error.message[:_MAX_ERROR], {"reason": "schema", "path": "/" + path}

    def check(self, value: Any, target: str) -> None:
        """:class:`InvalidInput` unless ``value`` satisfies the schema."""
        problem = self.problem(value)
        if problem is not None:
            message, detail = problem
            raise InvalidInput(f"{self.what} of {target}: {message}", target=target, **detail)


def _short(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")


@functools.lru_cache(maxsize=1024)
def _cached(canonical: bytes, what: str) -> CompiledSchema:
    return CompiledSchema(msgspec.json.decode(canonical), what)


def _canonical(schema: Any) -> bytes:
    return msgspec.json.encode(schema, order="sorted")


def check_schema(schema: Any, what: str = "schema") -> dict[str, Any] | None:
    """A wait's schema as it is stored, or :class:`InvalidInput` saying why it is refused."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidInput(f"{what} must be a JSON Schema object (a dict)")
    stored = plain(schema, what, InvalidInput, limit=MAX_SCHEMA_BYTES)
    compiled = _cached(_canonical(stored), what)
    assert isinstance(compiled.schema, dict)
    return compiled.schema


def schema_errors(schema: dict[str, Any], value: Any) -> list[tuple[str, list[Any]]]:
    """``(message, path)`` of why ``value`` fails a stored wait ``schema`` (empty if it
    passes); never raises for the value's sake (R31)."""
    try:
        compiled = _cached(_canonical(schema), "the wait's schema")
    except InvalidInput as exc:
        return [(exc.message, [])]
    problem = compiled.problem(value)
    if problem is None:
        return []
    message, detail = problem
    path = [part for part in str(detail.get("path", "")).split("/") if part]
    return [(message, path)]
