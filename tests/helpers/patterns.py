"""Proof that schema patterns never reach Python's backtracking ``re`` engine (R30)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import regex

__all__ = ["forbid_backtracking_re"]


class _Unmatchable:
    """What ``re.compile`` returns for a forbidden pattern: validating the schema may
    compile it (the meta-schema's ``format: regex``), nothing may match with it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Python's re was used to match {self.pattern!r} ({name})")


def forbid_backtracking_re(monkeypatch: pytest.MonkeyPatch, patterns: set[str]) -> set[str]:
    """Make Python's ``re`` refuse to match ``patterns``; return those ``regex`` compiled.

    Every matching entry point of ``re`` raises when given one of them, and
    ``re.compile`` returns an object that raises when used; ``regex.compile`` (the
    engine with a timeout) is spied on instead.
    """
    compiled_by_regex: set[str] = set()
    real_compile = re.compile

    def compile_(pattern: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(pattern, str) and pattern in patterns:
            return _Unmatchable(pattern)
        return real_compile(pattern, *args, **kwargs)

    monkeypatch.setattr(re, "compile", compile_)
    for name in ("search", "match", "fullmatch", "findall", "finditer", "split", "sub", "subn"):
        real = getattr(re, name)

        def refuse(pattern: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if isinstance(pattern, str) and pattern in patterns:
                raise AssertionError(f"Python's re was used to match {pattern!r}")
            return _real(pattern, *args, **kwargs)

        monkeypatch.setattr(re, name, refuse)
    real_regex_compile = regex.compile

    def spy(pattern: Any, *args: Any, **kwargs: Any) -> Any:
        compiled_by_regex.add(pattern)
        return real_regex_compile(pattern, *args, **kwargs)

    monkeypatch.setattr(regex, "compile", spy)
    return compiled_by_regex
