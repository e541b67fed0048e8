"""JSON Schema checks that cannot hang the runtime (R12, R30, R31).

Schemas come from bodies (wait schemas) and definitions (task input and output
schemas); the values they check come from outside (signals, inputs). Validation runs on
the trio thread, so it must be bounded:

- **No network, ever.** A ``$ref`` is resolved within the schema itself; every ``$ref``
  is resolved once when the schema is declared, and one that does not resolve is
  refused then (:class:`~perdure.InvalidInput`), instead of failing (or, with
  jsonschema's old default, fetching a URL) when a signal arrives.
- **Linear-time patterns.** ``pattern`` and ``patternProperties`` are matched with RE2
  (``google-re2``), which has no backtracking: ``^(a+)+$`` against ``"a" * 26 + "!"``
  takes microseconds instead of freezing every run for seconds (Python's ``re`` holds
  the GIL while it backtracks, so a worker thread would not help). A pattern RE2 cannot
  compile (backreferences, lookaround) is refused when the schema is declared.
- **Bounded size.** A schema is plain data of at most 64 KiB.

Validators are built once per distinct schema and cached (keyed by the schema's
canonical JSON), so checking a signal costs one validation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jsonschema
import msgspec
import re2  # type: ignore[import-untyped]
from jsonschema.validators import extend
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from perdure._errors import InvalidInput, PerdureError

from ._boundary import plain

__all__ = ["MAX_SCHEMA_BYTES", "check_schema", "schema_errors"]

MAX_SCHEMA_BYTES = 64 * 1024


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported to the caller, not to stderr


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not isinstance(instance, dict):
        return
    for pattern, subschema in patterns.items():
        regex = _compiled(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_Validator = extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties},
)


@functools.lru_cache(maxsize=1024)
def _validator(canonical: bytes) -> Any:
    schema = msgspec.json.decode(canonical)
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    registry = registry.with_resource("", resource)
    return _Validator(schema, registry=registry)


def _canonical(schema: Any) -> bytes:
    return msgspec.json.encode(schema, order="sorted")


def check_schema(schema: Any, what: str = "schema") -> dict[str, Any] | None:
    """The schema as stored, or :class:`~perdure.InvalidInput` saying why it is refused."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidInput(f"{what} must be a JSON Schema object (a dict)")
    stored = plain(schema, what, InvalidInput, limit=MAX_SCHEMA_BYTES)
    try:
        jsonschema.Draft202012Validator.check_schema(stored)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"invalid JSON Schema ({what}): {exc.message}") from None
    validator = _validator(_canonical(stored))
    for node in _walk(stored):
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                validator._resolver.lookup(ref)
            except Unresolvable:
                raise InvalidInput(
                    f"{what}: $ref {ref!r} does not resolve within the schema "
                    "(remote references are never fetched)"
                ) from None
        for key in ("pattern",):
            if isinstance(node.get(key), str):
                _compile_or_refuse(node[key], what)
        props = node.get("patternProperties")
        if isinstance(props, dict):
            for pattern in props:
                _compile_or_refuse(pattern, what)
    result: dict[str, Any] = stored
    return result


def schema_errors(schema: dict[str, Any], value: Any) -> list[tuple[str, list[Any]]]:
    """``(message, path)`` of each way ``value`` fails ``schema`` (empty if it passes).

    ``schema`` must have passed :func:`check_schema`; anything unexpected while
    validating is reported as a failure, never raised.
    """
    try:
        validator = _validator(_canonical(schema))
        return [(e.message, list(e.absolute_path)) for e in validator.iter_errors(value)][:10]
    except PerdureError:
        raise
    except Exception as exc:
        return [(f"the value could not be checked: {type(exc).__name__}: {exc}", [])]


def _compile_or_refuse(pattern: str, what: str) -> None:
    try:
        _compiled(pattern)
    except Exception as exc:
        raise InvalidInput(
            f"{what}: pattern {pattern!r} is not supported (patterns are matched in linear "
            f"time with RE2: no backreferences or lookaround): {exc}"
        ) from None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
