"""A workflow with durable steps, a human approval, and a child job.

python examples/approval_workflow.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import tempfile

import trio

import perdure

rt = perdure.Runtime(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/data")


@rt.task("send-welcome")
async def send_welcome(ctx: perdure.RunContext, config: dict[str, str]) -> dict[str, str]:
    return {"sent_to": config["email"]}


@rt.workflow("onboard")
async def onboard(ctx: perdure.RunContext, inp: dict[str, str]) -> dict[str, object]:
    account = await ctx.step("create-account", lambda: {"id": "acct-" + inp["user"]})
    decision = await ctx.wait_for_approval(
        "welcome", prompt=f"Send a welcome mail to {inp['email']}?", approvers=["ann", "bob"]
    )
    if not decision.approved:
        return {"account": account, "welcomed": False}
    child = await ctx.start_child("task:send-welcome", {"email": inp["email"]})
    return {"account": account, "welcomed": True, "mail": await child.result()}


async def main() -> dict[str, object]:
    async with rt:
        started = await rt.start(
            "workflow:onboard",
            {"user": "u42", "email": "u42@example.com"},
            owner=perdure.Project("p1"),
            idempotency_key="signup-42",
        )
        while rt.get(started.run.id).status != "waiting":
            await trio.sleep(0.01)
        print("waiting on:", [w.key for w in rt.get(started.run.id).waiting.waits])  # type: ignore[union-attr]
        await rt.resume(
            started.run.id, perdure.ApprovalDecision(key="welcome", approved=True, approver="ann")
        )
        done = await rt.wait(started.run.id)
        tree = rt.list(root_id=started.run.id).runs
        print(done.status, done.completion.result if done.completion else None)
        print("tree:", [(r.target, r.status) for r in tree])
        assert done.completion is not None
        result: dict[str, object] = done.completion.result
        return result


if __name__ == "__main__":
    assert trio.run(main)["welcomed"] is True
