"""A monitor process for the fault tests: follows a trainer and prints what it holds.

Usage: python remote_follower_main.py TELEMETRY CONTROL. One JSON line per poll: rows held,
newest seq, whether seqs are exactly 0..n-1 (no gap, no duplicate), gaps filled, state.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from octa_tui.protocol.follow import RunFollower


def main(telemetry: str, control: str) -> None:
    with RunFollower(telemetry, control, timeout_s=60.0) as follower:
        follower.connect()
        while True:
            update = follower.poll(timeout_s=0.1)
            seq = follower.history.steps.seq
            report = {
                "rows": int(len(seq)),
                "last_seq": int(seq[-1]) if len(seq) else -1,
                "contiguous": bool(np.array_equal(seq, np.arange(len(seq), dtype=seq.dtype))),
                "gaps_filled": follower.gaps_filled,
                "gaps_unfilled": follower.gaps_unfilled,
                "state": update.state,
                "trainer_last_seq": update.trainer.last_seq if update.trainer else -1,
                "monitors": update.trainer.monitors if update.trainer else 0,
                "run_id": follower.history.run_id,
                "new_run": update.new_run,
            }
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
