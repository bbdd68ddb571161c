"""GIVEN step columns kept in a spill file WHEN a long run is appended THEN every row reads
back exactly, arrays handed out earlier stay valid, and the resident memory of old rows is
given back to the OS; a folder in memory or one that cannot be written is refused, with the
reason, and the caller keeps its arrays in RAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from octa_tui.protocol.columns import RELEASE_EVERY, StepColumns
from octa_tui.protocol.messages import ModelSummary, Schema, StepChunk
from octa_tui.protocol.run import RunHistory
from octa_tui.protocol.spill import IN_PLACE_FILESYSTEMS, SpillDir, filesystem_type, spill_dir

RUN = "00000000000000ab"


def _resident_bytes(array: np.ndarray) -> int:
    """Bytes of the mapping that holds ``array`` resident in this process (/proc/self/smaps)."""
    start = array.__array_interface__["data"][0]
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" not in head or ":" in head:
            continue
        lo, hi = (int(x, 16) for x in head.split("-"))
        if lo <= start < hi:
            for entry in lines[i + 1 :]:
                if entry.startswith("Rss:"):
                    return int(entry.split()[1]) * 1024
    raise AssertionError("the array's mapping was not found")


def _row(i: int, width: int) -> np.ndarray:
    return (np.arange(width, dtype=np.float32) + np.float32(i)) * np.float32(0.5)


def test_every_row_reads_back_and_old_views_stay_valid(tmp_path: Path) -> None:
    cols = StepColumns(width=6, capacity=16, spill=SpillDir(tmp_path), hot_rows=500)
    early = None
    for i in range(3000):
        cols.append(i, i * 2, i // 100, 1000.0 + i, _row(i, 6))
        if i == 99:
            early = cols.values  # a view handed out before the store grew many times
    chunk_values = np.stack([_row(i, 6) for i in range(3000, 20000)])
    n = chunk_values.shape[0]
    cols.extend(StepChunk(RUN, np.arange(3000, 20000, dtype=np.uint64), np.arange(3000, 20000) * 2,
                          np.arange(3000, 20000, dtype=np.int32) // 100, 1000.0 + np.arange(3000, 20000.0),
                          chunk_values))
    assert len(cols) == 20000 and n == 17000
    assert np.array_equal(cols.seq, np.arange(20000, dtype=np.uint64))
    assert np.array_equal(cols.step, np.arange(20000) * 2)
    assert np.array_equal(cols.time, 1000.0 + np.arange(20000.0))
    assert np.array_equal(cols.values, np.stack([_row(i, 6) for i in range(20000)]))
    assert early is not None and np.array_equal(early, np.stack([_row(i, 6) for i in range(100)]))
    assert cols.index_of_seq(12345) == 12345


def test_old_rows_leave_the_resident_set_and_still_read_back(tmp_path: Path) -> None:
    width, hot = 256, 2048
    cols = StepColumns(width=width, capacity=1 << 16, spill=SpillDir(tmp_path), hot_rows=hot)
    block = np.ones((1000, width), dtype=np.float32)
    for k in range(60):  # 60,000 rows: 61 MB of values
        a = k * 1000
        cols.extend(StepChunk(RUN, np.arange(a, a + 1000, dtype=np.uint64), np.arange(a, a + 1000),
                              np.zeros(1000, dtype=np.int32), np.zeros(1000), block * k))
    if cols.spill_failed:  # e.g. a nearly full disk: the columns went on in RAM, as they should
        pytest.skip(f"this machine's temporary folder cannot take a spill file: {cols.spill_failed}")
    resident = _resident_bytes(cols.values)
    limit = (hot + RELEASE_EVERY + 1000) * width * 4 + (1 << 16)
    assert resident <= limit, f"{resident / 2**20:.1f} MB resident, over {limit / 2**20:.1f} MB"
    # The released rows are still there, read back from the file.
    assert float(cols.values[0, 0]) == 0.0 and float(cols.values[12_345, 7]) == 12.0
    assert np.array_equal(cols.values[:, 3], np.repeat(np.arange(60, dtype=np.float32), 1000))


def test_without_spill_the_same_rows_stay_in_memory(tmp_path: Path) -> None:
    spilled = StepColumns(width=3, spill=SpillDir(tmp_path), hot_rows=10)
    kept = StepColumns(width=3)
    for i in range(10_000):
        spilled.append(i, i, 0, float(i), _row(i, 3))
        kept.append(i, i, 0, float(i), _row(i, 3))
    assert np.array_equal(spilled.values, kept.values) and np.array_equal(spilled.seq, kept.seq)
    assert kept.spill is None and spilled.spill is not None


def test_a_history_with_spill_holds_what_one_without_holds(tmp_path: Path) -> None:
    schema = Schema(run_id=RUN, task="segmentation", model=ModelSummary("UNet", 10), loss=("total",),
                    grad=("enc1", "enc2"), opt=("lr",))
    chunk = StepChunk(RUN, np.arange(5000, dtype=np.uint64), np.arange(5000), np.zeros(5000, dtype=np.int32),
                      np.arange(5000.0), np.random.default_rng(0).normal(size=(5000, schema.width)).astype(np.float32))
    spilled, kept = RunHistory(schema, spill=SpillDir(tmp_path)), RunHistory(schema)
    spilled.add(chunk)
    kept.add(chunk)
    assert np.array_equal(spilled.steps.values, kept.steps.values)


def test_a_folder_in_memory_is_refused_with_the_reason(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n")
    assert filesystem_type(tmp_path / "spill", mounts=str(mounts)) == "tmpfs"
    assert filesystem_type("/usr", mounts=str(mounts)) == "ext4"
    if filesystem_type("/dev/shm") in ("tmpfs",):
        where, why = spill_dir("/dev/shm")
        assert where is None and "tmpfs" in why and "memory" in why


def test_a_folder_that_cannot_be_written_is_refused_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    where, why = spill_dir(blocker / "spill")
    assert where is None and "cannot write" in why and str(blocker) in why


def test_the_default_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTA_TUI_SPILL_DIR", str(tmp_path / "here"))
    where, why = spill_dir()
    assert str(tmp_path / "here") in why
    if filesystem_type(tmp_path) in IN_PLACE_FILESYSTEMS:
        assert where is not None and where.path == tmp_path / "here"
    else:  # a temporary folder on tmpfs (or another file system spilling refuses): said, not used
        assert where is None and "kept in memory" in why


def test_a_full_disk_moves_the_columns_into_memory_without_losing_a_row(tmp_path: Path, monkeypatch) -> None:
    import errno

    from octa_tui.protocol import spill as spill_module

    # GIVEN file-backed columns on a disk that fills up after the first growth
    cols = StepColumns(width=4, capacity=16, spill=SpillDir(tmp_path), hot_rows=8)
    for i in range(16):
        cols.append(i, i, 0, float(i), _row(i, 4))
    real = spill_module.os.posix_fallocate

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill_module.os, "posix_fallocate", full)
    # WHEN the store must grow
    for i in range(16, 5000):
        cols.append(i, i, 0, float(i), _row(i, 4))
    monkeypatch.setattr(spill_module.os, "posix_fallocate", real)
    # THEN every row is there, the columns now live in RAM, and the reason is kept
    assert np.array_equal(cols.values, np.stack([_row(i, 4) for i in range(5000)]))
    assert np.array_equal(cols.seq, np.arange(5000, dtype=np.uint64))
    assert "No space left on device" in cols.spill_failed and "cannot grow" in cols.spill_failed


def test_a_spill_folder_that_vanished_leaves_the_columns_in_memory(tmp_path: Path) -> None:
    gone = SpillDir(tmp_path / "removed-meanwhile")
    cols = StepColumns(width=2, spill=gone)
    cols.append(0, 0, 0, 0.0, _row(0, 2))
    assert float(cols.values[0, 1]) == _row(0, 2)[1] and "cannot make a spill file" in cols.spill_failed


def test_a_grow_that_would_nearly_fill_the_disk_is_not_attempted(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from octa_tui.protocol import spill as spill_module

    # GIVEN a disk with 100 MB free of 1 TB (under the 1 GiB / 5% floor)
    nearly_full = SimpleNamespace(f_bavail=100 * 2**20 // 4096, f_frsize=4096, f_blocks=2**40 // 4096)
    where = SpillDir(tmp_path)
    cols = StepColumns(width=3, capacity=16, spill=where)
    monkeypatch.setattr(spill_module.os, "fstatvfs", lambda fd: nearly_full)
    # WHEN the store grows
    for i in range(100):
        cols.append(i, i, 0, float(i), _row(i, 3))
    # THEN it goes on in RAM with every row, says why, and the folder spills no more
    assert np.array_equal(cols.values, np.stack([_row(i, 3) for i in range(100)]))
    assert "spilling stops" in cols.spill_failed and "GiB free" in cols.spill_failed
    later = where.array(np.float32, (2,), 10)
    assert later.failed and later.release(10) == 0 and later.array.shape == (10, 2)


def test_a_copy_on_write_file_system_is_not_spilled_to(tmp_path: Path, monkeypatch) -> None:
    from octa_tui.protocol import spill as spill_module

    monkeypatch.setattr(spill_module, "filesystem_type", lambda path: "btrfs")
    where, why = spill_dir(tmp_path)
    assert where is None and "btrfs" in why and "OCTA_TUI_SPILL_DIR" in why


def test_a_spilled_store_grows_by_a_bounded_step(tmp_path: Path) -> None:
    from octa_tui.protocol.columns import SPILL_GROW_ROWS

    cols = StepColumns(width=1, capacity=16, spill=SpillDir(tmp_path))
    block = np.zeros((1000, 1), dtype=np.float32)
    for a in range(0, 3 * SPILL_GROW_ROWS, 1000):
        cols.extend(StepChunk(RUN, np.arange(a, a + 1000, dtype=np.uint64), np.arange(a, a + 1000),
                              np.zeros(1000, dtype=np.int32), np.zeros(1000), block))
    assert len(cols) <= cols.capacity <= len(cols) + SPILL_GROW_ROWS
