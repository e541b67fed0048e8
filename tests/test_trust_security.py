"""Security cases of issue 9: what someone who controls a directory or a value can do.

- A symlink planted as ``perdure.lock``, ``lock.mdb`` or ``data.mdb`` is refused
  (StorageUnavailable) and the file it points at is left byte for byte as it was (it
  used to be truncated and rewritten: anyone able to write the data directory could
  clobber any file the service user can write).
- ``perdure runs list/show/events`` print stored strings literally: ``[/]`` does not crash
  them and ``[link=...]`` never becomes a live terminal hyperlink (OSC 8), even when the
  output is a colour terminal.
- A JSON-schema ``pattern`` like ``^(a+)+$`` against ``"a" * 26 + "!"`` is matched by the
  ``regex`` engine (with a timeout), never by Python's backtracking ``re``, and the event
  loop keeps serving other runs meanwhile.
- ``perdure bench`` run from a directory holding ``bench/throughput.py`` never executes it.
- ``runs show ""`` and ``runs events --after 18446744073709551616`` exit 2 with an error
  line, no traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.checks import waiting
from helpers.patterns import forbid_backtracking_re
from helpers.trust import cli, cli_batch, store_files

import perdure
from perdure import ExternalEvent, InputResponse
from perdure.storage import Store

P = perdure.Project("p1")
MARKUP = "[/] [bold]b[/bold] [link=https://evil.example/x]click me[/link] [red"
"""Stored strings that rich markup would interpret (or crash on)."""


def make(path: Path, **options: Any) -> perdure.Runtime:
    options.setdefault("durability", "process")
    rt = perdure.Runtime(path, **options)

    @rt.workflow("echo")
    async def echo(ctx: perdure.RunContext, inp: Any) -> Any:
        await ctx.custom("said", inp)
        return inp

    @rt.task("fail")
    async def fail(ctx: perdure.RunContext, inp: Any) -> None:
        raise ValueError(MARKUP)

    @rt.workflow("ticker")
    async def ticker(ctx: perdure.RunContext, inp: Any) -> None:
        while True:
            await ctx.custom("tick", None)
            await trio.sleep(0.005)

    return rt


async def small_store(path: Path) -> list[str]:
    async with make(path) as rt:
        run = (await rt.start("workflow:echo", {"x": 1}, owner=P)).run
        await rt.wait(run.id)
    return [run.id]


# -- symlinks where store files belong --------------------------------------------------------


@pytest.mark.no_log_check  # the store is refused on purpose: nothing to check
@pytest.mark.parametrize("name", ["perdure.lock", "lock.mdb", "data.mdb"])
async def test_a_symlinked_store_file_is_refused_and_its_target_untouched(
    tmp_path: Path, name: str
) -> None:
    """The store file ``name`` replaced by a symlink to a file outside the directory (for
    ``data.mdb``: the real data file, moved): opening for writing, read-only and through
    the CLI is refused with StorageUnavailable naming the link; the target keeps its
    bytes, size and mtime."""
    data = tmp_path / "data"
    await small_store(data)
    victim = tmp_path / "victim"
    if name == "data.mdb":
        shutil.move(data / name, victim)
    else:
        victim.write_bytes(b"precious: not perdure's to truncate\n" * 100)
        (data / name).unlink(missing_ok=True)
    (data / name).symlink_to(victim)
    before = (victim.read_bytes(), victim.stat().st_mtime_ns)
    with pytest.raises(perdure.StorageUnavailable, match="symlink") as raised:
        async with make(data):
            pass
    assert name in raised.value.message
    for readonly in (True, False):
        with pytest.raises(perdure.StorageUnavailable):
            Store(data, readonly=readonly, durability="process")
    ((_, code, _, err),) = cli_batch([["runs", "list", "--dir", str(data)]])
    assert code == 2 and err.startswith("error: STORAGE_UNAVAILABLE"), err
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == before
    assert (data / name).is_symlink()


async def test_a_symlinked_lock_in_a_new_directory_is_refused(tmp_path: Path) -> None:
    """Before any store exists: a directory holding only a planted ``perdure.lock``
    symlink is refused, and the target is untouched (the lock file is opened with
    O_NOFOLLOW, so even a race with the check could not follow it)."""
    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * 4096)
    (data / "perdure.lock").symlink_to(victim)
    with pytest.raises(perdure.StorageUnavailable):
        async with make(data):
            pass
    assert victim.read_bytes() == b"x" * 4096
    assert sorted(p.name for p in data.iterdir()) == ["perdure.lock"]


# -- the CLI prints stored strings, never markup ------------------------------------------------


async def test_the_cli_prints_stored_strings_literally(tmp_path: Path) -> None:
    """Input, result, event values, an error message and an idempotency key holding rich
    markup: ``runs list/show/events`` exit 0 and print them as stored, on a terminal with
    colours (FORCE_COLOR) too, with no OSC 8 hyperlink escape in the output."""
    data = tmp_path / "data"
    async with make(data) as rt:
        ok = await rt.start("workflow:echo", {"text": MARKUP}, owner=P, idempotency_key=MARKUP)
        failed = await rt.start("task:fail", None, owner=P)
        await rt.wait(ok.run.id)
        await rt.wait(failed.run.id)
    d = str(data)
    commands = [
        ["runs", "list", "--dir", d],
        ["runs", "show", ok.run.id, "--dir", d],
        ["runs", "show", failed.run.id, "--dir", d],
        ["runs", "events", ok.run.id, "--dir", d],
        ["runs", "events", failed.run.id, "--dir", d],
    ]
    for env in ({}, {"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "400"}):
        results = cli_batch(commands, env=env)
        for argv, code, out, err in results:
            assert code == 0 and "Traceback" not in err, (argv, err)
            assert "\x1b]8;" not in out, f"a live hyperlink in `perdure {' '.join(argv)}`"
            if argv[1] == "list":
                continue
            plain = out.replace("\\", "")  # JSON in the text views escapes nothing here
            assert "[/]" in plain and "[link=https://evil.example/x]click me[/link]" in plain, (
                argv,
                out,
            )


# -- patterns are linear time -----------------------------------------------------------------


async def test_a_catastrophic_pattern_never_reaches_re_and_runs_keep_going(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``^(a+)+$`` against ``"a" * 26 + "!"`` (3.4 s of backtracking with Python's ``re``,
    holding the event loop) is refused, as a ``pattern`` and as a ``patternProperties``
    key, by the ``regex`` engine (which takes a timeout): Python's ``re`` never matches
    with it; a ticking run keeps going meanwhile."""
    compiled_by_regex = forbid_backtracking_re(monkeypatch, {"^(a+)+$"})
    rt = make(data_dir)

    @rt.workflow("guarded")
    async def guarded(ctx: perdure.RunContext, inp: Any) -> Any:
        value = await ctx.wait_for_input("s", schema={"type": "string", "pattern": "^(a+)+$"})
        keyed = await ctx.wait_for_event(
            "k",
            schema={
                "type": "object",
                "patternProperties": {"^(a+)+$": {"type": "integer"}},
            },
        )
        return [value, keyed]

    evil = "a" * 26 + "!"
    async with rt:
        ticker = (await rt.start("workflow:ticker", None, owner=P)).run.id
        run_id = (await rt.start("workflow:guarded", None, owner=P)).run.id
        await waiting(rt, run_id)
        ticks_before = rt.get(ticker).last_event_id
        for _ in range(20):
            with pytest.raises(perdure.InvalidSignal):
                await rt.resume(run_id, InputResponse(key="s", value=evil))
        await rt.resume(run_id, InputResponse(key="s", value="aaaa"))
        with pytest.raises(perdure.InvalidSignal):
            await rt.resume(run_id, ExternalEvent(name="k", payload={"a" * 26: "not an int"}))
        await rt.resume(run_id, ExternalEvent(name="k", payload={evil: "anything", "aa": 1}))
        with trio.fail_after(30):  # hang guard
            while rt.get(ticker).last_event_id == ticks_before:
                await trio.sleep(0.005)
        assert rt.get(ticker).last_event_id > ticks_before, "the other run stopped"
        done = await rt.wait(run_id)
        assert done.completion is not None
        assert done.completion.result == ["aaaa", {evil: "anything", "aa": 1}]
        await rt.cancel(ticker)
    assert "^(a+)+$" in compiled_by_regex


# -- perdure bench never runs code from the current directory ---------------------------------


def test_bench_never_runs_code_from_the_current_directory(tmp_path: Path) -> None:
    """``perdure bench --help`` from a directory holding a malicious
    ``bench/throughput.py``: the file is never executed (it would leave a marker)."""
    marker = tmp_path / "PWNED"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "throughput.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def main(argv):\n    print('MALICIOUS BENCH')\n    return 0\n"
    )
    script = Path(sys.executable).parent / "perdure"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "perdure.cli"]
    proc = subprocess.run(
        [*command, "bench", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert not marker.exists(), "perdure bench executed ./bench/throughput.py"
    assert "MALICIOUS" not in proc.stdout
    assert proc.returncode == 0, proc.stderr


# -- argument validation in the CLI -----------------------------------------------------------


async def test_bad_cli_ids_and_cursors_exit_2_with_an_error_line(tmp_path: Path) -> None:
    """``runs show ""``, ``runs events ID --after 18446744073709551616`` (and their
    cousins) exit 2 with ``error: CODE: message`` and no traceback; nothing changes."""
    data = tmp_path / "data"
    (run_id,) = await small_store(data)
    before = store_files(data)
    d = str(data)
    commands = [
        ["runs", "show", "", "--dir", d],
        ["runs", "show", "a b", "--dir", d],
        ["runs", "show", "x" * 300, "--dir", d],
        ["runs", "show", "\udcff", "--dir", d],
        ["runs", "events", run_id, "--dir", d, "--after", "18446744073709551616"],
        ["runs", "events", run_id, "--dir", d, "--after", "-1"],
        ["runs", "events", "", "--dir", d],
        ["runs", "list", "--dir", d, "--after", "18446744073709551616"],
        ["runs", "list", "--dir", d, "--after", "nope"],
        ["runs", "list", "--dir", d, "--limit", "0"],
        ["runs", "cancel", "", "--dir", d],
    ]
    for argv, code, out, err in cli_batch(commands):
        assert code == 2, (argv, code, err)
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)
        assert out == "", (argv, out)
    assert store_files(data) == before
    # The real entry point too (argv from the OS, not from Python).
    proc = cli("runs", "show", "", "--dir", d)
    assert proc.returncode == 2 and proc.stderr.startswith("error: INVALID_INPUT")
    assert "Traceback" not in proc.stderr
