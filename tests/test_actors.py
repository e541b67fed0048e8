"""The actors layer on its own: mailbox, actor lifecycle, supervisor routing and passivation."""

from __future__ import annotations

import pytest
import trio

from perdure.actors import Actor, LazyEvent, Mailbox, MailboxClosed, Supervisor


class Recorder(Actor[int]):
    def __init__(self, actor_id: str, log: list[str]) -> None:
        super().__init__(actor_id)
        self.log = log
        self.busy_now = 0
        self.max_busy = 0

    async def on_start(self) -> None:
        self.log.append(f"{self.actor_id}:start")

    async def on_receive(self, message: int) -> None:
        self.busy_now += 1
        self.max_busy = max(self.max_busy, self.busy_now)
        await trio.sleep(0.001)  # a checkpoint: others could interleave if allowed to
        self.log.append(f"{self.actor_id}:{message}")
        self.busy_now -= 1
        if message < 0:
            raise ValueError("negative")

    def on_stop(self) -> None:
        self.log.append(f"{self.actor_id}:stop")


def test_mailbox_is_fifo_and_refuses_after_close() -> None:
    box: Mailbox[int] = Mailbox()
    box.put(1)
    box.put(2)
    box.close()
    with pytest.raises(MailboxClosed):
        box.put(3)
    assert (box.get_nowait(), box.get_nowait(), box.get_nowait()) == (1, 2, None)


async def test_lazy_event() -> None:
    event = LazyEvent()
    assert not event.is_set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(event.wait)
        await trio.sleep(0)
        event.set()
    assert event.is_set()
    await event.wait()  # already set: returns at once


async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        sup: Supervisor[int] = Supervisor(nursery)
        actor = Recorder("a", log)
        sup.spawn(actor)
        for i in range(5):
            actor.tell(i)
        await trio.sleep(0.05)
        assert actor.max_busy == 1
        actor.stop()
        await actor.stopped.wait()
        with pytest.raises(MailboxClosed):
            actor.tell(9)
    assert log == ["a:start", "a:0", "a:1", "a:2", "a:3", "a:4", "a:stop"]
    assert len(sup) == 0


async def test_queued_messages_are_handled_before_on_stop() -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        sup: Supervisor[int] = Supervisor(nursery)
        actor = sup.spawn(Recorder("a", log))
        actor.tell(1)
        actor.tell(2)
        actor.stop()
        await actor.stopped.wait()
    assert log == ["a:start", "a:1", "a:2", "a:stop"]


async def test_failure_is_reported_and_the_actor_stops() -> None:
    log: list[str] = []
    failures: list[tuple[str, str]] = []
    async with trio.open_nursery() as nursery:
        sup: Supervisor[int] = Supervisor(
            nursery, on_failure=lambda actor, exc: failures.append((actor.actor_id, str(exc)))
        )
        actor = sup.spawn(Recorder("a", log))
        actor.tell(-1)
        await actor.stopped.wait()
    assert failures == [("a", "negative")]
    assert log[-1] == "a:stop"
    assert sup.get("a") is None


async def test_routing_activates_passive_actors_and_keeps_links() -> None:
    log: list[str] = []
    activated: list[str] = []

    def activate(actor_id: str) -> Actor[int] | None:
        if actor_id == "unknown":
            return None
        activated.append(actor_id)
        return Recorder(actor_id, log)

    async with trio.open_nursery() as nursery:
        sup: Supervisor[int] = Supervisor(nursery, activate=activate)
        sup.spawn(Recorder("parent", log))
        sup.spawn(Recorder("child", log), parent_id="parent")
        assert sup.parent_of("child") == "parent"
        assert sup.children_of("parent") == {"child"}
        assert sup.tell("passive", 7)  # not live: rebuilt by activate, then spawned
        assert not sup.tell("unknown", 1)
        await trio.sleep(0.05)
        assert activated == ["passive"] and "passive:7" in log
        child = sup.get("child")
        assert child is not None
        child.stop()
        await child.stopped.wait()
        assert sup.children_of("parent") == set()
        for actor in sup:
            actor.stop()
    assert len(sup) == 0


async def test_lru_passivation_spares_busy_actors() -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        sup: Supervisor[int] = Supervisor(nursery, max_live=2)
        actors = [sup.spawn(Recorder(f"a{i}", log)) for i in range(3)]
        await trio.sleep(0)
        actors[0].tell(1)  # a0 is busy: it must not be passivated
        sup.mark_idle("a0")
        sup.mark_idle("a1")
        sup.mark_idle("a2")  # 3 live > 2: evict the oldest idle that is not busy
        await actors[1].stopped.wait()
        assert sup.get("a0") is not None and sup.get("a2") is not None
        assert sup.passivations == 1
        for actor in sup:
            actor.stop()
