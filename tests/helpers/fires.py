"""The after-test invariant of cron fires (R25): one tick, one run, and the other way round.

For every ``fires`` key (schedule, tick in ms) of a closed store: the run it names
exists, was started by that schedule (``trigger.type == "schedule"``, ``ref`` = the
schedule) for that tick (``trigger.scheduled_at`` in ms equals the key's), and no other
key names the same run. Conversely every run whose trigger is a schedule tick has
exactly that fires key, and no run id is indexed twice (a tick's run id is derived
from its key, so a tick started twice would show as one id created twice). So no tick
ever started two runs and no run lost its key.
"""

from __future__ import annotations

import os

import perdure
from perdure.storage import Store

__all__ = ["check_store_fires", "fire_problems"]


def check_store_fires(path: str | os.PathLike[str]) -> list[str]:
    """Problems with the fires of a closed data directory (empty when it is sound)."""
    try:
        store = Store(path, readonly=True)
    except perdure.StorageError as exc:
        # A test that damages a store on purpose marks itself no_log_check.
        return [f"{path}: the store does not open: {exc}"]
    try:
        return fire_problems(store, path)
    finally:
        store.close()


def fire_problems(store: Store, path: str | os.PathLike[str]) -> list[str]:
    """Problems with the fires of an open store (``path`` names it in the messages)."""
    problems: list[str] = []
    seen: dict[str, tuple[str, int]] = {}
    for schedule, at_ms, run_id in store.iter_fires():
        where = f"{path}: fire ({schedule}, {at_ms})"
        if run_id in seen:
            problems.append(f"{where}: run {run_id} is also the run of fire {seen[run_id]}")
        seen[run_id] = (schedule, at_ms)
        rec = store.get_run(run_id)
        if rec is None:
            problems.append(f"{where}: its run {run_id} does not exist")
            continue
        trigger = rec.trigger
        if trigger.type != "schedule" or trigger.ref != schedule:
            problems.append(f"{where}: run {run_id} has trigger {trigger}")
        elif trigger.scheduled_at is None or round(trigger.scheduled_at * 1000) != at_ms:
            problems.append(f"{where}: run {run_id} is for tick {trigger.scheduled_at}")
    created: set[str] = set()
    for rec in store.iter_runs():
        if rec.id in created:
            problems.append(f"{path}: run {rec.id} was created twice (two index entries)")
        created.add(rec.id)
        trigger = rec.trigger
        if trigger.type == "schedule" and trigger.scheduled_at is not None:
            key = (trigger.ref, round(trigger.scheduled_at * 1000))
            if seen.get(rec.id) != key:
                problems.append(f"{path}: run {rec.id} of tick {key} has no fires key")
    return problems
