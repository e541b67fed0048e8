"""The blocking Host facade, used from plain threads (no trio in the caller)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import assert_valid_log_host
from helpers.defs import BODY_CALLS, register

import perdure

P = perdure.Project("p1")
C = perdure.Conversation("c1")


def make_host(path: Any, **options: Any) -> tuple[perdure.Host, threading.Event]:
    """A Host with the standard definitions plus ``workflow:door``, which waits for the
    returned *threading* Event (so a plain thread can release it)."""
    host = perdure.Host(path, **options)
    register(host)
    door = threading.Event()

    @host.workflow("door")
    async def door_body(ctx: perdure.RunContext, inp: dict) -> dict:
        await ctx.custom("waiting")
        await trio.to_thread.run_sync(door.wait, abandon_on_cancel=True)
        await ctx.custom("opened")
        return {"ok": True}

    return host, door


def test_host_api_from_plain_threads(data_dir: Path) -> None:
    host, _ = make_host(data_dir)
    with host:

        def client(i: int) -> tuple[str, list[dict[str, Any]]]:
            owner = perdure.Project(f"t{i % 3}")
            started = host.start("workflow:emit", {"n": 3 + i % 3}, owner=owner)
            assert isinstance(started, perdure.Started) and not started.duplicate
            live = [e.to_wire() for e in host.events(started.run.id)]  # follows to the end
            done = host.wait(started.run.id)
            assert done.status == "completed"
            assert done.completion is not None
            assert done.completion.result == {"n": 3 + i % 3}
            assert host.get(started.run.id) == done
            assert live == assert_valid_log_host(host, started.run.id)
            return started.run.id, live

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(client, range(24)))
        ids = [rid for rid, _ in results]
        assert len(set(ids)) == 24
        for _, live in results:
            assert live[0]["type"] == "RUN_STARTED"
            assert live[-1]["type"] == "RUN_FINISHED"
        page = host.list(limit=1000)
        assert sorted(r.id for r in page.runs) == sorted(ids)
        assert len(host.list(owner=perdure.Project("t0")).runs) == 8
        assert [r.id for r in host.list(owner=perdure.Project("t1"), limit=3).runs] == [
            r.id for r in page.runs if r.owner == perdure.Project("t1")
        ][:3]
        cursor = host.list(limit=10).next_cursor
        assert cursor is not None
        assert len(host.list(after=cursor, limit=1000).runs) == 14


def test_host_live_follow_cancel_and_duplicates(data_dir: Path) -> None:
    host, door = make_host(data_dir)
    with host:
        run = host.start("workflow:door", {}, owner=P).run
        seen: list[perdure.RunEvent] = []
        follower = threading.Thread(target=lambda: seen.extend(host.events(run.id)))
        follower.start()
        door.set()
        follower.join(timeout=10)
        assert not follower.is_alive()
        assert [e.type for e in seen] == ["RUN_STARTED", "CUSTOM", "CUSTOM", "RUN_FINISHED"]
        assert seen == list(host.events(run.id, follow=False))

        blocked = host.start("workflow:block", {}, owner=P).run
        result = host.cancel(blocked.id, "from a thread")
        assert isinstance(result, perdure.Cancelled)
        assert result.cancelled is True and result.run.status == "cancelled"
        assert host.wait(blocked.id).status == "cancelled"
        assert host.cancel(blocked.id).cancelled is False
        wire = assert_valid_log_host(host, blocked.id)
        assert wire[-1]["outcome"] == {"type": "cancelled"}

        def dup(_: int) -> perdure.Started:
            return host.start("task:job", {"x": 1}, owner=P, idempotency_key="once")

        with ThreadPoolExecutor(8) as pool:
            starts = list(pool.map(dup, range(32)))
        assert sum(not s.duplicate for s in starts) == 1
        assert len({s.run.id for s in starts}) == 1
        host.wait(starts[0].run.id)
        assert BODY_CALLS[starts[0].run.id] == 1


def test_host_errors_propagate_to_the_calling_thread(data_dir: Path) -> None:
    host, _ = make_host(data_dir)
    with host:
        run = host.start("workflow:echo", {"a": 1}, owner=P, idempotency_key="k").run
        host.wait(run.id)
        cases: list[tuple[Any, type[perdure.PerdureError]]] = [
            (lambda: host.get("nope"), perdure.RunNotFound),
            (lambda: host.get(""), perdure.InvalidInput),
            (lambda: host.wait("nope"), perdure.RunNotFound),
            (lambda: host.cancel("nope"), perdure.RunNotFound),
            (lambda: host.cancel(run.id, reason=5), perdure.InvalidInput),
            (lambda: list(host.events("nope")), perdure.RunNotFound),
            (lambda: list(host.events(run.id, after=-1)), perdure.InvalidInput),
            (lambda: host.list(limit=0), perdure.InvalidInput),
            (lambda: host.list(status="bogus"), perdure.InvalidInput),
            (lambda: host.start("workflow:nope", {}, owner=P), perdure.UnknownTarget),
            (lambda: host.start("workflow:echo", {}, owner=C), perdure.InvalidInput),
            (lambda: host.start("workflow:typed", {"qty": "x"}, owner=P), perdure.InvalidInput),
            (lambda: host.start("task:any", object(), owner=P), perdure.SerializationError),
            (
                lambda: host.start("task:job", {}, owner=P, idempotency_key="k"),
                perdure.IdempotencyConflict,
            ),
        ]
        for call, error in cases:
            with pytest.raises(error):
                call()
        assert [r.id for r in host.list().runs] == [run.id]  # nothing was stored
        assert host.get(run.id).status == "completed"  # and the host still works


def test_host_not_open_and_reopen(data_dir: Path) -> None:
    host, _ = make_host(data_dir)
    with pytest.raises(perdure.PerdureError):
        host.get("x")
    with pytest.raises(perdure.PerdureError):
        host.start("workflow:echo", {}, owner=P)
    with host:
        run = host.start("workflow:echo", {"v": 1}, owner=P).run
        host.wait(run.id)
        with pytest.raises(perdure.PerdureError):
            host.__enter__()  # already open
    with pytest.raises(perdure.PerdureError):
        host.list()
    host.close()  # closing twice is harmless
    with host:  # the same Host opens again, with its history
        assert host.get(run.id).status == "completed"
        assert host.start("workflow:echo", {"v": 2}, owner=P).run.id != run.id


def test_host_early_break_from_events(data_dir: Path) -> None:
    host, door = make_host(data_dir)
    with host:
        run = host.start("workflow:door", {}, owner=P).run
        it = host.events(run.id)
        first = next(it)
        assert first.type == "RUN_STARTED"
        it.close()  # the client goes away mid-stream
        door.set()
        assert host.wait(run.id).status == "completed"
        assert_valid_log_host(host, run.id)


def test_two_hosts_on_one_directory_get_directory_locked(data_dir: Path) -> None:
    first, _ = make_host(data_dir)
    with first:
        second, _ = make_host(data_dir)
        with pytest.raises(perdure.DirectoryLocked):
            second.__enter__()


def test_second_host_is_refused_and_the_first_keeps_working(data_dir: Path) -> None:
    first, _ = make_host(data_dir)
    second, _ = make_host(data_dir)
    with first:
        with pytest.raises(perdure.StorageError):
            second.__enter__()
        with pytest.raises(perdure.PerdureError):
            second.get("x")  # it did not open
        run = first.start("workflow:emit", {"n": 2}, owner=P).run
        assert first.wait(run.id).status == "completed"
    with second:  # free once the first has closed
        assert second.get(run.id).status == "completed"


def test_host_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("x")
    host, _ = make_host(tmp_path / "data")
    with pytest.raises(perdure.ForeignDirectory):
        host.__enter__()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine.txt"]


def test_host_in_memory(tmp_path: Path) -> None:
    host, _ = make_host(None, durability="memory")
    with host:
        run = host.start("agent:chat", {}, owner=C).run
        assert host.wait(run.id).status == "completed"
        wire = assert_valid_log_host(host, run.id)
        assert [e["type"] for e in wire][1:4] == [
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
        ]
