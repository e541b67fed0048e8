#!/usr/bin/env node
// Drives perdure's AG-UI endpoint with the official @ag-ui/client HttpAgent (test helper).
//
//   node http_agent_e2e.mjs BASE_URL
//
// A conversation with agent "assistant": a client-side tool call (interrupt), the
// tool result as a resume, an approval (interrupt), the approval as a resume, the
// result; a retried request; a new input while an interrupt is open (refused); and a
// run of agent "slow" cancelled over HTTP while it streams. Every stream goes through
// the client's own pipeline, which includes the official verifier (verifyEvents).
// Prints one JSON object with what the client saw; exits 1 on an unexpected failure.

import { HttpAgent } from "@ag-ui/client";

const base = process.argv[2];
if (!base) {
  process.stderr.write("usage: node http_agent_e2e.mjs BASE_URL\n");
  process.exit(2);
}

function recorder() {
  const events = [];
  return {
    events,
    subscriber: {
      onEvent: ({ event }) => {
        events.push(event);
      },
    },
  };
}

async function run(agent, params, extra = {}) {
  const rec = recorder();
  const subscriber = { ...rec.subscriber, ...extra };
  try {
    const out = await agent.runAgent(params, subscriber);
    return {
      ok: true,
      types: rec.events.map((e) => e.type),
      events: rec.events,
      result: out.result ?? null,
      newMessages: out.newMessages,
      pendingInterrupts: agent.pendingInterrupts,
    };
  } catch (err) {
    return {
      ok: false,
      error: err instanceof Error ? err.message : String(err),
      types: rec.events.map((e) => e.type),
      events: rec.events,
    };
  }
}

const report = {};

// 1. A new run: text, reasoning, state and a client-side tool call, then an interrupt.
const agent = new HttpAgent({
  url: `${base}/agents/assistant`,
  threadId: "t-e2e",
  initialMessages: [{ id: "u1", role: "user", content: "weather in Paris?" }],
});
report.first = await run(agent, { runId: "r-e2e" });

// 2. The same request again (a retry): the same run's stream, no second run.
const retry = new HttpAgent({
  url: `${base}/agents/assistant`,
  threadId: "t-e2e",
  initialMessages: [{ id: "u1", role: "user", content: "weather in Paris?" }],
});
report.retry = await run(retry, { runId: "r-e2e" });

// 3. A new input on the thread while its interrupt is open: refused by the server.
const stranger = new HttpAgent({
  url: `${base}/agents/assistant`,
  threadId: "t-e2e",
  initialMessages: [{ id: "u9", role: "user", content: "something else" }],
});
report.pending = await run(stranger, { runId: "r-e2e-other" });

// 4. Resume the tool call with its result: the run goes on to an approval interrupt.
const toolInterrupt = agent.pendingInterrupts[0];
report.toolInterrupt = toolInterrupt ?? null;
report.second = await run(agent, {
  runId: "r-e2e-2",
  resume: [{ interruptId: toolInterrupt.id, status: "resolved", payload: "18C and sunny" }],
});

// 5. Approve: the run completes with its result.
const approval = agent.pendingInterrupts[0];
report.approvalInterrupt = approval ?? null;
report.third = await run(agent, {
  runId: "r-e2e-3",
  resume: [{ interruptId: approval.id, status: "resolved", payload: { approved: true } }],
});
report.messages = agent.messages;
report.state = agent.state;

// 6. A run cancelled over HTTP while it streams.
const slow = new HttpAgent({
  url: `${base}/agents/slow`,
  threadId: "t-e2e-cancel",
  initialMessages: [{ id: "u2", role: "user", content: "talk" }],
});
let cancelled = null;
let contents = 0;
report.cancel = await run(
  slow,
  { runId: "r-e2e-cancel" },
  {
    onTextMessageContentEvent: () => {
      contents += 1;
      if (contents === 3 && cancelled === null) {
        cancelled = fetch(`${base}/runs/r-e2e-cancel/cancel`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ reason: "user pressed stop" }),
        }).then((r) => r.json());
      }
    },
  },
);
report.cancelAnswer = cancelled === null ? null : await cancelled;

process.stdout.write(JSON.stringify(report) + "\n");
