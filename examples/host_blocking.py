"""Using perdure from a program that does not run trio: the blocking Host.

python examples/host_blocking.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import tempfile

import perdure

host = perdure.Host(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")


@host.task("resize")
async def resize(ctx: perdure.RunContext, config: dict[str, int]) -> dict[str, int]:
    area = await ctx.step("area", lambda: config["w"] * config["h"])
    await ctx.custom("progress", {"pct": 100})
    return {"area": area}


def main() -> int:
    with host:
        started = host.start("task:resize", {"w": 3, "h": 4}, owner=perdure.Project("p1"))
        done = host.wait(started.run.id)
        print(done.status, done.completion.result if done.completion else None)
        print([event.type for event in host.events(started.run.id)])
        assert done.completion is not None
        area: int = done.completion.result["area"]
        return area


if __name__ == "__main__":
    assert main() == 12
