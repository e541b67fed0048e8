"""An actor's mailbox: an unbounded FIFO drained by the actor's receiving task.

Nothing ever parks on it: the actor starts a receiving task when a message
arrives and that task drains the queue, so a mailbox is a deque and a flag, which
matters when a hundred thousand runs each own one. Sending never blocks, as in
pykka: back-pressure belongs to whoever produces work, not to message delivery.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["Mailbox", "MailboxClosed"]

M = TypeVar("M")


class MailboxClosed(Exception):
    """Raised by :meth:`Mailbox.put` once the mailbox is closed."""


class Mailbox(Generic[M]):
    """Unbounded FIFO; messages must not be ``None`` (it means "empty")."""

    __slots__ = ("_closed", "_items")

    def __init__(self) -> None:
        self._items: deque[M] = deque()
        self._closed = False

    def put(self, message: M) -> None:
        if self._closed:
            raise MailboxClosed("mailbox is closed")
        self._items.append(message)

    def get_nowait(self) -> M | None:
        """The oldest message, or ``None`` when empty (closed or not)."""
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Refuse new messages; queued ones can still be taken."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
