"""What a run body sees: :class:`RunContext` and, for agents, :class:`AgentContext`.

Every method that changes the run's log is *journaled*: on replay (after a crash
or a re-activation) it returns without acting again, and the body keeps the
events it logged the first time. Bodies must therefore be deterministic between
journaled calls; anything non-deterministic (I/O, clocks, randomness) belongs in
a step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from perdure._errors import ChildCancelled, ChildFailed, InvalidInput, PerdureError
from perdure.agui import (
    CustomEvent,
    Event,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
    split_text_content,
    split_tool_call_args,
)
from perdure.storage import JournalEntry, Owner, RunRecord, TokenUsage

from ._boundary import EVENT_BUDGET, MAX_VALUE_BYTES, instant, label, text
from ._boundary import event as checked_event
from ._boundary import seconds as _seconds
from ._boundary import usage as _usage
from ._logs import draft, log_body, log_step, step_log_ops
from ._retry import RetryPolicy
from ._schemas import check_schema
from ._signals import (
    ApprovalDecision,
    ExternalEvent,
    InputResponse,
    Signal,
    ToolResult,
)
from ._steps import (
    body_flow,
    current_lane,
    in_body_flow,
    lane_of,
    record_action,
    run_step,
    step_of,
)
from ._versioning import deprecate_patch, patched
from ._waits import WaitSpec, open_wait, open_waits

if TYPE_CHECKING:
    from ._engine_port import EnginePort
    from ._run_actor import RunActor

__all__ = ["AgentContext", "ChildHandle", "Lane", "RunContext", "Sequential", "make_context"]

_RESERVED = (RunStartedEvent, RunFinishedEvent, RunErrorEvent)
_encode = msgspec.msgpack.Encoder().encode


class RunContext:
    """The handle a run body uses to act durably. One per activation of a run."""

    def __init__(self, actor: RunActor) -> None:
        self._actor = actor

    # -- identity -----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._actor.rec.id

    @property
    def run(self) -> RunRecord:
        """The run's current (staged) record."""
        return self._actor.rec

    @property
    def kind(self) -> str:
        return self._actor.rec.kind

    @property
    def target(self) -> str:
        return self._actor.rec.target

    @property
    def owner(self) -> Owner:
        return self._actor.rec.owner

    @property
    def parent_id(self) -> str | None:
        return self._actor.rec.parent_id

    @property
    def root_id(self) -> str:
        return self._actor.rec.root_id

    @property
    def attempt(self) -> int:
        """1 on the first attempt; grows when a crash cut an attempt short (R21)."""
        return self._actor.rec.attempt

    @property
    def replaying(self) -> bool:
        """True while the body re-runs actions the journal already recorded."""
        return self._actor.journal.replaying

    def now(self) -> float:
        """The run's clock: replay-stable, like Temporal's ``workflow.now()``.

        Seconds since the epoch at the body's last journaled action (a step's or an
        emit's commit, a signal's arrival, the end of a durable sleep; the run's start
        before any). It does not move between journaled actions, and a replay sees
        exactly the values the first execution saw. For a live reading of the wall
        clock, read it inside a step.
        """
        return self._actor.journal.time

    # -- events -------------------------------------------------------------------------------

    async def emit(self, *events: Event) -> None:
        """Append AG-UI events to the run's log, atomically and durably.

        ``RUN_STARTED``/``RUN_FINISHED``/``RUN_ERROR`` belong to the runtime and are
        refused, as are events that would make the log invalid (content for a
        message that is not open, a second start of an open tool call …). Text
        and tool-argument deltas over the 240 KiB event cap are split (R19).
        Journaled: replay does not log them again.
        """
        if not events:
            return
        # Checked before the journal is consulted: a refused call records nothing, so on
        # replay it must be refused again, not take the next call's entry.
        checked = tuple(_checked_event(event) for event in events)
        actor = self._actor
        step = step_of(actor)
        if step is not None:
            step.add(self._check_events(checked))
            return
        name = type(checked[0]).__struct_config__.tag
        assert isinstance(name, str)
        if not in_body_flow(actor):
            # Another task of the body: keyed by lane and occurrence (see ``lane``).
            slot = actor.journal.action("emit", lane_of(actor), name)
            if actor.journal.recorded(slot) is None:
                await record_action(actor, "kemit", slot, events=self._check_events(checked))
            return
        if actor.journal.take("emit", name) is not None:
            return  # logged (and checked) the first time; the log already holds them
        await actor.record("emit", name, events=self._check_events(checked))

    async def flush(self) -> None:
        """Commit what is buffered now, so followers see it live.

        Inside a step: the events emitted and the entries logged so far (without it
        they commit together with the step's result). If a crash then cuts the
        attempt, recovery closes what it left open and marks the log with a
        ``perdure.attempt_aborted`` event before the step re-runs (R21). In the body:
        the :meth:`log` entries queued for the run's next commit.

        It does nothing inside a step that runs concurrently with others (called from
        a task other than the body's own) and while the run shows an interrupt: those
        events commit with the step's result, as one block, so concurrent steps never
        interleave their items and no open step meets an interrupt (R19).
        """
        actor = self._actor
        step = step_of(actor)
        if step is not None:
            if step.keyed or actor.rec.status == "waiting":
                return
            events = step.take()
            logged = step_log_ops(actor, step) if step.logs else []
            if events or logged:
                await actor.persist(events=events, extra_ops=logged)
        elif actor.pending_ops and actor.logs is not None:
            await actor.persist()

    # -- raw logs (R24) -----------------------------------------------------------------------

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """Write a raw log entry (``rt.logs``), apart from the run's AG-UI events.

        ``level`` is ``debug``, ``info``, ``warning`` or ``error``; ``fields`` are
        structured data (msgpack-encodable, at most 8 KiB). Kept exactly once across
        replays: inside a step the entry commits with the step attempt's outcome; in
        the body with the run's next commit, or at :meth:`flush` (see
        :mod:`perdure.runtime._logs`). Callable from a step's worker thread too.
        """
        actor = self._actor
        item = draft(actor.engine.now(), message, level, fields)
        step = step_of(actor)
        if step is not None:
            log_step(step, item)
        else:
            log_body(actor, item)

    # -- durable steps and timers -------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        inactivity_timeout: float | None = None,
        result_type: Any = Any,
        inline: bool | None = None,
    ) -> Any:
        """Run ``fn(*args)`` at least once and record its result exactly once (R6).

        ``fn`` may be ``async`` or a plain function. A plain function runs in a worker
        thread, so it may block (file or network I/O, CPU work that releases the GIL);
        with ``inline=True`` (or the definition's ``inline_steps=True``) it runs on the
        trio thread instead, without the thread hop: right for quick, non-blocking
        functions, wrong for anything that blocks (it would stall every run). Under a
        ``MockClock`` plain functions always run inline, so virtual time stays
        deterministic. Once a
        result is recorded the step never runs again: replay returns the recorded
        value (decoded as msgpack builtins, or as ``result_type``). Asking for a
        different step name at a recorded position raises
        :class:`~perdure.NonDeterminismError` (R7). ``retry`` retries failed
        attempts with backoff on durable timers; ``timeout`` bounds each attempt;
        ``inactivity_timeout`` fails an attempt that has not called
        :meth:`heartbeat` for that long (R8). A step that fails on its last attempt
        raises :class:`~perdure.StepFailed` (also on replay, without running again).

        Steps may run concurrently, in tasks the body starts in a nursery (parallel
        tool calls): such a step is journaled by its name and occurrence instead of
        its position, so replay finds it whichever finished first (see :meth:`lane`).
        Steps that run at the same time must have distinct names (a second step of a
        name already in flight is refused) and their events commit with their
        results, each as one ``STEP_STARTED`` … ``STEP_FINISHED`` block. Steps do not
        nest.
        """
        return await run_step(
            self._actor,
            name,
            fn,
            args,
            retry=retry,
            timeout=timeout,
            inactivity_timeout=inactivity_timeout,
            result_type=result_type,
            inline=inline,
        )

    def recorded(self, name: str) -> bool:
        """Whether this task's next ``ctx.step(name, …)`` is recorded (R6).

        True means that step would return (or raise) its recorded outcome without
        running anything. A body can use it to take a decision that depends on work an
        earlier activation completed without starting that work again, as a step
        graph's race does with its recorded winner. Nothing is consumed.
        """
        actor = self._actor
        journal = actor.journal
        if in_body_flow(actor):
            entries, i = journal.entries, journal.pos
            while i < len(entries) and entries[i].kind == "retry" and entries[i].name == name:
                i += 1
            return i < len(entries) and entries[i].kind == "step" and entries[i].name == name
        entry = journal.peek_action(journal.next_action("step", lane_of(actor), name))
        return entry is not None and entry.kind == "kstep"

    def heartbeat(self) -> None:
        """Tell the running step it is alive (feeds ``inactivity_timeout``).

        Callable from the step's async code or from its worker thread.
        """
        step = step_of(self._actor)
        if step is None:
            return
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            trio.from_thread.run_sync(step.heartbeat, trio_token=self._actor.engine.token)
        else:
            step.heartbeat()

    def lane(self, name: str) -> Lane:
        """Name the concurrent strand the current task runs (journal keys, R6/R7).

        Journaled calls made from a task other than the body's own (a nursery's) are
        found on replay by slot, not position. Steps carry a name of their own; sleeps,
        child starts and emits do not, so two tasks doing them at once would number
        them in whatever order the scheduler ran the tasks. Inside
        ``with ctx.lane(name):`` they are numbered per lane instead, which is
        deterministic as long as each concurrently running task has a lane of its own::

            async def tool_call(call):
                with ctx.lane(call.id):
                    result = await ctx.step(f"tool {call.id}", execute, call)
                    await ctx.sleep(1)   # keyed in lane call.id

            async with trio.open_nursery() as nursery:
                for call in calls:
                    nursery.start_soon(tool_call, call)

        Lanes nest (``outer/inner``) and are inherited by the tasks started inside.
        When a lane ends normally it checks that it asked for every action its journal
        recorded under it: a body that took another path than before raises
        :class:`~perdure.NonDeterminismError` (R7). A lane that ends by an exception
        (a cancelled race loser) is not checked. In the body's own task a lane changes
        nothing: its actions are positional.
        """
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or "|" in name:
            raise InvalidInput(f"a lane name is 1-200 characters without '|' (got {name!r})")
        return Lane(self._actor, name, name)

    def sequential(self) -> Sequential:
        """Make this task's journaled calls the body's own, in journal order (R6/R7).

        For bridges to another event loop: trio-asyncio turns every call an asyncio
        library (pydantic-ai) makes into ``ctx`` into a trio task of its own, though
        the calls run one after another. Inside ``with ctx.sequential():`` such a task
        journals positionally, exactly as if the body had made the call itself. The
        caller promises that nothing journals concurrently with the block, neither the
        body nor another such task; calls that may overlap need :meth:`lane`.
        """
        return Sequential(self._actor)

    async def sleep(self, seconds: float) -> None:
        """Durable sleep (R9): survives restarts and passivation, fires once."""
        delay = _seconds(seconds, "sleep seconds")
        await self._durable_sleep(lambda: self._actor.engine.now() + delay)

    async def sleep_until(self, when: float) -> None:
        """Durable sleep until ``when`` (seconds since the epoch, the runtime's clock)."""
        due = instant(when, "sleep_until time")
        await self._durable_sleep(lambda: due)

    async def _durable_sleep(self, due_at: Callable[[], float]) -> None:
        actor = self._actor
        if step_of(actor) is not None:
            raise InvalidInput("durable sleeps belong in the body, not inside a step")
        journal = actor.journal
        if not in_body_flow(actor):
            # Another task of the body: keyed by lane and occurrence. A recorded sleep
            # whose due time passed returns at once (its timer is dropped).
            slot = journal.action("sleep", lane_of(actor), "sleep")
            entry = journal.recorded(slot)
            if entry is not None:
                due = msgspec.msgpack.decode(entry.value, type=float)
                ref = actor.timer(due, slot)
            else:
                due = due_at()
                ref, op = actor.arm_timer(due, slot)
                await record_action(actor, "ksleep", slot, _encode(due), extra_ops=[op])
            await actor.sleep_until(due, ref)
            return
        timer_name = f"sleep:{journal.pos}"
        entry = journal.take("sleep", "sleep")
        if entry is not None:
            due = msgspec.msgpack.decode(entry.value, type=float)
            if journal.replaying:
                journal.advance_time(due)
                return  # a later journal entry proves this sleep already fired
            ref = actor.timer(due, timer_name)
        else:
            due = due_at()
            ref, op = actor.arm_timer(due, timer_name)
            await actor.record("sleep", "sleep", _encode(due), extra_ops=[op])
        await actor.sleep_until(due, ref)

    async def custom(self, name: str, value: Any = None) -> None:
        """Log a ``CUSTOM`` event (progress, data for the UI …)."""
        await self.emit(CustomEvent(name=name, value=value))

    def _check_events(self, events: tuple[Event, ...]) -> list[Event]:
        opened: set[tuple[str, str]] = set()
        closed: set[tuple[str, str]] = set()
        out: list[Event] = []
        actor = self._actor
        step = step_of(actor)
        is_open = (step.open if step is not None else actor.open).is_open

        def open_now(kind: str, item: str) -> bool:
            return (kind, item) in opened or (is_open(kind, item) and (kind, item) not in closed)

        for event in events:  # each already checked by _checked_event
            if isinstance(event, _RESERVED):
                raise InvalidInput(f"{type(event).__name__} is written by the runtime, not emitted")
            if isinstance(event, TextMessageStartEvent | ToolCallStartEvent):
                kind, item = _item(event)
                if open_now(kind, item):
                    raise InvalidInput(f"{kind} {item!r} is already open")
                opened.add((kind, item))
                closed.discard((kind, item))
            elif isinstance(
                event,
                TextMessageContentEvent
                | TextMessageEndEvent
                | ToolCallArgsEvent
                | ToolCallEndEvent,
            ):
                kind, item = _item(event)
                if not open_now(kind, item):
                    raise InvalidInput(f"{kind} {item!r} is not open")
                if isinstance(event, TextMessageEndEvent | ToolCallEndEvent):
                    opened.discard((kind, item))
                    closed.add((kind, item))
            if isinstance(event, TextMessageContentEvent):
                out.extend(split_text_content(event.message_id, event.delta, EVENT_BUDGET))
                continue
            if isinstance(event, ToolCallArgsEvent):
                out.extend(split_tool_call_args(event.tool_call_id, event.delta, EVENT_BUDGET))
                continue
            out.append(event)
        return out

    # -- waiting checkpoints ------------------------------------------------------------------

    async def wait_for_tool_result(
        self,
        tool_call_id: str,
        *,
        timeout: float | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Any:
        """Wait for the :class:`~perdure.ToolResult` of a client-side tool call; return its content.

        The run is ``waiting`` (AG-UI interrupt reason ``tool_call``) until the result
        arrives through ``rt.resume``. ``timeout`` raises :class:`~perdure.WaitExpired`.
        """
        signal = await self._wait("tool", tool_call_id, schema, None, None, timeout)
        assert isinstance(signal, ToolResult)
        return signal.content

    async def wait_for_tool_results(
        self, tool_call_ids: list[str], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait for several tool calls at once (parallel tool calls); returns content by id."""
        if not tool_call_ids:
            return {}
        if len(set(tool_call_ids)) != len(tool_call_ids):
            raise InvalidInput("tool call ids must be distinct")
        for tool_call_id in tool_call_ids:
            _check_key(tool_call_id)
        if step_of(self._actor) is not None:
            raise InvalidInput("waits belong in the body, not inside a step")
        specs = [WaitSpec(reason="tool", key=tool_call_id) for tool_call_id in tool_call_ids]
        signals = await open_waits(self._actor, specs, _check_timeout(timeout))
        return {
            tool_call_id: signal.content
            for tool_call_id, signal in zip(tool_call_ids, signals, strict=True)
            if isinstance(signal, ToolResult)
        }

    async def wait_for_approval(
        self,
        key: str,
        *,
        prompt: str | None = None,
        approvers: list[str] | None = None,
        schema: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ApprovalDecision:
        """Wait for an :class:`~perdure.ApprovalDecision` (interrupt reason ``confirmation``).

        ``approvers`` is an allow-list (others get :class:`~perdure.PermissionDenied`);
        ``schema`` is a JSON Schema the decision's ``response`` must satisfy.
        """
        if approvers is not None and (
            not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers)
        ):
            raise InvalidInput("approvers must be a list of strings")
        signal = await self._wait("approval", key, schema, prompt, approvers, timeout)
        assert isinstance(signal, ApprovalDecision)
        return signal

    async def wait_for_event(
        self, name: str, *, timeout: float | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        """Wait for an :class:`~perdure.ExternalEvent` named ``name``; returns its payload."""
        signal = await self._wait("event", name, schema, None, None, timeout)
        assert isinstance(signal, ExternalEvent)
        return signal.payload

    async def wait_for_input(
        self,
        key: str,
        *,
        schema: dict[str, Any] | None = None,
        prompt: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Wait for human :class:`~perdure.InputResponse` (interrupt reason ``input_required``)."""
        signal = await self._wait("input", key, schema, prompt, None, timeout)
        assert isinstance(signal, InputResponse)
        return signal.value

    async def expect(self, key: str, reason: str | None = None) -> None:
        """Declare that a signal for ``key`` may arrive before the wait opens (R12).

        Such a signal is stored (durably) and consumed when the wait opens, instead
        of being refused with :class:`~perdure.NotWaiting`.
        """
        if reason is not None and reason not in ("tool", "approval", "event", "input"):
            raise InvalidInput("reason must be tool, approval, event or input")
        _check_key(key)
        actor = self._actor
        if not in_body_flow(actor):
            raise InvalidInput("ctx.expect is called from the body's own task, not a nursery's")
        name = f"{reason or '*'}:{key}"
        if actor.journal.take("expect", name) is not None:
            return
        new = msgspec.structs.replace(actor.rec, expected=[*actor.rec.expected, name])
        entry = JournalEntry("expect", name, at=actor.engine.now())
        actor.journal.append(entry)
        await actor.persist(new, journal=[entry])

    async def _wait(
        self,
        reason: str,
        key: str,
        schema: dict[str, Any] | None,
        prompt: str | None,
        approvers: list[str] | None,
        timeout: float | None,
    ) -> Signal:
        actor = self._actor
        if step_of(actor) is not None:
            raise InvalidInput("waits belong in the body, not inside a step")
        _check_key(key)
        if prompt is not None:
            text(prompt, "prompt", max_bytes=16 * 1024)
        if approvers is not None:
            if not isinstance(approvers, list) or len(approvers) > 1000:
                raise InvalidInput("approvers must be a list of at most 1000 names")
            for approver in approvers:
                text(approver, "an approver", max_bytes=256)
        return await open_wait(
            actor,
            reason,
            key,
            schema=check_schema(schema, f"the schema of {reason} wait {key!r}"),
            prompt=prompt,
            approvers=approvers,
            timeout=_check_timeout(timeout),
        )

    # -- child runs ---------------------------------------------------------------------------

    async def start_child(
        self,
        target: str,
        input: Any = None,
        *,
        owner: Owner | None = None,
        run_id: str | None = None,
    ) -> ChildHandle:
        """Start a child run (``parent_id`` = this run, same root) (R17).

        Journaled: replay returns a handle to the same child instead of starting a
        second one. The child's id is derived from this run's id and the journal
        position, so even a crash between the child's creation and the journal
        entry cannot produce two children. The owner defaults to this run's.
        """
        actor = self._actor
        if step_of(actor) is not None:
            raise InvalidInput("child runs are started from the body, not inside a step")
        child_owner = owner if owner is not None else actor.rec.owner
        # Checked before the journal is consulted: a refused start records nothing, so on
        # replay it must be refused again, not take the next start's entry.
        checked = actor.engine.check_child(
            target, input, owner=child_owner, run_id=run_id, parent=actor.rec
        )
        journal = actor.journal
        slot: str | None = None
        if not in_body_flow(actor):
            # Another task of the body: keyed by lane and occurrence, and the child's id
            # derives from the slot instead of the position.
            slot = journal.action("child", lane_of(actor), target)
            entry = journal.recorded(slot)
            tag = slot
        else:
            entry = journal.take("child", target)
            tag = str(journal.pos)
        if entry is not None:
            return ChildHandle(actor.engine, entry.value.decode())
        child_id = run_id or uuid.uuid5(uuid.NAMESPACE_URL, f"{actor.rec.id}/{tag}").hex
        journal.has_children = True  # a cancel racing the start must find the child
        started = await actor.engine.start_child(checked, run_id=child_id, parent=actor.rec)
        if slot is None:
            await actor.record("child", target, started.run.id.encode())
        else:
            await record_action(actor, "kchild", slot, started.run.id.encode())
        return ChildHandle(actor.engine, started.run.id)

    # -- patching running code (R37) ----------------------------------------------------------

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new branch of patch ``patch_id`` (R37).

        True for a run that reaches this point under code that has the patch; False
        when replaying a run that passed this point before the patch existed (it keeps
        the old branch). The decision is journaled and never flips for a run, across
        replays, passivation and restarts; later calls with the same id answer the
        same. Call it from the body, not inside a step. See :mod:`perdure.runtime._versioning`.
        """
        return patched(self._actor, patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Retire ``patch_id``: its old branch is gone from the code (R37).

        Replays of runs that recorded the patch stay aligned, and runs reaching this
        point now record it, so rolling back to the ``patched`` code is safe. Once no
        process may run that code, delete the call: a recorded marker nothing asks
        about is skipped.
        """
        deprecate_patch(self._actor, patch_id)

    # -- completion metadata ------------------------------------------------------------------

    def report_usage(self, usage: TokenUsage | None = None, **counts: Any) -> None:
        """Add token usage (one entry per provider/model); it goes on the terminal event.

        Counts are integers from 0 to 2**53-1 (what JSON carries exactly); anything else
        is :class:`~perdure.InvalidInput` and nothing is recorded. At most 100 entries.
        """
        checked = _usage(usage, counts)
        if len(self._actor.usage) >= 100:
            raise InvalidInput("a run reports at most 100 usage entries")
        self._actor.usage.append(checked)

    def set_model(self, model: str | None, provider: str | None = None) -> None:
        """Record the model (and provider) the run used, for its completion."""
        checked = label(model, "model")
        if provider is not None:
            self._actor.provider = label(provider, "provider")
        self._actor.model = checked

    def set_finish_reason(self, reason: str) -> None:
        """Record why the model stopped (``stop``, ``length`` …), for the completion."""
        self._actor.finish_reason = label(reason, "finish reason")


class AgentContext(RunContext):
    """:class:`RunContext` plus AG-UI conveniences for agent runs."""

    async def say(
        self, text: str, *, role: str = "assistant", message_id: str | None = None
    ) -> str:
        """Log one whole text message (start, content, end); returns its message id."""
        actor = self._actor
        if in_body_flow(actor):
            tag = str(actor.journal.pos)
        else:  # the slot the emit below takes: deterministic in a concurrent task too
            tag = actor.journal.next_action("emit", lane_of(actor), "TEXT_MESSAGE_START")
        mid = message_id or f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.run_id}/{tag}').hex}"
        await self.emit(
            TextMessageStartEvent(message_id=mid, role=role),  # type: ignore[arg-type]
            TextMessageContentEvent(message_id=mid, delta=text),
            TextMessageEndEvent(message_id=mid),
        )
        return mid

    async def state_snapshot(self, state: Any) -> None:
        """Replace the shared state (``STATE_SNAPSHOT``)."""
        await self.emit(StateSnapshotEvent(snapshot=state))

    async def state_delta(self, patch: list[dict[str, Any]]) -> None:
        """Apply an RFC 6902 JSON Patch to the shared state (``STATE_DELTA``)."""
        await self.emit(StateDeltaEvent(delta=patch))

    async def messages_snapshot(self, messages: list[dict[str, Any]]) -> None:
        await self.emit(MessagesSnapshotEvent(messages=messages))


class Lane(msgspec.Struct, gc=False):
    """``with ctx.lane(name):`` (see :meth:`RunContext.lane`). A struct the cyclic GC does
    not track, not a generator: step graphs enter one per concurrent branch, and a
    thousand graph runs in flight hold tens of thousands at once."""

    _actor: RunActor
    name: str
    full: str
    _token: Any = None

    def __enter__(self) -> str:
        actor = self._actor
        outer = lane_of(actor)
        if outer is not None:
            self.full = f"{outer}/{self.name}"
        self._token = current_lane.set((actor, self.full))
        return self.full

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current_lane.reset(self._token)
        if exc_type is None:  # a lane ended by an exception (a cancelled loser) is not checked
            self._actor.journal.check_lane(self.full)


class Sequential:
    """The context manager :meth:`RunContext.sequential` returns."""

    __slots__ = ("_actor", "_token")

    def __init__(self, actor: RunActor) -> None:
        self._actor = actor
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = body_flow.set(self._actor)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        body_flow.reset(self._token)


class ChildHandle:
    """A child run started with :meth:`RunContext.start_child`."""

    def __init__(self, engine: EnginePort, run_id: str) -> None:
        self._engine = engine
        self.run_id = run_id

    async def cancel(self, reason: str = "cancelled by its parent") -> bool:
        """Cancel the child (and its descendants, R15); False if it had already ended.

        Not journaled: a replayed body that cancels again finds the child ended.
        """
        return await self._engine.cancel_run(self.run_id, reason)

    async def result(self) -> Any:
        """Wait for the child; its result, or :class:`~perdure.ChildFailed` /
        :class:`~perdure.ChildCancelled`."""
        rec = await self._engine.wait_run(self.run_id)
        completion = rec.completion
        assert completion is not None
        if rec.status == "completed":
            return completion.result
        if rec.status == "cancelled":
            raise ChildCancelled(f"child run {rec.id} was cancelled", run_id=rec.id)
        error = completion.error
        raise ChildFailed(
            f"child run {rec.id} failed: {error.message if error else 'unknown error'}",
            run_id=rec.id,
            error=msgspec.to_builtins(error) if error else None,
        )


def _check_timeout(timeout: object) -> float | None:
    return None if timeout is None else _seconds(timeout, "timeout", positive=True)


def _check_key(key: object) -> None:
    # Keys end up in timer keys (wait deadlines), which LMDB caps at 511 bytes.
    text(key, "a wait key", max_bytes=256, forbid="#")


def _checked_event(event: Any) -> Event:
    """An emitted event as it will be logged (R30); deltas are checked, not capped: the
    caller splits them."""
    if isinstance(event, TextMessageContentEvent | ToolCallArgsEvent):
        delta = event.delta
        if not isinstance(delta, str):
            raise InvalidInput(f"{type(event).__name__}.delta must be a string")
        text(delta, "delta", max_bytes=MAX_VALUE_BYTES, empty=True, allow_nul=True)
        head = checked_event(msgspec.structs.replace(event, delta="."))
        return msgspec.structs.replace(head, delta=delta)
    return checked_event(event)


def _item(event: Event) -> tuple[str, str]:
    if isinstance(event, TextMessageStartEvent | TextMessageContentEvent | TextMessageEndEvent):
        return "message", event.message_id
    if isinstance(event, ToolCallStartEvent | ToolCallArgsEvent | ToolCallEndEvent):
        return "tool", event.tool_call_id
    raise PerdureError(f"not an item event: {event!r}")


def make_context(actor: RunActor) -> RunContext:
    return AgentContext(actor) if actor.rec.kind == "agent" else RunContext(actor)
