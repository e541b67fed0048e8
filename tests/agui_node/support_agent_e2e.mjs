#!/usr/bin/env node
// Drives the pydantic-ai support agent of examples/pydantic_ai_agent.py, served by
// `perdure serve`, with the official @ag-ui/client HttpAgent (test helper).
//
//   node support_agent_e2e.mjs BASE_URL
//
// 1. A user message: the model streams text, calls lookup_order (its result streams
//    back), then calls refund, which needs approval: the run ends in an interrupt.
// 2. The client resumes it (approve, as "ann"): the refund runs, the model answers.
// 3. A second user message on the same thread, sent with the client's message history
//    (the first run's MESSAGES_SNAPSHOT): the model answers from that history.
// 4. Another thread: the refund is denied with a comment the model is told.
// 5. Another thread: a long answer cancelled with POST /runs/{id}/cancel mid-stream.
// 6. Another thread: the client aborts its request mid-stream; the run goes on (runs
//    are durable) until it is cancelled over HTTP.
// Every stream goes through the client's own pipeline, which verifies it as it goes
// (verifyEvents): a stream the verifier rejects makes runAgent fail. Prints one JSON
// object with what the client saw; exits 1 on an unexpected failure.

import { HttpAgent } from "@ag-ui/client";

const base = process.argv[2];
if (!base) {
  process.stderr.write("usage: node support_agent_e2e.mjs BASE_URL\n");
  process.exit(2);
}
const url = `${base}/agents/support`;

async function run(agent, params, extra = {}) {
  const events = [];
  const subscriber = {
    onEvent: ({ event }) => {
      events.push(event);
    },
    ...extra,
  };
  const seen = () => ({ types: events.map((e) => e.type), events });
  try {
    const out = await agent.runAgent(params, subscriber);
    return {
      ok: true,
      ...seen(),
      result: out.result ?? null,
      newMessages: out.newMessages,
      // Copies: the agent keeps changing its own lists on the next turn.
      pendingInterrupts: structuredClone(agent.pendingInterrupts),
      messages: structuredClone(agent.messages),
    };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err), ...seen() };
  }
}

async function http(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

function thread(threadId, text) {
  return new HttpAgent({
    url,
    threadId,
    initialMessages: [{ id: `${threadId}-u1`, role: "user", content: text }],
  });
}

const approveAs = (interrupt, payload) => [
  { interruptId: interrupt.id, status: "resolved", payload, metadata: { approver: "ann" } },
];

const report = {};

// 1-2. Lookup, refund interrupt, approval, answer.
const support = thread("t-support", "My kettle, order A-1001, arrived broken.");
report.ask = await run(support, { runId: "support-1" });
const refund = support.pendingInterrupts[0] ?? null;
report.refundInterrupt = refund;
report.approve = await run(support, {
  runId: "support-2",
  resume: approveAs(refund, { approved: true }),
});

// 3. The next turn of the same conversation.
support.addMessage({ id: "t-support-u2", role: "user", content: "Thanks! When do I get my money?" });
report.followUp = await run(support, { runId: "support-3" });

// 4. A denied refund: the model is told the approver's comment.
const denied = thread("t-deny", "Please refund my toaster, order B-2002.");
report.denyAsk = await run(denied, { runId: "deny-1" });
const denial = denied.pendingInterrupts[0] ?? null;
report.denyInterrupt = denial;
report.deny = await run(denied, {
  runId: "deny-2",
  resume: approveAs(denial, { approved: false, comment: "B-2002 is past the 30-day window." }),
});

// 5. Cancelled over HTTP while the model streams its answer.
const policy = thread("t-cancel", "What is your refund policy?");
let cancelled = null;
let contents = 0;
report.cancel = await run(
  policy,
  { runId: "cancel-1" },
  {
    onTextMessageContentEvent: () => {
      contents += 1;
      if (contents === 3 && cancelled === null) {
        cancelled = http("POST", "/runs/cancel-1/cancel", { reason: "user pressed stop" });
      }
    },
  },
);
report.cancelAnswer = cancelled === null ? null : (await cancelled).body;

// 6. The client's abort only drops its connection; the durable run goes on.
const aborted = thread("t-abort", "What is your refund policy, again?");
let aborts = 0;
report.abort = await run(
  aborted,
  { runId: "abort-1" },
  {
    onTextMessageContentEvent: () => {
      aborts += 1;
      if (aborts === 3) aborted.abortRun();
    },
  },
);
report.afterAbort = (await http("GET", "/runs/abort-1")).body.status;
report.abortCancel = (await http("POST", "/runs/abort-1/cancel", { reason: "client gave up" })).body;
report.abortFinal = (await http("GET", "/runs/abort-1/wait?timeout=10")).body.status;

process.stdout.write(JSON.stringify(report) + "\n");
