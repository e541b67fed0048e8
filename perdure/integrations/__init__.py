"""Integrations of perdure with other frameworks, each an optional subpackage.

- :mod:`perdure.integrations.pydantic_ai`: pydantic-ai agents as durable agent runs
  (install the ``pydantic-ai`` extra).

Integrations depend only on perdure's public API; importing this package imports
no third-party framework.
"""
