"""Actor primitives on trio: mailboxes, actors, a supervisor with passivation.

This layer knows nothing of runs or LMDB; ``perdure.runtime`` builds run actors on it.
"""

from ._actor import Actor, LazyEvent
from ._mailbox import Mailbox, MailboxClosed
from ._supervisor import Supervisor

__all__ = ["Actor", "LazyEvent", "Mailbox", "MailboxClosed", "Supervisor"]
