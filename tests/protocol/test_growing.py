"""GIVEN the one growing array and the record of what a derived store covers WHEN rows are
appended (in RAM or spilled) and histories are replaced THEN the rows are kept exactly, views
handed out earlier stay valid, growth is bounded when spilled, and a store starts over for a
new history object, other columns, or fewer rows, never for the same history growing."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from octa_tui.protocol.growing import Derived, GrowingArray
from octa_tui.protocol.spill import spill_dir


@pytest.mark.parametrize("spilled", [False, True], ids=["RAM", "spilled"])
def test_rows_are_kept_across_grows_and_old_views_stay_valid(tmp_path, spilled):
    spill = spill_dir(tmp_path)[0] if spilled else None
    if spilled and spill is None:
        pytest.skip("this machine's temporary folder cannot take a spill file")
    array = GrowingArray(np.float32, (3,), 4, spill=spill, spill_step=8)
    rows = np.arange(300, dtype=np.float32).reshape(100, 3)
    array.extend(rows[:2])
    early = array.values
    for row in rows[2:50]:
        array.append(row)
    array.extend(rows[50:])
    np.testing.assert_array_equal(array.values, rows)
    np.testing.assert_array_equal(early, rows[:2])
    assert array.capacity >= 100
    if spilled:
        assert array.spilled and array.capacity <= 100 + 8  # grown by at most the step, not doubled
        array.release(90)
        np.testing.assert_array_equal(array.values, rows)  # released rows read back from the file
    else:
        assert array.capacity in (128,)  # doubled from 4


def test_a_derived_store_starts_over_for_a_new_history_other_columns_or_fewer_rows():
    class History:
        class schema:
            run_id = "run-a"

    derived = Derived()
    a = History()
    assert derived.start(a, 10, key=(1, 2)) == 0
    first = derived.generation
    derived.done(10)
    assert derived.start(a, 15, key=(1, 2)) == 10 and derived.generation == first  # only the new rows
    derived.done(15)
    assert derived.start(a, 15, key=(1, 3)) == 0 and derived.generation != first  # other columns
    derived.done(15)
    assert derived.start(a, 5, key=(1, 3)) == 0  # fewer rows: a history that was rebuilt
    derived.done(5)
    b = History()
    assert derived.start(b, 5, key=(1, 3)) == 0 and derived.token[0] == "run-a"
    derived.done(5)
    # a history object freed and another made (which may reuse its memory address) is new
    del a, b
    gc.collect()
    c = History()
    assert derived.start(c, 5, key=(1, 3)) == 0
