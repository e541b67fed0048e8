"""What a run actor needs from the engine around it, as a ``Protocol``.

The run actor, its context, steps and waits depend on this port, never on
:class:`~perdure.Runtime` (the public facade) nor on the engine's other parts. It is
small on purpose: a handful of shared services (the writer, the op builders, the
change hub, the supervisor, admission) and the few engine operations that cross run
boundaries (children, timers, wake-ups of parents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import trio

    from perdure.actors import Supervisor
    from perdure.agui import Event
    from perdure.storage import (
        JournalEntry,
        LogRecord,
        Op,
        Ops,
        Owner,
        RunRecord,
        TimerRef,
        Writer,
    )

    from ._admission import Admission
    from ._definitions import Definition
    from ._hub import ChangeHub
    from ._results import Started
    from ._run_actor import RunActor, RunMessage
    from ._starting import Checked
    from ._timers import TimerService

__all__ = ["EnginePort"]


class EnginePort(Protocol):
    """The engine as a run actor sees it."""

    ops: Ops
    writer: Writer
    hub: ChangeHub
    supervisor: Supervisor[RunMessage]
    admission: Admission
    timers: TimerService
    token: trio.lowlevel.TrioToken
    passivate_after: float
    cancel_grace: float
    virtual_time: bool
    """Under a MockClock: sync steps run on the trio thread so virtual time cannot race them."""

    def now(self) -> float:
        """Wall time on the runtime's clock."""
        ...

    def trio_time(self, when: float) -> float:
        """The trio clock reading at which wall time ``when`` arrives."""
        ...

    def definition(self, target: str) -> Definition | None:
        """The registered definition of ``target`` in this process, if any."""
        ...

    def arm_timer(self, ref: TimerRef) -> Op:
        """Arm a durable wake-up; returns the op that stores it (commit it with the run)."""
        ...

    def stored_events(self, run_id: str) -> list[Event]:
        """Every committed event of a run (to rebuild what its log left open)."""
        ...

    def stored_state(self, run_id: str) -> tuple[RunRecord | None, list[JournalEntry]]:
        """The run's committed record and journal (a failed commit rolls back to them)."""
        ...

    def stored_last_log(self, run_id: str) -> LogRecord | None:
        """The run's newest stored log entry (``ctx.log`` numbering goes on from it)."""
        ...

    async def start_child(self, checked: Checked, *, run_id: str, parent: RunRecord) -> Started:
        """Start the child run of ``parent`` that :meth:`check_child` accepted (R17)."""
        ...

    def check_child(
        self, target: str, input: Any, *, owner: Owner, run_id: str | None, parent: RunRecord
    ) -> Checked:
        """Refuse a child start that can never succeed, before it is journaled; what the
        start is made of if it can."""
        ...

    async def cancel_children(self, run_id: str, reason: str) -> None:
        """Cancel every non-terminal child of ``run_id``, each deepest first (R15)."""
        ...

    async def cancel_run(self, run_id: str, reason: str) -> bool:
        """Cancel one run (its descendants first, R15); False if it had already ended."""
        ...

    async def wait_run(self, run_id: str) -> RunRecord:
        """The run's terminal record, once it has one."""
        ...

    def run_finished(self, actor: RunActor) -> None:
        """The actor's run committed its terminal record."""
        ...

    def actor_stopped(self, actor: RunActor) -> None:
        """The actor stopped (ended, passivated or closed)."""
        ...
