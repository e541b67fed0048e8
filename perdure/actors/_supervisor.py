"""The supervisor: spawns actors, routes messages by id, keeps the live tree.

It owns one nursery in which every actor runs. Messages are addressed by actor
id; a message for an actor that is not live goes to the ``activate`` callback,
which may rebuild the actor from durable state (a passivated run) — this is how
a waiting run that costs no memory wakes up on a signal.

Parent/child links are kept for live actors so the owner can walk a tree
(deepest first) without a store round trip. The durable tree lives in storage;
these links are a cache of the live part of it.

Passivation: an actor marked idle joins an LRU list. When more than
``max_live`` actors are alive, the least recently idle ones are stopped; they
come back through ``activate`` when a message arrives for them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import trio

from ._actor import Actor

__all__ = ["Supervisor"]

M = TypeVar("M")


class Supervisor(Generic[M]):
    """Owner of every live actor of one runtime."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        activate: Callable[[str], Actor[M] | None] | None = None,  # rebuild; we spawn it
        on_failure: Callable[[Actor[M], BaseException], None] | None = None,
        max_live: int | None = None,
    ) -> None:
        self.nursery = nursery
        self._activate = activate
        self._on_failure = on_failure
        self.max_live = max_live
        self._live: dict[str, Actor[M]] = {}
        self._parent: dict[str, str] = {}
        self._children: dict[str, set[str]] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._evicting: set[str] = set()
        self.passivations = 0

    # -- spawning and routing -----------------------------------------------------------------

    def spawn(self, actor: Actor[M], parent_id: str | None = None) -> Actor[M]:
        """Start ``actor`` in the supervisor's nursery, linked under ``parent_id``."""
        if actor.actor_id in self._live:
            raise RuntimeError(f"actor {actor.actor_id} is already live")
        actor._supervisor = self
        # First, so that a refusal (a nursery closed to new arrivals) leaves no trace:
        # the task only runs once this returns.
        self.nursery.start_soon(actor._main, self, name=f"actor:{actor.actor_id}")
        self._live[actor.actor_id] = actor
        if parent_id is not None:
            self._parent[actor.actor_id] = parent_id
            self._children.setdefault(parent_id, set()).add(actor.actor_id)
        return actor

    def get(self, actor_id: str) -> Actor[M] | None:
        """The live actor with this id, if any (never activates)."""
        actor = self._live.get(actor_id)
        return actor if actor is not None and not actor.mailbox.closed else None

    def stopping(self, actor_id: str) -> Actor[M] | None:
        """An actor that was told to stop but has not finished stopping yet."""
        actor = self._live.get(actor_id)
        return actor if actor is not None and actor.mailbox.closed else None

    def ensure(self, actor_id: str) -> Actor[M] | None:
        """The live actor, activating a passive one through ``activate`` if needed."""
        actor = self.get(actor_id)
        if actor is None and self._activate is not None:
            stale = self._live.get(actor_id)
            if stale is not None:
                return None  # still stopping; the caller retries after ``stopped``
            actor = self._activate(actor_id)
            if actor is not None and actor.actor_id not in self._live:
                self.spawn(actor)
        return actor

    def tell(self, actor_id: str, message: M) -> bool:
        """Deliver ``message``; ``False`` if no such actor can be found or activated."""
        actor = self.ensure(actor_id)
        if actor is None:
            return False
        self.mark_busy(actor_id)
        actor.tell(message)
        return True

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Actor[M]]:
        return iter(list(self._live.values()))

    # -- tree ---------------------------------------------------------------------------------

    def parent_of(self, actor_id: str) -> str | None:
        return self._parent.get(actor_id)

    def children_of(self, actor_id: str) -> set[str]:
        return set(self._children.get(actor_id, ()))

    # -- passivation --------------------------------------------------------------------------

    def mark_idle(self, actor_id: str) -> None:
        """The actor may be stopped to free memory; evict beyond ``max_live``."""
        if actor_id in self._live:
            self._idle[actor_id] = None
            self._idle.move_to_end(actor_id)
        self._evict()

    def mark_busy(self, actor_id: str) -> None:
        self._idle.pop(actor_id, None)

    def passivate(self, actor_id: str) -> bool:
        """Stop an idle actor now; it returns through ``activate`` on its next message.

        Refused (``False``) for an actor that is not idle, already stopping, or busy:
        a message in flight would change its state as it stops. A busy actor stays
        idle-marked and is reconsidered later.
        """
        actor = self._live.get(actor_id)
        if actor_id not in self._idle or actor is None or actor.busy or actor.mailbox.closed:
            return False
        del self._idle[actor_id]
        self._evicting.add(actor_id)
        self.passivations += 1
        actor.stop()
        return True

    def _evict(self) -> None:
        if self.max_live is None:
            return
        # Actors already stopping no longer count; victims are the least recently idle
        # that can go. Normally only the first idle entry is looked at.
        excess = len(self._live) - len(self._evicting) - self.max_live
        if excess <= 0:
            return
        victims: list[str] = []
        for actor_id in self._idle:
            actor = self._live.get(actor_id)
            if actor is not None and not actor.busy and not actor.mailbox.closed:
                victims.append(actor_id)
                if len(victims) == excess:
                    break
        for actor_id in victims:
            self.passivate(actor_id)

    # -- called by actors ---------------------------------------------------------------------

    def _forget(self, actor: Actor[M]) -> None:
        actor_id = actor.actor_id
        if self._live.get(actor_id) is actor:
            del self._live[actor_id]
        self._idle.pop(actor_id, None)
        self._evicting.discard(actor_id)
        parent = self._parent.pop(actor_id, None)
        if parent is not None:
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.discard(actor_id)
                if not siblings:
                    del self._children[parent]

    def _report(self, actor: Actor[M], exc: BaseException) -> None:
        if self._on_failure is not None:
            self._on_failure(actor, exc)

    async def stop_all(self) -> None:
        """Stop every live actor and wait until they have all stopped."""
        actors = list(self._live.values())
        for actor in actors:
            actor.stop()
        for actor in actors:
            await actor.stopped.wait()
