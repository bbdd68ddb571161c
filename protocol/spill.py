"""Growable arrays kept in a file the OS pages in and out, so a monitor that follows a run
for days keeps a flat resident memory.

A live monitor keeps every step at full resolution: any window can be zoomed into, and a
chart's min/max per column covers every row. Held in RAM that costs ``4 x channels + 28``
bytes a step, forever (152 channels at 1,000 steps/s: 38 MB a minute). With a
:class:`SpillDir`, each growable column is instead a shared mapping of an unlinked file:

- rows are written once, through the mapping (no system call per step);
- growing maps the file again at its new length; nothing is copied, and arrays handed out
  earlier stay valid (they keep their own mapping);
- :meth:`SpillArray.release` drops the pages of old rows from the process
  (``madvise(MADV_DONTNEED)``); the data stays in the file, and a reader that touches those
  rows again (a zoom, a window edge) gets them back from the page cache or the disk.

The file has no name from the moment it is created, so the operating system removes it when
the process ends, even when it is killed. Spilling needs a disk: on tmpfs or ramfs the file
would itself be memory, so :func:`spill_dir` refuses those and the caller keeps RAM arrays.

A full disk must never kill the process (a write into a mapped page the file system cannot
back is a SIGBUS): spilling is done only on file systems that write a page in place
(:data:`IN_PLACE_FILESYSTEMS`; copy-on-write ones such as btrfs or ZFS need new blocks for
every rewrite), every byte of the file is allocated with ``posix_fallocate`` before it is
mapped, and a grow that would leave the disk nearly full is not attempted. When a file cannot
grow (no space, the folder gone) the array moves itself into RAM, keeps its rows, and says
why in :attr:`SpillArray.failed`; the folder then stops spilling (:attr:`SpillDir.failed`).
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

PAGE = mmap.PAGESIZE
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "hugetlbfs"})
# File systems where a page written through a mapping goes back to the blocks it came from,
# so blocks reserved up front are all a write ever needs.
IN_PLACE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs"})
# A grow is not attempted when it would leave less free space than this (bytes, and a
# fraction of the file system): the recording and checkpoints need the disk more.
FREE_FLOOR_BYTES = 1 << 30
FREE_FLOOR_FRACTION = 0.05


class SpillDir:
    """A folder on disk where :class:`SpillArray` files are made (each unlinked at once).

    Once one of its files could not grow, :attr:`failed` says why and every array asked of
    it from then on starts in RAM (no retrying against a full disk on every redraw).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.failed = ""

    def array(self, dtype: np.dtype | type, row_shape: tuple[int, ...], rows: int) -> SpillArray:
        """A new zero-filled array of ``rows`` rows of ``row_shape``, backed by a file here
        (or in RAM once this folder has :attr:`failed`)."""
        return SpillArray(self, dtype, row_shape, rows)

    def __repr__(self) -> str:
        return f"SpillDir({str(self.path)!r})"


def default_spill_path() -> Path:
    """Where a monitor spills its columns: ``$OCTA_TUI_SPILL_DIR``, else the user's cache
    folder (``$XDG_CACHE_HOME/octa-tui``, ``~/.cache/octa-tui``)."""
    explicit = os.environ.get("OCTA_TUI_SPILL_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "octa-tui"


def filesystem_type(path: str | os.PathLike[str], mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the file system ``path`` lives on (from the mount table), or None when
    the table cannot be read."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def spill_dir(path: str | os.PathLike[str] | None = None) -> tuple[SpillDir | None, str]:
    """A usable :class:`SpillDir` at ``path`` (default :func:`default_spill_path`) and a
    line saying where; or None and the reason it cannot be used (not writable, or a
    file system in memory), in which case the caller keeps its arrays in RAM."""
    folder = Path(path).expanduser() if path is not None else default_spill_path()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return None, f"steps kept in memory: cannot write to {folder} ({err.strerror or err})"
    kind = filesystem_type(folder)
    if kind in MEMORY_FILESYSTEMS:
        return None, f"steps kept in memory: {folder} is on {kind}, which is memory too"
    if kind not in IN_PLACE_FILESYSTEMS:
        return None, (f"steps kept in memory: {folder} is on {kind or 'an unknown file system'}, where a full disk "
                      f"could stop the monitor mid-write (set OCTA_TUI_SPILL_DIR to a folder on "
                      f"{', '.join(sorted(IN_PLACE_FILESYSTEMS))})")
    return SpillDir(folder), f"older steps paged to an unnamed file in {folder}"


class SpillArray:
    """One growable array of ``(rows, *row_shape)`` in an unnamed file, mapped shared.

    :attr:`array` is the current mapping; :meth:`grow` maps a longer one (the earlier
    arrays stay valid); :meth:`release` gives the pages of leading rows back to the OS.
    """

    def __init__(self, where: SpillDir, dtype: np.dtype | type, row_shape: tuple[int, ...], rows: int) -> None:
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(d) for d in row_shape)
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64)))
        if self.row_bytes <= 0:
            raise ValueError("a spilled array needs rows of at least one byte")
        self._map: mmap.mmap | None = None
        self.rows = 0
        self.failed = ""  # why the array moved into RAM, if it did
        self.where = where
        self.array: np.ndarray = np.zeros((0, *self.row_shape), dtype=self.dtype)
        self._file = None
        if where.failed:
            self.failed = where.failed
        else:
            try:
                self._file = tempfile.TemporaryFile(dir=where.path)
            except OSError as err:
                self._fail(f"cannot make a spill file in {where.path} ({_reason(err)})")
        self.grow(rows)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        if not self.where.failed:
            self.where.failed = reason

    def grow(self, rows: int) -> np.ndarray:
        """Make room for ``rows`` rows (never shrinks) and return the new :attr:`array`.

        The rows written so far are kept. When the file cannot grow (no space left, say),
        the array continues in RAM: slower to hold, never lost."""
        rows = int(rows)
        if rows <= self.rows:
            return self.array
        if self._file is not None:
            try:
                return self._grow_file(rows)
            except (OSError, ValueError) as err:
                self._fail(f"the spill file cannot grow to {rows * self.row_bytes:,} bytes ({_reason(err)})")
                self.close()
        grown = np.zeros((rows, *self.row_shape), dtype=self.dtype)
        grown[: self.rows] = self.array[: self.rows]
        self.array, self.rows = grown, rows
        return grown

    def _grow_file(self, rows: int) -> np.ndarray:
        nbytes = rows * self.row_bytes
        fd = self._file.fileno()
        have = self.rows * self.row_bytes
        disk = os.fstatvfs(fd)
        free = disk.f_bavail * disk.f_frsize
        floor = max(FREE_FLOOR_BYTES, FREE_FLOOR_FRACTION * disk.f_blocks * disk.f_frsize)
        if free - (nbytes - have) < floor:
            raise OSError(errno.ENOSPC, f"only {free / 2**30:.1f} GiB free on its disk; spilling stops "
                                        f"{floor / 2**30:.1f} GiB before full")
        # Reserve the blocks now, so that writing through the mapping can never hit a full disk.
        if not hasattr(os, "posix_fallocate"):  # not on every system: then no spilling at all
            raise OSError(errno.ENOTSUP, "this system cannot reserve file blocks (no posix_fallocate)")
        os.posix_fallocate(fd, have, nbytes - have)  # the new bytes read as zeros
        mapped = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._map = mapped
        self.array = np.frombuffer(mapped, dtype=self.dtype).reshape((rows, *self.row_shape))
        self.rows = rows
        return self.array

    def release(self, stop_row: int) -> int:
        """Drop the resident pages of rows ``[0, stop_row)`` (whole pages only); the data
        stays in the file. Returns the bytes released."""
        if self._map is None or stop_row <= 0:
            return 0
        end = min(int(stop_row), self.rows) * self.row_bytes // PAGE * PAGE
        if end <= 0:
            return 0
        self._map.madvise(mmap.MADV_DONTNEED, 0, end)
        return end

    def close(self) -> None:
        """Forget the file (the OS frees it once no array maps it any more)."""
        self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _reason(err: BaseException) -> str:
    return (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or type(err).__name__
