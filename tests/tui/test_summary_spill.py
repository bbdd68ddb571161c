"""GIVEN a monitor's history whose steps spill to a file WHEN the charts' summaries (block
min/max, gradient group norms) are built as rows arrive THEN they equal those of a history
held in memory, and their old rows leave the resident set like the steps do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seeded import seeded_chunk, seeded_schema

from octa_tui.protocol.columns import HOT_ROWS, RELEASE_EVERY
from octa_tui.protocol.messages import StepChunk
from octa_tui.protocol.run import RunHistory
from octa_tui.protocol.spill import SpillDir
from octa_tui.tui.view import HistorySummary, layer_groups


def _resident_bytes(array: np.ndarray) -> int:
    start = array.__array_interface__["data"][0]
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= start < hi:
                return next(int(e.split()[1]) * 1024 for e in lines[i + 1 :] if e.startswith("Rss:"))
    raise AssertionError("the array's mapping was not found")


def _part(chunk: StepChunk, a: int, b: int) -> StepChunk:
    return StepChunk(chunk.run_id, chunk.seq[a:b], chunk.step[a:b], chunk.epoch[a:b], chunk.time[a:b],
                     chunk.values[a:b])


def test_spilled_summaries_equal_those_in_memory_and_stay_small(tmp_path: Path) -> None:
    schema = seeded_schema(steps_per_epoch=1000, epochs=1000)
    rows = 120_000
    chunk = seeded_chunk(schema, rows, seed=3)
    chunk.values[77_777, schema.index("loss/total")] = 1e6  # a spike far back in the spilled part
    spilled, kept = RunHistory(schema, spill=SpillDir(tmp_path)), RunHistory(schema)
    on_disk, in_memory = HistorySummary(), HistorySummary()
    groups = layer_groups(schema.grad, 6)
    # WHEN both follow the same stream, summaries updated every 3,000 rows (a chart frame)
    for a in range(0, rows, 3000):
        part = _part(chunk, a, a + 3000)
        spilled.add(part)
        kept.add(part)
        n = a + 3000
        for history, summary in ((spilled, on_disk), (kept, in_memory)):
            summary.column(history, "loss/total", 0, n)
            summary.group_columns(history, groups, 0, n)
    # THEN every window's envelope is the same, the old spike included (40 columns: the whole
    # run is drawn from the second level, 1,024-row blocks)
    for start in (0, 20_000, rows - 1000):
        a = on_disk.column(spilled, "loss/total", start, rows).envelope(40)
        b = in_memory.column(kept, "loss/total", start, rows).envelope(40)
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi) and np.array_equal(a.first, b.first)
        for ga, gb in zip(on_disk.group_columns(spilled, groups, start, rows),
                          in_memory.group_columns(kept, groups, start, rows)):
            ea, eb = ga.envelope(40), gb.envelope(40)
            assert np.array_equal(ea.lo, eb.lo) and np.array_equal(ea.hi, eb.hi)
    assert on_disk.column(spilled, "loss/total", 0, rows).envelope(40).hi.max() == 1e6
    # AND the norms and the finest block level (not read for such a long window) keep only
    # their newest rows resident
    if spilled.steps.spill_failed:  # e.g. a nearly full disk: everything went on in RAM, as it should
        pytest.skip(f"this machine's temporary folder cannot take a spill file: {spilled.steps.spill_failed}")
    norms = on_disk.group_norms.norms(spilled, groups, rows)
    row_bytes = norms.shape[1] * 8
    assert _resident_bytes(norms) <= (HOT_ROWS + RELEASE_EVERY + 3000) * row_bytes + (1 << 16)
    fine = on_disk.steps._levels[0]
    newest_blocks = (HOT_ROWS + RELEASE_EVERY + 3000) // fine.block_rows + 1
    assert fine._spilled and fine.blocks == rows // fine.block_rows
    assert _resident_bytes(fine.lo) <= newest_blocks * fine.lo.shape[1] * 4 + (1 << 13)
