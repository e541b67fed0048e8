"""The process ``bench/vs_peers.py`` kills to measure recovery.

    python bench/_recovery_child.py perdure DIR N
    python bench/_recovery_child.py dbos DIR N [default|wal]

Starts N runs of the bench's 3-step workflow whose step 2 never returns, waits until
every one of them is inside step 2 (so step 1 of each is durably recorded), prints one
line ``ready {json}`` on stdout and hangs. The parent then SIGKILLs it and times a fresh
process opening the same directory until all N runs have completed.
"""

from __future__ import annotations

import os
import sys

from _peer_common import BLOCK_ENV


def main() -> None:
    system, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = sys.argv[4] if len(sys.argv) > 4 else "default"
    os.environ[BLOCK_ENV] = "1"
    if system == "perdure":
        import _peer_perdure
        import trio

        trio.run(_peer_perdure.crash_child, path, n)
    elif system == "dbos":
        import _peer_dbos

        _peer_dbos.crash_child(path, config, n)
    else:
        raise SystemExit(f"no recovery child for {system!r}")


if __name__ == "__main__":
    main()
