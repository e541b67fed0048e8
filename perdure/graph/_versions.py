"""The registered versions of one graph, and the body its runs execute (R23).

``rt.graph(name, graph)`` registers ``workflow:NAME`` once, with :meth:`GraphVersions.body`
as its body, and adds each further version here. A run carries the version it started
with (``RunRecord.version``) and its body walks that version's graph, on its first
activation and on every replay; the runtime leaves a stored run whose version is not
registered as it is instead of running it (R26).
"""

from __future__ import annotations

from typing import Any

from perdure._errors import UnknownTarget
from perdure.runtime import RunContext

from ._graph import Graph
from ._live import Live
from ._walk import Walk

__all__ = ["GraphVersions"]


class GraphVersions:
    """Every version of the graph ``workflow:NAME`` registered in one runtime."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.graphs: dict[int, Graph] = {}

    @property
    def latest(self) -> Graph:
        """The highest version: new runs start under it."""
        return self.graphs[max(self.graphs)]

    def get(self, version: int | None) -> Graph | None:
        return None if version is None else self.graphs.get(version)

    async def body(self, ctx: RunContext, inp: Any) -> Any:
        """The run body of every version: walk the graph of the run's pinned version."""
        version = ctx.run.version
        graph = self.get(version)
        if graph is None:
            # The actor never runs such a run (it is left as stored); a dry replay
            # (``rt.check``) reaches here, and says so.
            raise UnknownTarget(
                f"version {version} of graph {self.name!r} is not registered "
                f"(registered: {sorted(self.graphs)}): the run would be left as it is",
                target=f"workflow:{self.name}",
                version=version,
            )
        walk = Walk(graph, Live(ctx), ctx.run_id, inp, ctx)
        return await walk.run(walk.root())
