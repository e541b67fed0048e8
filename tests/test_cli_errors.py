"""The command line's error contract: ``error: ...`` on stderr, exit status 2.

Never a Python traceback, never a store created as a side effect of a refusal, and
``perdure check`` exits 1 only when a run would fail (an app that cannot even be
loaded is a usage error, 2). Exercised in-process through ``perdure.cli.main`` and,
where a second process matters (a port held by another one), as a real subprocess.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import perdure
from perdure import graph as g
from perdure.cli import main
from perdure.server import _cli as server_cli

REPO = Path(__file__).resolve().parent.parent
_names = itertools.count()


# -- helpers -----------------------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str, *texts: str) -> None:
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for text in texts:
        assert text in err, (text, err)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path`` as the current directory, no ``$PERDURE_DIR``; app modules unloaded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERDURE_DIR", raising=False)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("errapp_"):
            del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _app(directory: Path, source: str) -> str:
    """Write a uniquely named app module into ``directory``; its module name."""
    name = f"errapp_{os.getpid()}_{next(_names)}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


async def _populate(directory: Path) -> dict[str, str]:
    """A finished workflow run, a finished task run, a graph run waiting on an approval."""
    rt = perdure.Runtime(directory, durability="process")

    @rt.workflow("plain")
    async def plain(ctx: perdure.RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    @rt.task("thumb")
    async def thumb(ctx: perdure.RunContext, config: dict[str, Any]) -> int:
        return 1

    async def fetch(c: g.NodeContext) -> dict[str, Any]:
        return {"lines": [1, 2]}

    rt.graph("order", g.Graph(g.step("fetch", fetch), g.approval("ok"), version=1))
    owner = perdure.Project("p")
    async with rt:
        ids: dict[str, str] = {}
        for name, target in (("plain", "workflow:plain"), ("task", "task:thumb")):
            started = await rt.start(target, {}, owner=owner)
            await rt.wait(started.run.id)
            ids[name] = started.run.id
        started = await rt.start("workflow:order", {}, owner=owner)
        with trio.fail_after(30):
            while rt.get(started.run.id).status != "waiting":
                await trio.sleep(0.01)
        ids["graph"] = started.run.id
    return ids


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("cli-errors") / "data"
    ids = trio.run(_populate, directory)
    return {"dir": str(directory), **ids}


# -- 1. administration commands never create a store --------------------------------------------

ADMIN_COMMANDS = [
    ["runs", "resume", "r1", "--approve", "k"],
    ["schedules", "pause", "nightly"],
    ["schedules", "resume", "nightly"],
    ["schedules", "trigger", "nightly"],
]


@pytest.mark.parametrize("argv", ADMIN_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_admin_commands_refuse_a_directory_without_a_store(
    argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = workdir / "nowhere"
    code, _, err = _run([*argv, "--dir", str(missing)], capsys)
    _refused(code, err, "no perdure store")
    assert not missing.exists()

    # The default directory (data/ of the current directory) is not created either.
    code, _, err = _run(argv, capsys)
    _refused(code, err, "no perdure store")
    assert not (workdir / "data").exists()

    # Nor is a store created inside an existing, empty directory.
    empty = workdir / "empty"
    empty.mkdir()
    code, _, err = _run([*argv, "--dir", str(empty)], capsys)
    _refused(code, err, "no perdure store")
    assert os.listdir(empty) == []


# -- 2. serve on a port in use ------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_serve_on_a_port_in_use_is_refused_before_opening(tmp_path: Path, held_port: int) -> None:
    data = tmp_path / "appdata"
    name = _app(tmp_path, f"import perdure\nrt = perdure.Runtime({str(data)!r})\n")
    env = dict(os.environ)
    env.pop("PERDURE_DIR", None)
    env.pop("PERDURE_TOKEN", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "perdure.cli", "serve", f"{name}:rt", "--port", str(held_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    _refused(proc.returncode, proc.stderr, "in use", str(held_port))
    assert not data.exists()  # refused before the runtime was opened


def test_serve_losing_the_port_after_the_check_is_refused_too(
    workdir: Path,
    held_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Another process takes the port between the check and hypercorn's bind.
    monkeypatch.setattr(server_cli, "check_port", lambda host, port: None)
    name = _app(workdir, f"import perdure\nrt = perdure.Runtime({str(workdir / 'appdata')!r})\n")
    code, _, err = _run(["serve", f"{name}:rt", "--port", str(held_port)], capsys)
    _refused(code, err, "in use")


# -- 3. an app that fails to load ---------------------------------------------------------------

BROKEN_APPS = {
    "RuntimeError": ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    "SyntaxError": ("def broken(:\n", "SyntaxError"),
    "ValueError": ("import json\nrt = json.loads('not json')\n", "JSONDecodeError"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_APPS))
@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--app", "{app}", "--dir", "{dir}"],
        ["targets", "{app}"],
        ["serve", "{app}", "--port", "0"],
        ["graph", "show", "order", "--app", "{app}"],
        ["runs", "graph", "r1", "--app", "{app}", "--dir", "{dir}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_app_that_fails_to_load_is_a_usage_error(
    kind: str, argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, text = BROKEN_APPS[kind]
    name = _app(workdir, source)
    app = f"{name}:rt"
    args = [a.format(app=app, dir=str(workdir / "data")) for a in argv]
    code, _, err = _run(args, capsys)
    _refused(code, err, f"cannot load app {app!r}", text)
    assert not (workdir / "data").exists()


def test_an_app_function_that_raises_is_a_usage_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _app(workdir, "def make():\n    raise RuntimeError('no runtime today')\n")
    for argv in (
        ["graph", "show", "order", "--app", f"{name}:make"],
        ["runs", "graph", "r1", "--app", f"{name}:make"],
        ["targets", f"{name}:make"],
    ):
        code, _, err = _run(argv, capsys)
        _refused(code, err, "no runtime today")


def test_every_command_taking_an_app_loads_a_host_or_a_function_the_same_way(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One loader for every ``MODULE:ATTR``: a Host (its runtime) or a function is
    accepted by ``targets`` as by ``graph show`` (they once had loaders of their own,
    and only one took a Host); a missing attribute is named."""
    name = _app(
        workdir,
        """
        import perdure

        host = perdure.Host("data")

        @host.runtime.workflow("hello")
        async def hello(ctx, inp):
            return inp

        def make():
            return host
        """,
    )
    for attr in ("host", "make"):
        code, out, err = _run(["targets", f"{name}:{attr}"], capsys)
        assert code == 0, err
        assert "workflow:hello" in out
    code, _, err = _run(["targets", f"{name}:nothing"], capsys)
    _refused(code, err, f"{name!r} has no attribute 'nothing'")


# -- 4. bad values of options -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["notaurl", "ftp://127.0.0.1/", "http://127.0.0.1:abc", "http://127.0.0.1:9/a b"]
)
@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "resume", "r1", "--approve", "k"],
        ["schedules", "trigger", "nightly"],
        ["schedules", "pause", "nightly"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_bad_url_is_a_usage_error(
    argv: list[str], url: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run([*argv, "--url", url], capsys)
    _refused(code, err, "--url")
    assert not (workdir / "data").exists()


def test_export_to_a_file_that_cannot_be_written(
    populated: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.jsonl"
    code, stdout, err = _run(
        ["export", populated["plain"], "--dir", populated["dir"], "--out", str(out)], capsys
    )
    _refused(code, err, "--out", "x.jsonl")
    assert stdout == "" and not out.parent.exists()
    # A run that exists and a path that can be written: exported as before.
    good = tmp_path / "x.jsonl"
    code, _, err = _run(
        ["export", populated["plain"], "--dir", populated["dir"], "--out", str(good)], capsys
    )
    assert code == 0, err
    assert good.read_text().startswith('{"run":')


@pytest.mark.parametrize("after", ["99999999999999999999999", str(2**63), "-1"])
def test_logs_after_out_of_range(
    after: str, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        ["runs", "logs", populated["plain"], "--dir", populated["dir"], "--after", after], capsys
    )
    _refused(code, err, "--after")


def test_logs_after_in_range(populated: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    for after in ("0", str(2**63 - 1)):
        code, _, err = _run(
            ["runs", "logs", populated["plain"], "--dir", populated["dir"], "--after", after],
            capsys,
        )
        assert code == 0, err


# -- 5, 6. runs graph ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["plain", "task"])
def test_runs_graph_refuses_a_run_that_is_not_a_graph_run(
    which: str, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ([], ["--json"]):
        code, out, err = _run(
            ["runs", "graph", populated[which], "--dir", populated["dir"], *extra], capsys
        )
        _refused(code, err, "INVALID_INPUT", "not a step-graph run")
        assert out == ""


def test_runs_graph_without_app_still_shows_a_graph_run(
    populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["runs", "graph", populated["graph"], "--dir", populated["dir"]], capsys)
    assert code == 0, err
    assert "fetch" in out and "pass --app MODULE:ATTR for all" in out


def test_runs_graph_names_an_unregistered_pinned_version(
    populated: dict[str, str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The app now registers only version 2 of the graph; the run pinned version 1.
    name = _app(
        workdir,
        f"""
        import perdure
        from perdure import graph as g

        rt = perdure.Runtime({populated["dir"]!r})

        async def fetch(c):
            return {{"lines": []}}

        rt.graph("order", g.Graph(g.step("fetch", fetch), g.step("more", fetch), version=2))
        """,
    )
    code, out, err = _run(
        ["runs", "graph", populated["graph"], "--dir", populated["dir"], "--app", f"{name}:rt"],
        capsys,
    )
    assert code == 0, err
    assert "version 1 of this graph is not registered in the app" in out
    assert "pass --app" not in out
    assert "fetch" in out


# -- the general rule ---------------------------------------------------------------------------


def test_perdure_errors_print_code_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["runs", "show", "r1", "--dir", str(workdir / "none")], capsys)
    _refused(code, err, "STORAGE_ERROR", "no perdure store")
