"""An actor's mailbox: an unbounded FIFO that one trio task receives from.

Lighter than a trio memory channel pair (a deque and a parking lot), which
matters when a hundred thousand runs each own one. Sending never blocks, as in
pykka: back-pressure belongs to whoever produces work (the writer, the runtime's
admission control), not to message delivery.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

__all__ = ["Mailbox", "MailboxClosed"]

M = TypeVar("M")


class MailboxClosed(Exception):
    """Raised by :meth:`Mailbox.get` once the mailbox is closed and drained."""


class Mailbox(Generic[M]):
    """Unbounded single-consumer mailbox.

    ``put`` is synchronous and safe from any task in the same trio run; ``get``
    waits for the next message. After ``close`` the remaining messages are still
    delivered, then ``get`` raises :class:`MailboxClosed`.
    """

    __slots__ = ("_closed", "_items", "_lot")

    def __init__(self) -> None:
        self._items: deque[M] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def put(self, message: M) -> None:
        if self._closed:
            raise MailboxClosed("mailbox is closed")
        self._items.append(message)
        self._lot.unpark()

    async def get(self) -> M:
        while not self._items:
            if self._closed:
                raise MailboxClosed("mailbox is closed")
            await self._lot.park()
        return self._items.popleft()

    def get_nowait(self) -> M | None:
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
