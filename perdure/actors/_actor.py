"""Actors on trio: one task and one mailbox each, never a thread.

An actor processes its messages one at a time, so its state needs no locks. Work
that must go on while the actor keeps receiving (a run's user body, say) runs in
the actor's own nursery, :attr:`Actor.nursery`, and dies with the actor.

Lifecycle hooks, all optional::

    class Counter(Actor[int]):
        async def on_start(self) -> None:      # before the first message
            self.total = 0
        async def on_receive(self, message: int) -> None:
            self.total += message
            if self.total > 10:
                self.stop()                      # drains nothing more, then on_stop
        async def on_stop(self) -> None:       # after the last message, also on failure
            print("final", self.total)
        def on_failure(self, exc: BaseException) -> None:
            ...                                  # a hook raised; the supervisor is told too

    supervisor.spawn(Counter("c1")).tell(5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from ._mailbox import Mailbox, MailboxClosed

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Actor"]

M = TypeVar("M")


class Actor(Generic[M]):
    """Base class of trio actors; see the module docstring for the hooks."""

    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        self.mailbox: Mailbox[M] = Mailbox()
        self._nursery: trio.Nursery | None = None
        self.stopped = trio.Event()

    @property
    def nursery(self) -> trio.Nursery:
        """Nursery for work owned by this actor; cancelled when the actor stops."""
        if self._nursery is None:
            raise RuntimeError(f"actor {self.actor_id} is not running")
        return self._nursery

    @property
    def alive(self) -> bool:
        return self._nursery is not None and not self.mailbox.closed

    def tell(self, message: M) -> None:
        """Queue a message; never blocks."""
        self.mailbox.put(message)

    def stop(self) -> None:
        """Stop after the messages already queued; background work is cancelled."""
        if not self.mailbox.closed:
            self.mailbox.close()

    async def on_start(self) -> None:
        """Called in the actor's task before the first message."""

    async def on_receive(self, message: M) -> None:
        """Handle one message; messages are handled one at a time."""

    async def on_stop(self) -> None:
        """Called after the last message, whether the actor stopped or failed."""

    def on_failure(self, exc: BaseException) -> None:
        """Called when a hook or the actor's background work raised."""

    async def _main(self, supervisor: Supervisor[M]) -> None:
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.on_start()
                while True:
                    try:
                        message = await self.mailbox.get()
                    except MailboxClosed:
                        break
                    await self.on_receive(message)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            failure = exc
            self.mailbox.close()
        finally:
            self._nursery = None
            try:
                with trio.CancelScope(shield=True):
                    await self.on_stop()
            finally:
                self.stopped.set()
                supervisor._forget(self)
        if failure is not None:
            self.on_failure(failure)
            supervisor._report(self, failure)
