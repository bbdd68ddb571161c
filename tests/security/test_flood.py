"""A control flood of any kind costs training a bounded share, and a client that never reads costs bounded memory.

A trainer process (a link holding a 100k-step history, a loop of fixed work per step)
is measured quiet, then under each attacker process: a ping flood, ``history`` asked
again and again by a DEALER that never reads, undecodable frames, connections without
keys over and over, and all at once.
"""

from __future__ import annotations

import pytest
from flood_main import measure

pytestmark = pytest.mark.slow


def test_floods_cost_a_bounded_share_and_a_non_reader_bounded_memory():
    rows = {row["phase"]: row for row in measure(history_steps=100_000, seconds=3.0)}
    start = rows.pop("start")["rss_mb"]
    for name, row in rows.items():
        # THEN serving monitors took at most the budget (3% of the time) on the training thread, plus slack
        assert row["service_share"] < 0.05, (name, row)
        # AND the process's other threads (ZeroMQ I/O, refusals) stayed small too
        assert row["other_cpu_share"] < 0.25, (name, row)
        # AND memory stayed flat: the non-reading client holds a bounded queue, not 100 copies of
        # the history (17 MB each); nothing grows after the attackers left
        assert row["peak_rss_mb"] - start < 80, (name, row)
    # AND the connections without keys were refused (and counted)
    assert rows["connect"]["refused"] > 0
    # AND the training loop kept going under every attack
    assert all(row["steps_per_s"] > 0 for row in rows.values())
