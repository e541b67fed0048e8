#!/usr/bin/env node
// Runs the official AG-UI verifier (`verifyEvents` from @ag-ui/client) over run logs.
//
//   node verify.mjs [options] < events.json      one log: a JSON array of wire events
//   node verify.mjs [options] --jsonl logs.jsonl  several logs: one JSON array per line
//                                                 ("-" reads the JSON lines from stdin)
// Options:
//   --complete  also require a finished stream: a run was started and the last run
//               ended with RUN_FINISHED or RUN_ERROR. (@ag-ui/client 1.0.0's operator
//               does not check this; later upstream releases do. Mirrors
//               perdure.agui.verify_prefixes.)
//   --schema    also parse every event with @ag-ui/core's zod EventSchemas.
//   --schema-only  only the zod schema check, no sequence verification.
//   --json      print one JSON result per log: {"ok": true} or
//               {"ok": false, "error": "...", "index": N, "stage": "verify"|"schema"|"complete"}
//
// Prints "ok" (or the error) per log and exits 1 if any log was rejected, 2 on bad input.

import { readFileSync } from "node:fs";
import { from } from "rxjs";
import { verifyEvents } from "@ag-ui/client";
import { EventSchemas } from "@ag-ui/core/schemas";

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const jsonlIndex = args.indexOf("--jsonl");

function checkSchema(events) {
  for (let i = 0; i < events.length; i++) {
    const parsed = EventSchemas.safeParse(events[i]);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .map((issue) => `${issue.path.join(".") || "(event)"}: ${issue.message}`)
        .join("; ");
      return { ok: false, stage: "schema", index: i, error: issues };
    }
  }
  return null;
}

function checkComplete(events) {
  if (events.length === 0) {
    return { ok: false, stage: "complete", index: null,
      error: "The stream ended without emitting 'RUN_STARTED'." };
  }
  let open = false;
  for (const event of events) {
    if (event.type === "RUN_STARTED") open = true;
    else if (event.type === "RUN_FINISHED" || event.type === "RUN_ERROR") open = false;
  }
  if (open) {
    return { ok: false, stage: "complete", index: null,
      error: "The stream ended without 'RUN_FINISHED' or 'RUN_ERROR': the run is incomplete." };
  }
  return null;
}

function verifyLog(events) {
  if (!Array.isArray(events)) {
    return { ok: false, stage: "input", index: null, error: "a log must be a JSON array of events" };
  }
  if (flag("--schema") || flag("--schema-only")) {
    const failure = checkSchema(events);
    if (failure) return failure;
    if (flag("--schema-only")) return { ok: true };
  }
  let accepted = 0;
  let result = null;
  // from() over an array is synchronous, so the subscription has settled on return.
  from(events)
    .pipe(verifyEvents())
    .subscribe({
      next: () => {
        accepted += 1;
      },
      error: (err) => {
        result = {
          ok: false,
          stage: "verify",
          index: accepted,
          name: err instanceof Error ? err.name : typeof err,
          error: err instanceof Error ? err.message : String(err),
        };
      },
      complete: () => {
        result = { ok: true };
      },
    });
  if (result === null) {
    return { ok: false, stage: "verify", index: accepted, error: "verifier did not settle" };
  }
  if (result.ok && flag("--complete")) {
    return checkComplete(events) ?? result;
  }
  return result;
}

function report(result) {
  if (flag("--json")) {
    process.stdout.write(JSON.stringify(result) + "\n");
  } else if (result.ok) {
    process.stdout.write("ok\n");
  } else {
    const where = result.index === null ? "" : ` (event #${result.index})`;
    process.stdout.write(`error [${result.stage}]${where}: ${result.error}\n`);
  }
}

let logs;
try {
  if (jsonlIndex >= 0) {
    const path = args[jsonlIndex + 1];
    const text = readFileSync(!path || path === "-" ? 0 : path, "utf8");
    logs = text
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => JSON.parse(line));
  } else {
    logs = [JSON.parse(readFileSync(0, "utf8"))];
  }
} catch (err) {
  process.stderr.write(`verify.mjs: cannot read input: ${err.message}\n`);
  process.exit(2);
}

let failed = false;
for (const events of logs) {
  const result = verifyLog(events);
  if (!result.ok) failed = true;
  report(result);
}
// Not process.exit(): on a pipe, stdout writes still queued would be lost.
process.exitCode = failed ? 1 : 0;
