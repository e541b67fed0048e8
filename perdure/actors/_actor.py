"""Actors on trio: one task and one mailbox each, never a thread.

An actor has a main task that runs :meth:`Actor.run` (by default: nothing but
waiting to be stopped) and a mailbox whose messages :meth:`Actor.on_receive`
handles one at a time, concurrently with ``run``. The receiving task exists only
while there are messages: most actors of a busy runtime never receive one, and a
hundred thousand idle receivers would cost a hundred thousand parked tasks.

Lifecycle hooks, all optional::

    class Counter(Actor[int]):
        async def on_start(self) -> None:      # before run() and before any message
            self.total = 0
        async def on_receive(self, message: int) -> None:
            self.total += message              # one message at a time
            if self.total > 10:
                self.stop()                    # cancels run(), then on_stop
        def on_stop(self) -> None:             # after run() ends, also on failure
            print("final", self.total)
        def on_failure(self, exc: BaseException) -> None:
            ...                                # run() or a hook raised; the supervisor is told too

    supervisor.spawn(Counter("c1")).tell(5)

``stop()`` cancels ``run()`` at its next checkpoint (trio cancellation) and
closes the mailbox; messages already queued are still handled before
``on_stop``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from ._mailbox import Mailbox

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Actor", "LazyEvent"]

M = TypeVar("M")


class LazyEvent:
    """A ``trio.Event`` made only if someone waits: most actors never need one."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


class Actor(Generic[M]):
    """Base class of trio actors; see the module docstring for the hooks."""

    # Slots: a runtime may hold a hundred thousand of these.
    __slots__ = (
        "__weakref__",
        "_failure",
        "_receiving",
        "_scope",
        "_supervisor",
        "actor_id",
        "mailbox",
        "main_task",
        "stopped",
    )

    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        self.mailbox: Mailbox[M] = Mailbox()
        self.stopped = LazyEvent()  # set once the actor has fully stopped
        self._supervisor: Supervisor[M] | None = None
        self._scope: trio.CancelScope | None = None
        self._receiving: trio.Event | None = None
        self._failure: BaseException | None = None
        self.main_task: trio.lowlevel.Task | None = None

    @property
    def busy(self) -> bool:
        """Whether messages are queued or being handled."""
        return self._receiving is not None or len(self.mailbox) > 0

    @property
    def alive(self) -> bool:
        return self._supervisor is not None and not self.mailbox.closed

    def tell(self, message: M) -> None:
        """Queue a message; never blocks. Raises MailboxClosed once stopped."""
        self.mailbox.put(message)
        if self._receiving is None and self._supervisor is not None:
            self._receiving = trio.Event()
            self._supervisor.nursery.start_soon(self._receive, name=f"inbox:{self.actor_id}")

    def stop(self) -> None:
        """Cancel ``run()`` and close the mailbox (queued messages are still handled)."""
        self.mailbox.close()
        if self._scope is not None:
            self._scope.cancel()

    async def on_start(self) -> None:
        """Called in the actor's task before ``run()``."""

    async def run(self) -> None:
        """The actor's own work; by default it only waits to be stopped."""
        await trio.sleep_forever()

    async def on_receive(self, message: M) -> None:
        """Handle one message; messages are handled one at a time."""

    def on_stop(self) -> None:
        """Called once the actor has stopped, whether it stopped or failed."""

    def on_failure(self, exc: BaseException) -> None:
        """Called when ``run()`` or a hook raised."""

    async def _receive(self) -> None:
        done = self._receiving
        try:
            while (message := self.mailbox.get_nowait()) is not None:
                await self.on_receive(message)
        except Exception as exc:
            self._failure = self._failure or exc
            self.stop()
        finally:
            self._receiving = None
            if done is not None:
                done.set()

    async def _main(self, supervisor: Supervisor[M]) -> None:
        self._supervisor = supervisor
        self.main_task = trio.lowlevel.current_task()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self.mailbox.closed:
                    scope.cancel()
                await self.on_start()
                await self.run()
        except Exception as exc:
            self._failure = self._failure or exc
        finally:
            self._scope = None
            self.mailbox.close()
            while self._receiving is not None:
                with trio.CancelScope(shield=True):
                    await self._receiving.wait()
            try:
                self.on_stop()
            finally:
                self._supervisor = None
                self.stopped.set()
                supervisor._forget(self)
        if self._failure is not None:
            self.on_failure(self._failure)
            supervisor._report(self, self._failure)
