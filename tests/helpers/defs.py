"""A standard set of definitions most tests run, registered on a fresh Runtime or Host.

Targets:

* ``workflow:echo``   returns its (dict) input.
* ``workflow:emit``   ``{"n": N}``: emits N ``CUSTOM tick`` events, ``trio.sleep(0)`` between.
* ``workflow:block``  ``{"gate": NAME}``: emits ``CUSTOM blocked`` then waits for
  ``rt.gates[NAME]`` (a trio.Event), then returns ``{"released": NAME}``.
* ``workflow:typed``  input is the :class:`Order` msgspec Struct.
* ``task:job``        returns ``{"done": input}`` (kind ``job``).
* ``task:any``        unannotated input (``Any``); returns None.
* ``task:fail``       raises ``ValueError(input["msg"])``.
* ``agent:chat``      says ``hello`` (one whole text message); owned by a Conversation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
import trio

import perdure

__all__ = ["BODY_CALLS", "Gates", "Order", "new_rt", "register"]


class Order(msgspec.Struct):
    sku: str
    qty: int


class Gates:
    """Named trio Events the ``block`` workflow waits on."""

    def __init__(self) -> None:
        self._events: defaultdict[str, trio.Event] = defaultdict(trio.Event)
        self.entered: list[str] = []

    def __getitem__(self, name: str) -> trio.Event:
        return self._events[name]

    def open(self, name: str = "default") -> None:
        self._events[name].set()


BODY_CALLS: dict[str, int] = defaultdict(int)
"""How many times each run id's body was entered (across activations)."""


def register(rt: perdure.Runtime | perdure.Host) -> Gates:
    """Register the standard definitions on ``rt``; returns the gates of ``workflow:block``."""
    gates = Gates()

    @rt.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: dict) -> dict:
        BODY_CALLS[ctx.run_id] += 1
        return inp

    @rt.workflow("emit")
    async def emit(ctx: perdure.RunContext, inp: dict) -> dict:
        BODY_CALLS[ctx.run_id] += 1
        for i in range(inp["n"]):
            await ctx.custom("tick", {"i": i})
            await trio.sleep(0)
        return {"n": inp["n"]}

    @rt.workflow("block")
    async def block(ctx: perdure.RunContext, inp: dict) -> dict:
        BODY_CALLS[ctx.run_id] += 1
        name = inp.get("gate", "default")
        gates.entered.append(ctx.run_id)
        await ctx.custom("blocked", {"gate": name})
        await gates[name].wait()
        return {"released": name}

    @rt.workflow("typed")
    async def typed(ctx: perdure.RunContext, inp: Order) -> dict:
        assert isinstance(inp, Order), type(inp)
        return {"sku": inp.sku, "qty": inp.qty}

    @rt.task("job")
    async def job(ctx: perdure.RunContext, inp: dict) -> dict:
        BODY_CALLS[ctx.run_id] += 1
        return {"done": inp}

    @rt.task("any")
    async def any_input(ctx, inp) -> Any:  # type: ignore[no-untyped-def]
        return None

    @rt.task("fail")
    async def fail(ctx: perdure.RunContext, inp: dict) -> dict:
        BODY_CALLS[ctx.run_id] += 1
        raise ValueError(inp.get("msg", "boom"))

    @rt.agent("chat")
    async def chat(ctx: perdure.AgentContext, inp: perdure.AgentInput) -> None:
        BODY_CALLS[ctx.run_id] += 1
        await ctx.say("hello")

    return gates


def new_rt(data_dir: Any, **options: Any) -> perdure.Runtime:
    """A bare Runtime on ``data_dir``, ``durability="process"`` unless given."""
    options.setdefault("durability", "process")
    return perdure.Runtime(data_dir, **options)
