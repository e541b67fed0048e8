"""Run logs through the official AG-UI verifier (``@ag-ui/client`` under node).

Modules opt in with ``pytestmark = pytest.mark.usefixtures("official_agui_check")``:
every log a test leaves in its ``tmp_path`` stores is collected, and once per module
all of them go to ``tests/agui_node/verify.mjs`` in one node process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from perdure.agui import decode_event, event_to_json
from perdure.storage import Store

NODE_DIR = Path(__file__).resolve().parent.parent / "agui_node"

Log = list[dict[str, Any]]


def closed(wire: Log) -> bool:
    """Whether the log's last run-level event ends the run (not a RUN_STARTED)."""
    last = [e["type"] for e in wire if e["type"] in ("RUN_STARTED", "RUN_FINISHED", "RUN_ERROR")]
    return bool(last) and last[-1] != "RUN_STARTED"


def store_logs(root: Path) -> list[tuple[str, Log]]:
    """``(run_id, wire log)`` of every run in every store under ``root``."""
    out: list[tuple[str, Log]] = []
    for mdb in sorted(root.rglob("data.mdb")):
        store = Store(mdb.parent, readonly=True)
        try:
            for rec in store.iter_runs():
                wire = [
                    json.loads(event_to_json(decode_event(raw))) for _, raw in store.events(rec.id)
                ]
                if wire:
                    out.append((rec.id, wire))
        finally:
            store.close()
    return out


def node_verify(logs: list[Log], complete: bool = True) -> list[dict[str, Any]] | None:
    """The official verifier's verdict per log (``None`` if node or the package is missing).

    ``make test`` sets ``PERDURE_REQUIRE_NODE`` wherever npm exists: then a missing
    verifier is a failure, not a silent pass; elsewhere it is a warning.
    """
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        if os.environ.get("PERDURE_REQUIRE_NODE"):
            pytest.fail("PERDURE_REQUIRE_NODE is set but node or tests/agui_node is missing")
        warnings.warn(
            "the official AG-UI verifier (node) is missing: logs not checked by it",
            stacklevel=2,
        )
        return None
    return run_verify_mjs(node, logs, "--schema", *(["--complete"] if complete else []))


def run_verify_mjs(node: str, logs: list[Log], *flags: str) -> list[dict[str, Any]]:
    """One verdict per log from ``verify.mjs`` (``flags``: ``--schema``, ``--complete``)."""
    proc = subprocess.run(
        [node, str(NODE_DIR / "verify.mjs"), "--json", "--jsonl", "-", *flags],
        input="\n".join(json.dumps(wire) for wire in logs),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(logs), proc.stderr
    return results


def assert_official_verifier_accepts(logs: list[tuple[str, Log]]) -> None:
    """Ended logs must be complete streams; the others valid prefixes."""
    for complete in (True, False):
        batch = [(name, wire) for name, wire in logs if closed(wire) == complete]
        if not batch:
            continue
        results = node_verify([wire for _, wire in batch], complete)
        if results is None:
            return
        bad = [(name, r) for (name, _), r in zip(batch, results, strict=True) if not r["ok"]]
        assert not bad, f"the official AG-UI verifier rejects: {bad[:5]}"
