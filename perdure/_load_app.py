"""``MODULE:ATTR`` on the command line: the application's Runtime, for every command that
takes one (``serve``, ``check --app``, ``targets``, ``graph show --app``, ``runs graph``).

Whatever loading the application raises is an :class:`~perdure.InvalidInput`: the
command line answers ``error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from perdure._errors import InvalidInput
from perdure.runtime import Runtime

__all__ = ["load_runtime"]


def load_runtime(target: str) -> Runtime:
    """``MODULE:ATTR`` as a Runtime, the module imported from the current directory first.

    ``ATTR`` is a Runtime, a ``Host`` or ``AsyncioHost`` (its runtime), or a function
    returning one of these.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"an app is named MODULE:ATTR, e.g. app:rt (got {target!r})")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the app's own import-time error
        raise _cannot_load(target, exc) from None
    try:
        value: Any = getattr(module, attr)
    except AttributeError:
        raise InvalidInput(f"{module_name!r} has no attribute {attr!r}") from None
    except Exception as exc:  # a module-level __getattr__ of the app's
        raise _cannot_load(target, exc) from None
    if callable(value) and not isinstance(value, Runtime) and not hasattr(value, "runtime"):
        try:
            value = value()
        except Exception as exc:
            raise InvalidInput(f"{target}() did not return a Runtime: {exc!r}") from None
    try:
        value = getattr(value, "runtime", value)  # a Host or an AsyncioHost
    except Exception as exc:
        raise _cannot_load(target, exc) from None
    if not isinstance(value, Runtime):
        raise InvalidInput(f"{target} is not a perdure.Runtime (got {type(value).__name__})")
    return value


def _cannot_load(target: str, exc: Exception) -> InvalidInput:
    return InvalidInput(f"cannot load app {target!r}: {type(exc).__name__}: {exc}", app=target)
