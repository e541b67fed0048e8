"""What the pydantic-ai integration journals and logs, piece by piece.

- model responses round-trip through the journal's plain data exactly (bytes too);
- every tool outcome (return, ToolReturn, retry, failure, deferrals) replays as itself;
- streamed and whole responses give the same AG-UI events, valid and closed;
- tool call ids that perdure cannot use as wait keys get a stable digest;
- asyncio functions imported before trio-asyncio are rebound (import order).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import msgspec
import pytest
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry, ToolFailed
from pydantic_ai.messages import (
    BinaryContent,
    FilePart,
    ImageUrl,
    ModelResponse,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
    ToolReturn,
)
from pydantic_ai.usage import RequestUsage

from perdure.agui import (
    RunFinishedEvent,
    RunStartedEvent,
    event_to_json,
    verify_events,
)
from perdure.integrations.pydantic_ai._capability import wait_key
from perdure.integrations.pydantic_ai._codec import (
    dump_response,
    load_response,
    outcome_of,
    replay_outcome,
    tool_result_text,
)
from perdure.integrations.pydantic_ai._events import ResponseEvents


def plain_json(data: Any) -> bool:
    """Only JSON's types, all the way down (what msgpack and JSON store alike)."""
    if isinstance(data, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in data.items())
    if isinstance(data, list):
        return all(plain_json(v) for v in data)
    return data is None or isinstance(data, str | int | float | bool)


def test_model_response_round_trips_through_plain_data() -> None:
    response = ModelResponse(
        parts=[
            ThinkingPart("hmm", signature="sig=="),
            TextPart("Here is the chart."),
            ToolCallPart("plot", {"xs": [1, 2.5], "title": "é"}, tool_call_id="c1"),
            ToolCallPart("raw", '{"a": 1}', tool_call_id="c2"),
            FilePart(BinaryContent(b"\x89PNG\x00\xff\xfe", media_type="image/png")),
        ],
        usage=RequestUsage(input_tokens=12, output_tokens=7),
        model_name="gpt-x",
        provider_name="acme",
        finish_reason="stop",
    )
    data = dump_response(response)
    assert plain_json(data)
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(data))  # what ctx.step keeps
    back = load_response(stored)
    # pydantic-ai narrows an image's BinaryContent to BinaryImage when it loads one;
    # everything else comes back equal, and the bytes exactly.
    assert back.parts[:-1] == response.parts[:-1]
    assert (back.usage, back.model_name, back.provider_name, back.finish_reason) == (
        response.usage,
        response.model_name,
        response.provider_name,
        response.finish_reason,
    )
    file_part = back.parts[-1]
    assert isinstance(file_part, FilePart) and file_part.content.data == b"\x89PNG\x00\xff\xfe"
    assert dump_response(back) == data


async def _raising(exc: BaseException) -> Any:
    raise exc


async def _returning(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    "value",
    [
        "text",
        42,
        {"nested": [1, None, {"a": "b"}]},
        None,
        BinaryContent(b"\x00\x01\xff", media_type="application/octet-stream"),
        [ImageUrl("https://example.com/a.png"), "caption"],
        ToolReturn(return_value={"ok": True}, content=["see this"], metadata={"m": 1}),
    ],
    ids=["str", "int", "dict", "none", "binary", "image-list", "tool-return"],
)
async def test_tool_return_values_replay_as_themselves(value: Any) -> None:
    outcome = await outcome_of(_returning(value))
    assert plain_json(outcome)
    assert replay_outcome(msgspec.msgpack.decode(msgspec.msgpack.encode(outcome))) == value


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ModelRetry("try upper case"), "try upper case"),
        (ToolFailed("service down"), "service down"),
        (ApprovalRequired(metadata={"prompt": "ok?"}), None),
        (CallDeferred(metadata={"queue": "q"}, kind="question"), None),
    ],
    ids=["retry", "failed", "approval", "question"],
)
async def test_tool_control_flow_replays_as_the_same_exception(
    exc: Exception, text: str | None
) -> None:
    outcome = await outcome_of(_raising(exc))
    assert plain_json(outcome)
    assert tool_result_text(outcome) == text
    with pytest.raises(type(exc)) as raised:
        replay_outcome(outcome)
    again = raised.value
    for field in ("message", "metadata", "kind"):
        assert getattr(again, field, None) == getattr(exc, field, None)


async def test_other_tool_exceptions_are_not_outcomes() -> None:
    """They fail the step instead (and so the run, or the step's retry policy retries)."""
    with pytest.raises(KeyError):
        await outcome_of(_raising(KeyError("x")))


def _valid(events: list[Any]) -> list[dict[str, Any]]:
    """Wrap events in a run and check them with the AG-UI verifier port."""
    import json

    wire = [
        json.loads(event_to_json(e))
        for e in [
            RunStartedEvent(thread_id="t", run_id="r"),
            *events,
            RunFinishedEvent(thread_id="t", run_id="r"),
        ]
    ]
    verify_events(wire)
    return wire[1:-1]


def _stream_of(response: ModelResponse) -> list[Any]:
    """pydantic-ai stream events producing ``response``, in small deltas, args as a dict."""
    events: list[Any] = []
    for index, part in enumerate(response.parts):
        if isinstance(part, TextPart):
            events.append(PartStartEvent(index=index, part=TextPart(part.content[:3])))
            events += [
                PartDeltaEvent(index=index, delta=TextPartDelta(part.content[i : i + 3]))
                for i in range(3, len(part.content), 3)
            ]
        elif isinstance(part, ThinkingPart):
            events.append(PartStartEvent(index=index, part=ThinkingPart("")))
            events.append(
                PartDeltaEvent(index=index, delta=ThinkingPartDelta(content_delta=part.content))
            )
        elif isinstance(part, ToolCallPart):
            events.append(
                PartStartEvent(
                    index=index,
                    part=ToolCallPart(part.tool_name, None, tool_call_id=part.tool_call_id),
                )
            )
            # A dict delta cannot be streamed as text: it is sent when the part ends.
            events.append(
                PartDeltaEvent(index=index, delta=ToolCallPartDelta(args_delta=part.args))
            )
        events.append(PartEndEvent(index=index, part=part))
    return events


RESPONSE = ModelResponse(
    parts=[
        ThinkingPart("Check the order first."),
        TextPart("Looking up your order now."),
        ToolCallPart("lookup", {"order": "A1"}, tool_call_id="call_1"),
        TextPart("One moment."),
    ]
)


def test_streamed_and_whole_responses_log_the_same_content() -> None:
    whole = _valid(ResponseEvents("m1").whole(RESPONSE))
    events = ResponseEvents("m1")
    streamed = _valid(
        [out for event in _stream_of(RESPONSE) for out in events.on_event(event)]
        + events.finish(RESPONSE)
    )

    def content(wire: list[dict[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in wire:
            if "delta" in e:
                key = f"{e['type'].split('_')[0]}:{e.get('messageId') or e.get('toolCallId')}"
                out[key] = out.get(key, "") + e["delta"]
        return out

    assert (
        content(streamed)
        == content(whole)
        == {
            "REASONING:m1-reasoning-0": "Check the order first.",
            "TEXT:m1": "Looking up your order now.",
            "TOOL:call_1": '{"order":"A1"}',
            "TEXT:m1-3": "One moment.",
        }
    )
    starts = [e for e in whole if e["type"] == "TOOL_CALL_START"]
    assert starts == [
        {
            "type": "TOOL_CALL_START",
            "toolCallId": "call_1",
            "toolCallName": "lookup",
            "parentMessageId": "m1",
        }
    ]
    assert len([e for e in streamed if e["type"] == "TEXT_MESSAGE_CONTENT"]) > 2


def test_a_stream_cut_short_is_closed_from_the_final_response() -> None:
    events = ResponseEvents("m1")
    out = events.on_event(PartStartEvent(index=0, part=TextPart("Hel")))
    out += events.on_event(
        PartStartEvent(index=1, part=ToolCallPart("f", '{"a":', tool_call_id="c"))
    )
    final = ModelResponse(
        parts=[TextPart("Hello"), ToolCallPart("f", '{"a": 1}', tool_call_id="c")]
    )
    out += events.finish(final)
    wire = _valid(out)
    assert [e["type"] for e in wire] == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
    ]
    assert "".join(e["delta"] for e in wire if e["type"] == "TOOL_CALL_ARGS") == '{"a": 1}'


def test_wait_keys_are_tool_call_ids_when_perdure_accepts_them() -> None:
    assert wait_key("call_abc123") == "call_abc123"
    odd = wait_key("call#1")
    long = wait_key("x" * 300)
    assert odd.startswith("call_") and "#" not in odd and odd == wait_key("call#1")
    assert len(long) <= 256 and long != odd


def test_asyncio_functions_imported_before_trio_asyncio_are_rebound() -> None:
    """anyio's asyncio backend imported first keeps asyncio's own get_running_loop,
    which finds no loop under trio-asyncio; importing the integration rebinds it, and
    an agent that uses anyio task groups runs."""
    program = textwrap.dedent(
        """
        import asyncio
        import _asyncio
        import anyio._backends._asyncio as backend  # before trio-asyncio, on purpose
        assert backend.get_running_loop is _asyncio.get_running_loop
        import trio, trio_asyncio  # noqa: E401
        assert backend.get_running_loop is _asyncio.get_running_loop  # trio-asyncio leaves it
        import perdure.integrations.pydantic_ai  # noqa: F401
        assert backend.get_running_loop is asyncio.get_running_loop
        assert backend.get_running_loop is not _asyncio.get_running_loop
        from pydantic_ai import Agent
        from pydantic_ai.models.test import TestModel
        agent = Agent(TestModel())

        @agent.tool_plain
        async def add(a: int, b: int) -> int:
            return a + b

        async def main():
            async with trio_asyncio.open_loop():
                return await trio_asyncio.aio_as_trio(agent.run)("hi")

        print(trio.run(main).output)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '{"add":0}' in proc.stdout
