"""The demo behind ``perdure demo`` (and ``make demo``), plus the run driver.

In well under a minute it shows the product, section by section, each with its
claims checked against the store:

1. throughput: thousands of short agent, workflow and job runs with many in flight
   (flushed runs/s; :func:`drive` is shared with ``bench/throughput.py``);
2. waits and signals: agents wait on two client-side tool calls at once and then on
   a human approval; the demo plays the client and resumes them with ``ToolResult``
   and ``ApprovalDecision`` signals, approving most refunds and rejecting some;
3. run trees: orders start shipments that start packing jobs (``ctx.start_child``,
   ``handle.result()``), and one whole tree is cancelled from its root;
4. durable timers (``ctx.sleep``);
5. crash recovery: a worker process is killed with SIGKILL mid-run, the directory is
   reopened, every run completes, and a witness file proves no step ran again after
   it was acknowledged;
6. the AG-UI log of one agent run, verified.

It ends with a summary of the store, the checks, and ``perdure runs ...`` commands
that work as printed on the directory it leaves behind. An existing store there is
wiped only with ``--force`` (``make demo`` passes it) and added to with ``--keep``.
"""

from ._definitions import TREE_SIZE, demo_job, register_demo
from ._directory import DirectoryNotEmpty, perdure_command, prepare_directory, wipe_store_dir
from ._drive import DriveResult, Job, drive
from ._main import DEFAULT_DIR, run_demo
from ._sections import DEFAULT_CONCURRENCY, DEFAULT_RUNS, Sizes

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DIR",
    "DEFAULT_RUNS",
    "TREE_SIZE",
    "DirectoryNotEmpty",
    "DriveResult",
    "Job",
    "Sizes",
    "demo_job",
    "drive",
    "perdure_command",
    "prepare_directory",
    "register_demo",
    "run_demo",
    "wipe_store_dir",
]
