"""Session recordings: an append-only ``*.octa`` file that replay and export read later.

File layout (all integers little-endian)::

    file header, 16 bytes
        0   8  magic  b"\\x89OCT\\r\\n\\x1a\\n"   (the high byte and CR/LF catch text-mode copies)
        8   2  u16    recording format major   (a newer major is refused)
        10  2  u16    recording format minor   (a newer minor is read)
        12  1  u8     protocol major of the records inside
        13  1  u8     protocol minor
        14  2  zero
    then records, back to back, until the end of the file; format 2 (written now):
        0   4  u32    payload length in bytes
        4   4  u32    CRC-32 (zlib) of the payload
        8   4  sync   b"\\xd1OCr", the same before every record
        12  4  u32    CRC-32 of bytes 0..12 of this header
        16  n         payload: one message as written by ``codec.pack``
                      (u32 frame count, then per frame a u32 length and its bytes)
    format 1 (read, no longer written) has an 8-byte record header: length, payload CRC.

The first record holds the run's :class:`Schema`. The others hold, in the order they
happened, step chunks, epoch summaries, events, the dataset report and previews (any
message ``codec.pack`` encodes). A step chunk's payload is, by ``codec``'s rules::

    u32 7 (frames) | u32 8, head: b"OC", protocol major, minor, kind 2, three zero bytes
    | u32 len, msgpack {"run_id", "n", "width"} | u32 8n, seq u64[n] | u32 8n, step i64[n]
    | u32 4n, epoch i32[n] | u32 8n, time f64[n] | u32 4n*width, values f32[n, width] (row-major)

so a reader can copy the columns of a chunk straight from the file.

Durability: :class:`RecordingWriter` hands buffered steps to the operating system at
least every ``flush_s`` seconds (1 s by default) and at every record, so a crashed
trainer loses at most that much. It does not ``fsync`` each second (that stalls on slow
or network disks); it ``fsync``\\ s once on :meth:`RecordingWriter.close`. A power cut can
therefore lose what the OS had not yet written back; a killed process loses nothing the
writer had already handed over. Recordings are created 0600: only their user reads them.

Damage costs only what is damaged. Each record header carries its own checksum and a sync
marker, so a reader that meets a damaged record (a flipped byte, a zeroed block, a broken
length field) skips to the next intact header and reads on. Steps are kept by sequence
number: a duplicated or out-of-order step is dropped, and every loss is reported with the
sequence numbers of the steps lost (:class:`RecordingReport`). A torn tail (the last record
cut short, as a crash leaves it) is dropped with a warning saying how much was lost. A
format 1 file has no sync markers: its reader stops at damage in the middle. A file that is
not a recording is refused with :class:`RecordingError`.
"""

from __future__ import annotations

import atexit
import mmap
import os
import struct
import threading
import time as _time
import weakref
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from . import codec
from .columns import StepColumns
from .errors import ProtocolError
from .messages import Message, Schema, StepChunk
from .run import RunHistory
from .version import PROTOCOL_MAJOR, PROTOCOL_MINOR

RECORDING_SUFFIX = ".octa"
FORMAT_MAGIC = b"\x89OCT\r\n\x1a\n"
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
# Format majors this reader reads: 1 (no sync markers) and 2.
READ_MAJORS = (1, 2)
FILE_HEADER = struct.Struct("<8sHHBB2x")
# A record's header: ``unpack`` gives (payload length, payload CRC); the sync marker and the
# header's own CRC follow in the padding (see RECORD_HEADER).
FRAME_HEADER = struct.Struct("<II8x")
RECORD_HEADER = struct.Struct("<II4sI")
RECORD_SYNC = b"\xd1OCr"
# Format 1's record header: payload length, payload CRC.
FRAME_HEADER_V1 = struct.Struct("<II")
# A frame larger than this is a corrupt length field, not a record.
MAX_RECORD_BYTES = codec.MAX_FRAMES * (codec.MAX_FRAME_BYTES + 4) + 4

# Steps per chunk record: about 4 MiB of values per chunk, within sensible row bounds.
CHUNK_BYTES = 4 << 20
MIN_CHUNK_ROWS = 64
MAX_CHUNK_ROWS = 16384
# Step values the writer may hold while the disk lags before it starts dropping steps.
MAX_PENDING_BYTES = 64 << 20

# With at least this much to checksum, CRCs run on worker threads while the reader copies.
_PARALLEL_CRC_BYTES = 8 << 20
_CRC_BATCH_BYTES = 16 << 20
_U32 = struct.Struct("<I")


class RecordingError(ProtocolError):
    """A file that is not a readable recording: not one at all, or from a newer format."""


def file_header() -> bytes:
    """The 16 bytes every recording starts with (this format and protocol version)."""
    return FILE_HEADER.pack(FORMAT_MAGIC, FORMAT_MAJOR, FORMAT_MINOR, PROTOCOL_MAJOR, PROTOCOL_MINOR)


def record_header(length: int, crc: int) -> bytes:
    """The 16-byte header of a record: its length, its CRC, the sync marker, the header's CRC."""
    head = struct.pack("<II4s", length, crc, RECORD_SYNC)
    return head + _U32.pack(zlib.crc32(head))


def frame(payload: bytes) -> bytes:
    """One framed record: the record header (length, CRC-32, sync, header CRC) and the payload."""
    return record_header(len(payload), zlib.crc32(payload)) + payload


def framed_parts(msg: Message) -> list[bytes]:
    """The buffers of ``frame(codec.pack(msg))``, without joining them into one copy.

    A chunk of several MiB is then checksummed and handed to ``writev`` as it is.
    """
    frames = codec.encode(msg)
    parts = [_U32.pack(len(frames))]
    for f in frames:
        parts.append(_U32.pack(len(f)))
        parts.append(f)
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [record_header(sum(len(p) for p in parts), crc), *parts]


# --- writing --------------------------------------------------------------------------------


class _StepBuffer:
    """Preallocated columns that steps are copied into until a chunk's worth is full."""

    __slots__ = ("seq", "step", "epoch", "time", "values", "n")

    def __init__(self, rows: int, width: int) -> None:
        self.seq = np.empty(rows, dtype="<u8")
        self.step = np.empty(rows, dtype="<i8")
        self.epoch = np.empty(rows, dtype="<i4")
        self.time = np.empty(rows, dtype="<f8")
        self.values = np.empty((rows, width), dtype="<f4")
        self.n = 0

    @property
    def capacity(self) -> int:
        return self.seq.shape[0]

    def chunk(self, run_id: str) -> StepChunk:
        """The buffered rows as a chunk of views (valid until the buffer is reused)."""
        n = self.n
        return StepChunk(run_id, self.seq[:n], self.step[:n], self.epoch[:n], self.time[:n], self.values[:n])

    def compact(self, run_id: str) -> StepChunk:
        """The buffered rows as a chunk of copies, leaving the buffer empty."""
        chunk = self.chunk(run_id)
        copied = StepChunk(
            run_id,
            chunk.seq.copy(),
            chunk.step.copy(),
            chunk.epoch.copy(),
            chunk.time.copy(),
            chunk.values.copy(),
        )
        self.n = 0
        return copied


def default_chunk_rows(width: int) -> int:
    """Steps per chunk record for a schema ``width`` channels wide (about 4 MiB of values)."""
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, 4 * width)))


class RecordingWriter:
    """Records a run to ``path`` without ever slowing or failing the training loop.

    :meth:`write_step` only copies a row into a preallocated buffer; a background thread
    turns full buffers (and, every ``flush_s`` seconds, the partial one) into
    :class:`StepChunk` records and writes them. :meth:`write` files any other message after
    the steps buffered before it, so the file keeps the order things happened in.

    The file header and the schema are written when the writer is made. If the file
    cannot be created or written (no such directory, disk full, ...), nothing is raised:
    :attr:`error` says which file and what the OS reported, and every later step or record
    is dropped and counted in :attr:`dropped_steps` / :attr:`dropped_records`. A disk that
    is merely slow costs memory, up to ``max_pending_rows`` buffered steps (by default 64 MiB
    of values); beyond that, steps are dropped and counted rather than slowing training.
    A writer still open when the interpreter exits is closed then.

    Output is deterministic: the same calls give the same bytes, except that where a chunk
    ends depends on when the ``flush_s`` timer fires. ``chunk_rows`` fixes the chunk size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        flush_s: float = 1.0,
        *,
        chunk_rows: int | None = None,
        max_pending_rows: int | None = None,
    ) -> None:
        if not flush_s > 0:
            raise ValueError(f"flush_s must be > 0 seconds, got {flush_s!r}")
        self.path = Path(path)
        self.schema = schema
        self.flush_s = float(flush_s)
        self.error: str | None = None
        self.steps_written = 0
        self.records_written = 0
        self.dropped_steps = 0
        self.dropped_records = 0
        self._width = schema.width
        self._rows = int(chunk_rows) if chunk_rows else default_chunk_rows(self._width)
        if not 1 <= self._rows <= codec.MAX_CHUNK_ROWS:
            raise ValueError(f"chunk_rows must be 1..{codec.MAX_CHUNK_ROWS}, got {chunk_rows}")
        if max_pending_rows is None:
            max_pending_rows = MAX_PENDING_BYTES // max(1, 4 * self._width)
        self._max_buffers = max(3, max_pending_rows // self._rows + 1)
        self._buffers = 2
        self._active = _StepBuffer(self._rows, self._width)
        self._free: list[_StepBuffer] = [_StepBuffer(self._rows, self._width)]
        self._queue: deque[_StepBuffer | StepChunk | bytes] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._closed = False
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600
            )
            if hasattr(os, "fchmod"):
                os.fchmod(self._fd, 0o600)  # a file that existed keeps its mode through O_TRUNC
            self._write_all(file_header() + frame(codec.pack(schema)))
        except OSError as exc:
            self._fail(exc, "create")
            return
        self.records_written = 1
        self._thread = threading.Thread(
            target=self._run, name=f"octa-recording {self.path.name}", daemon=True
        )
        self._thread.start()
        _OPEN_WRITERS.add(self)

    # -- the training thread's side ----------------------------------------------------------

    def write_step(self, seq: int, step: int, epoch: int, time: float, values: np.ndarray) -> None:
        """Buffer one step (a row copy; no I/O). Never raises for disk problems."""
        if values.shape != (self._width,):
            raise ProtocolError(
                f"step has values of shape {values.shape} but the run's schema has {self._width} channels"
            )
        with self._lock:
            if self._closing or self.error is not None:
                self.dropped_steps += 1
                return
            buffer = self._active
            if buffer.n == buffer.capacity:
                if not self._hand_over():
                    self.dropped_steps += 1
                    return
                self._wake.notify()
                buffer = self._active
            i = buffer.n
            buffer.seq[i] = seq
            buffer.step[i] = step
            buffer.epoch[i] = epoch
            buffer.time[i] = time
            buffer.values[i] = values
            buffer.n = i + 1

    def write_steps(self, seq: np.ndarray, step: np.ndarray, epoch: np.ndarray, time: np.ndarray,
                    values: np.ndarray) -> None:
        """Buffer many steps at once (row copies by slice; no I/O): :meth:`write_step` for each row."""
        rows = values.shape[0]
        if values.ndim != 2 or values.shape[1] != self._width or not (
                len(seq) == len(step) == len(epoch) == len(time) == rows):
            raise ProtocolError(
                f"steps have values of shape {values.shape} (and {len(seq)} sequence numbers) but the run's schema "
                f"has {self._width} channels"
            )
        done = 0
        with self._lock:
            while done < rows:
                if self._closing or self.error is not None:
                    self.dropped_steps += rows - done
                    return
                buffer = self._active
                if buffer.n == buffer.capacity:
                    if not self._hand_over():
                        self.dropped_steps += rows - done
                        return
                    self._wake.notify()
                    buffer = self._active
                i = buffer.n
                take = min(rows - done, buffer.capacity - i)
                end = done + take
                buffer.seq[i : i + take] = seq[done:end]
                buffer.step[i : i + take] = step[done:end]
                buffer.epoch[i : i + take] = epoch[done:end]
                buffer.time[i : i + take] = time[done:end]
                buffer.values[i : i + take] = values[done:end]
                buffer.n = i + take
                done = end

    def write(self, msg: Message) -> None:
        """Record a message (epoch summary, event, dataset report, preview, ...) in order.

        The message is encoded here, so later changes to its arrays do not alter the
        record; a value that is not a protocol message raises ProtocolError.
        """
        payload = codec.pack(msg)
        with self._lock:
            if self._closing or self.error is not None:
                self.dropped_records += 1
                return
            self._hand_over(copy_if_needed=True)
            self._queue.append(payload)
            self._wake.notify()

    def close(self) -> None:
        """Write everything buffered, fsync, and stop the thread. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.error is None:
                self._hand_over(copy_if_needed=True)
            else:  # rows buffered before the disk failed: they will never be written
                self.dropped_steps += self._active.n
                self._active.n = 0
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            try:
                if self.error is None:
                    os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc, "sync")
            finally:
                os.close(self._fd)
                self._fd = None
        _OPEN_WRITERS.discard(self)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- shared, under the lock --------------------------------------------------------------

    def _hand_over(self, copy_if_needed: bool = False) -> bool:
        """Queue the active buffer for writing and start a fresh one (lock held).

        Returns False only when the writer is so far behind that no buffer may be added;
        with ``copy_if_needed`` the rows are then queued as a copy instead, so that a record
        never overtakes the steps before it.
        """
        active = self._active
        if active.n == 0:
            return True
        if self._free:
            fresh = self._free.pop()
        elif self._buffers < self._max_buffers:
            fresh = _StepBuffer(self._rows, self._width)
            self._buffers += 1
        elif copy_if_needed:
            self._queue.append(active.compact(self.schema.run_id))
            return True
        else:
            return False
        self._queue.append(active)
        self._active = fresh
        return True

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = _time.monotonic() + self.flush_s
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    wait_s = next_flush - _time.monotonic()
                    if wait_s <= 0:
                        break
                    self._wake.wait(wait_s)
                if _time.monotonic() >= next_flush and not self._closing and self.error is None:
                    self._hand_over()
                    next_flush = _time.monotonic() + self.flush_s
                items = list(self._queue)
                self._queue.clear()
                closing = self._closing
            self._write_items(items)
            if closing:
                with self._lock:
                    if not self._queue:
                        return

    def _write_items(self, items: list[_StepBuffer | StepChunk | bytes]) -> None:
        run_id = self.schema.run_id
        for item in items:
            if isinstance(item, bytes):
                rows, parts = 0, [frame(item)]
            else:
                chunk = item.chunk(run_id) if isinstance(item, _StepBuffer) else item
                rows, parts = len(chunk), framed_parts(chunk)
            if self.error is None:
                try:
                    self._write_all(*parts)
                except OSError as exc:
                    self._fail(exc, "write")
            with self._lock:
                if self.error is None:
                    self.steps_written += rows
                    self.records_written += 1
                elif rows:
                    self.dropped_steps += rows
                else:
                    self.dropped_records += 1
                if isinstance(item, _StepBuffer):
                    item.n = 0
                    self._free.append(item)

    def _write_all(self, *parts: bytes) -> None:
        """Write every byte of ``parts``, in order (``writev`` where the OS has it)."""
        assert self._fd is not None
        views = [memoryview(p) for p in parts if len(p)]
        while views:
            if hasattr(os, "writev"):
                written = os.writev(self._fd, views)
            else:
                written = os.write(self._fd, views[0])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def _fail(self, exc: OSError, action: str) -> None:
        reason = exc.strerror or str(exc)
        self.error = f"cannot {action} recording {self.path}: {reason} (errno {exc.errno}); recording stopped, training goes on"


# A trainer that exits without closing its writer still gets its last steps written.
_OPEN_WRITERS: weakref.WeakSet[RecordingWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for writer in list(_OPEN_WRITERS):
        writer.close()


# --- reading --------------------------------------------------------------------------------


@dataclass
class RecordingReport:
    """What a reader left out of a recording, and why: every loss, counted and located.

    ``lost_ranges``: sequence numbers (first, last; inclusive) of steps lost to damage.
    ``lost_unknown``: damaged places after which nothing was left to count lost steps from.
    ``duplicate_steps`` / ``out_of_order_steps``: steps dropped because a step with that
    sequence number was already read, or because a later one was (their ranges alongside).
    ``damaged``: damaged places skipped; ``skipped_bytes`` the bytes skipped in the middle
    of the file, ``truncated_bytes`` those at its end (a torn tail).
    """

    lost_ranges: list[tuple[int, int]] = field(default_factory=list)
    lost_unknown: int = 0
    duplicate_steps: int = 0
    duplicate_ranges: list[tuple[int, int]] = field(default_factory=list)
    out_of_order_steps: int = 0
    out_of_order_ranges: list[tuple[int, int]] = field(default_factory=list)
    duplicate_records: int = 0
    damaged: int = 0
    skipped_bytes: int = 0
    truncated_bytes: int = 0

    @property
    def lost_steps(self) -> int:
        """Steps known to be lost to damage."""
        return sum(b - a + 1 for a, b in self.lost_ranges)

    @property
    def clean(self) -> bool:
        """Whether the reader read every byte and kept every step."""
        return not (self.damaged or self.duplicate_steps or self.out_of_order_steps or self.duplicate_records)


@dataclass
class Recording:
    """What a recording holds: the run's history, and what the reader had to skip.

    ``truncated_bytes`` counts the bytes at the end of the file that were not replayed (a
    torn tail); ``warnings`` says what was lost and why, ``report`` the same as numbers.
    """

    history: RunHistory
    warnings: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    report: RecordingReport = field(default_factory=RecordingReport)


@dataclass(slots=True)
class _Frame:
    """Where one record lies in the file and, for a step chunk, where its columns are."""

    offset: int  # of the frame header in the file
    length: int  # of the payload
    crc: int
    kind: int  # codec kind code, 0 when the payload is too short to tell
    rows: int = -1  # steps of a chunk record, -1 when not a chunk or unknown
    width: int = 0
    run_id: str = ""
    columns: tuple[int, int, int, int, int] | None = None  # file offsets of seq, step, epoch, time, values
    problem: str = ""  # why a chunk's layout is malformed
    seq_at: int = -1  # file offset of a chunk's seq column, when its header and body are readable


@dataclass(slots=True)
class _Damage:
    """A damaged place in the file: skipped from ``offset`` to ``end``."""

    offset: int
    end: int
    reason: str
    torn: bool = False  # at the end of the file (a torn tail)
    rows: int = -1  # steps it held, when known
    seqs: tuple[int, int] | None = None  # the first and last seq it held, when readable
    stop: bool = False  # format 1: reading stopped here
    kind: int = 0  # codec kind of the record there, 0 when unknown


class _Source:
    """A recording's bytes as one buffer: memory-mapped when possible."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size:
                    try:
                        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                        self._map = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
                    except (OSError, ValueError, TypeError, AttributeError):  # no mmap here: read it
                        self._map = None
                data = self._map if self._map is not None else f.read()
        except IsADirectoryError:
            raise RecordingError(f"{self.path} is a directory, not a recording file") from None
        except OSError as exc:
            raise RecordingError(f"cannot open recording {self.path}: {exc.strerror or exc}") from None
        self.data = data
        self.view = memoryview(data)

    def find(self, sub: bytes, start: int) -> int:
        """Offset of the next ``sub`` at or after ``start``, or -1."""
        return self.data.find(sub, start)

    def close(self) -> None:
        self.view.release()
        self.data = b""
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view: the map closes when it is dropped
                pass

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _describe_start(data: bytes) -> str:
    """A few words on what a non-recording file starts with, for the error message."""
    if not data:
        return "the file is empty"
    try:
        text = data[:64].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it looks like a text file (it starts with {text[:24]!r})"
    return f"it starts with the bytes {data[:8].hex(' ')}"


def _check_header(path: Path, view: memoryview) -> int:
    """Check the file header; the recording format major (one this reader reads)."""
    size = len(view)
    head = bytes(view[: max(64, FILE_HEADER.size)])
    if size < FILE_HEADER.size or head[:8] != FORMAT_MAGIC:
        if 0 < size < FILE_HEADER.size and head[:8] == FORMAT_MAGIC[: min(8, size)]:
            raise RecordingError(
                f"{path} ends inside its {FILE_HEADER.size}-byte header ({size} bytes): the recording holds nothing"
            )
        raise RecordingError(
            f"{path} is not an octa-tui recording: {_describe_start(head)}; a recording starts with {FORMAT_MAGIC!r}"
        )
    _, major, minor, proto_major, proto_minor = FILE_HEADER.unpack_from(head)
    if major not in READ_MAJORS:
        newer = "newer" if major > FORMAT_MAJOR else "older"
        raise RecordingError(
            f"{path} uses recording format {major}.{minor}, a {newer} major version than this octa-tui reads "
            f"({FORMAT_MAJOR}.{FORMAT_MINOR}); open it with the octa-tui version that wrote it"
        )
    if proto_major != PROTOCOL_MAJOR:
        raise RecordingError(
            f"{path} holds protocol {proto_major}.{proto_minor} records; this octa-tui speaks protocol "
            f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; open it with the octa-tui version that wrote it"
        )
    return major


_CHUNK_COLUMNS = (("seq", "<u8", 8), ("step", "<i8", 8), ("epoch", "<i4", 4), ("time", "<f8", 8))


def _inspect(view: memoryview, offset: int, length: int, available: int, hsize: int) -> _Frame:
    """What the frame at ``offset`` holds, from its payload's first ``available`` bytes.

    For a complete step chunk it also finds and checks, as ``codec.unpack`` would, where
    each column lies, so that the reader can copy the columns without decoding the record.
    """
    found = _Frame(offset, length, FRAME_HEADER_V1.unpack_from(view, offset)[1], 0)
    start = offset + hsize
    # codec.pack: u32 count, u32 len0, head (magic 2, major, minor, kind, pad 3), u32 len1, body, ...
    if available < 13:
        return found
    found.kind = view[start + 12]
    if found.kind != codec.KIND_CHUNK or available < 20:
        return found
    (body_len,) = _U32.unpack_from(view, start + 16)
    if body_len > 4096 or 20 + body_len > available:
        return found
    try:
        body = msgpack.unpackb(bytes(view[start + 20 : start + 20 + body_len]), raw=False)
    except Exception:  # a damaged body: the chunk's size is unknown
        return found
    rows = body.get("n") if isinstance(body, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= codec.MAX_CHUNK_ROWS:
        return found
    found.rows = rows
    seq_at = start + 20 + body_len + 4
    if seq_at + 8 * rows <= start + available:
        found.seq_at = seq_at
    if available == length:
        found.problem = _locate_columns(view, start, length, body_len, body, found)
    return found


def _locate_columns(
    view: memoryview, start: int, length: int, body_len: int, body: dict, found: _Frame
) -> str:
    """Fill ``found.columns`` for a complete chunk payload; the problem, or "" if none."""
    count, head_len = _U32.unpack_from(view, start)[0], _U32.unpack_from(view, start + 4)[0]
    if count != 7 or head_len != codec.HEAD.size:
        return f"its frames are malformed ({count} frames, head of {head_len} bytes)"
    magic, major, minor, _kind = codec.HEAD.unpack_from(view, start + 8)
    if magic != codec.MAGIC or major != PROTOCOL_MAJOR:
        return f"its head is malformed (magic {magic!r}, protocol {major}.{minor})"
    run_id, width = body.get("run_id"), body.get("width")
    if not isinstance(run_id, str) or isinstance(width, bool) or not isinstance(width, int):
        return "its body lacks a run id or a width"
    if not 0 <= width <= codec.MAX_CHANNELS:
        return f"it is {width} channels wide; the limit is {codec.MAX_CHANNELS}"
    n = found.rows
    at = start + 20 + body_len
    offsets = []
    for name, size in [(name, n * item) for name, _, item in _CHUNK_COLUMNS] + [("values", 4 * n * width)]:
        if at + 4 > start + length:
            return f"it ends before its {name} column"
        (got,) = _U32.unpack_from(view, at)
        if got != size:
            return f"its {name} column is {got} bytes; {n} rows need {size}"
        offsets.append(at + 4)
        at += 4 + size
    if at != start + length:
        return f"it has {start + length - at} trailing bytes"
    found.width, found.run_id, found.columns = width, run_id, tuple(offsets)
    return ""


def _record_name(kind: int, rows: int) -> str:
    if kind == codec.KIND_CHUNK and rows >= 0:
        return f"a chunk of {rows} steps"
    name = codec.KIND_NAMES.get(kind)
    return f"a {name} record" if name else "a record of unknown kind"


def _crc_spans(view: memoryview, spans: list[tuple[int, int]]) -> list[int]:
    return [zlib.crc32(view[start : start + length]) for start, length in spans]


def _seq_text(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


def _ranges_text(ranges: list[tuple[int, int]], limit: int = 6) -> str:
    shown = ", ".join(_seq_text(a, b) for a, b in ranges[:limit])
    return shown + (f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else "")


def _ranges_of(seqs: np.ndarray) -> list[tuple[int, int]]:
    """Sorted distinct sequence numbers as (first, last) runs."""
    if seqs.size == 0:
        return []
    seqs = np.unique(seqs)
    cuts = np.flatnonzero(np.diff(seqs) != 1) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [seqs.size])) - 1
    return [(int(seqs[a]), int(seqs[b])) for a, b in zip(starts.tolist(), stops.tolist())]


def _merge_ranges(ranges: list[tuple[int, int]], more: list[tuple[int, int]]) -> None:
    for a, b in more:
        if ranges and a <= ranges[-1][1] + 1 and b >= ranges[-1][0]:
            ranges[-1] = (min(a, ranges[-1][0]), max(b, ranges[-1][1]))
        else:
            ranges.append((a, b))


class _Reader:
    """Walks a recording's records, checks each one, and notes every damaged place.

    Format 2: a record whose header fails its check is skipped up to the next intact
    header (found by its sync marker and its header CRC), and a record whose payload fails
    its CRC is skipped whole (its header, checked, says how long it is). Format 1 has no
    sync markers: reading stops at the first damage. Damage at the very end (a record cut
    short, a last record failing its CRC) is a torn tail.
    """

    def __init__(self, source: _Source, verify: bool = True) -> None:
        self.source = source
        self.path = source.path
        self.size = len(source.view)
        self.verify = verify
        self.major = _check_header(self.path, source.view)
        self.hsize = FRAME_HEADER.size if self.major >= 2 else FRAME_HEADER_V1.size
        self.frames: list[_Frame] = []
        self.items: list[_Frame | _Damage] = []
        if self.major >= 2:
            self._index()
        else:
            self._index_v1()

    def chunk_rows(self) -> int:
        """Steps in all well-formed chunk frames (what to preallocate)."""
        return sum(f.rows for f in self.frames if f.columns is not None)

    def payload(self, f: _Frame) -> memoryview:
        """A view of a frame's payload (valid while the source is open)."""
        start = f.offset + self.hsize
        return self.source.view[start : start + f.length]

    def _header_ok(self, offset: int) -> bool:
        if offset < FILE_HEADER.size or offset + RECORD_HEADER.size > self.size:
            return False
        length, _crc, sync, check = RECORD_HEADER.unpack_from(self.source.view, offset)
        return (
            sync == RECORD_SYNC
            and 4 <= length <= MAX_RECORD_BYTES
            and zlib.crc32(self.source.view[offset : offset + 12]) == check
        )

    def _next_header(self, start: int) -> int | None:
        """The offset of the next intact record header at or after ``start``."""
        at = start + 8
        while True:
            found = self.source.find(RECORD_SYNC, at)
            if found < 0:
                return None
            if self._header_ok(found - 8):
                return found - 8
            at = found + 1

    def _torn_seqs(self, found: _Frame, available: int) -> tuple[int, int] | None:
        """The first and last seq of a chunk cut short, when its seq column is in the file."""
        if found.seq_at < 0 or found.rows <= 0:
            return None
        seq = np.frombuffer(self.source.view, dtype="<u8", count=found.rows, offset=found.seq_at)
        return int(seq[0]), int(seq[-1])

    def _index(self) -> None:
        view, size, hs = self.source.view, self.size, self.hsize
        offset = FILE_HEADER.size
        while offset < size:
            rest = size - offset
            if rest < hs:
                self.items.append(_Damage(offset, size, f"a record header is cut after {rest} of {hs} bytes",
                                          torn=True))
                return
            if self._header_ok(offset):
                (length,) = _U32.unpack_from(view, offset)
                available = min(length, rest - hs)
                found = _inspect(view, offset, length, available, hs)
                if available < length:
                    before = self.items[-1] if self.items else None
                    if isinstance(before, _Damage) and before.end == offset:
                        # Damage, then only a record cut short: all of it is the file's torn tail.
                        self.items[-1] = _Damage(before.offset, size, before.reason, torn=True)
                        return
                    self.items.append(_Damage(
                        offset, size, f"{_record_name(found.kind, found.rows)} is cut after {available} of {length} bytes",
                        torn=True, rows=found.rows, seqs=self._torn_seqs(found, available), kind=found.kind))
                    return
                self.frames.append(found)
                self.items.append(found)
                offset += hs + length
                continue
            length, _crc, sync, _check = RECORD_HEADER.unpack_from(view, offset)
            if sync != RECORD_SYNC:
                reason = "its record header is damaged (no sync marker where a record starts)"
            elif not 4 <= length <= MAX_RECORD_BYTES:
                reason = f"its length field says {length} bytes, which no record has"
            else:
                reason = "its record header fails its check (a damaged length field)"
            nxt = self._next_header(offset + 1)
            if nxt is None:
                self.items.append(_Damage(offset, size, reason, torn=True))
                return
            self.items.append(_Damage(offset, nxt, reason))
            offset = nxt

    def _index_v1(self) -> None:
        view, size, hs = self.source.view, self.size, self.hsize
        offset = FILE_HEADER.size
        while offset < size:
            if size - offset < hs:
                self.items.append(_Damage(offset, size, f"a frame header is cut after {size - offset} of {hs} bytes",
                                          torn=True, stop=True))
                return
            (length,) = _U32.unpack_from(view, offset)
            if not 4 <= length <= MAX_RECORD_BYTES:
                self.items.append(_Damage(offset, size, f"its length field says {length} bytes, which no record has",
                                          stop=True))
                return
            available = min(length, size - offset - hs)
            found = _inspect(view, offset, length, available, hs)
            if available < length:
                self.items.append(_Damage(
                    offset, size, f"{_record_name(found.kind, found.rows)} is cut after {available} of {length} bytes",
                    torn=True, rows=found.rows, seqs=self._torn_seqs(found, available), stop=True, kind=found.kind))
                return
            self.frames.append(found)
            self.items.append(found)
            offset += hs + length

    def damage_of(self, f: _Frame, reason: str) -> _Damage:
        """A checked record that cannot be used, as a damaged place."""
        end = f.offset + self.hsize + f.length
        stop = self.major < 2
        seqs = self._torn_seqs(f, f.length) if f.kind == codec.KIND_CHUNK else None
        return _Damage(f.offset, self.size if stop else end, reason, torn=end == self.size, rows=f.rows,
                       seqs=seqs, stop=stop, kind=f.kind)

    def checked(self) -> Iterator[_Frame | _Damage]:
        """Each intact record, and each damaged place, in file order (format 1: until the first damage)."""
        crc_of, pool = self._start_crcs()
        try:
            i = -1
            for item in self.items:
                if isinstance(item, _Damage):
                    yield item
                    continue
                i += 1
                if crc_of(i) != item.crc:
                    damage = self.damage_of(item, f"{_record_name(item.kind, item.rows)} fails its CRC check")
                    yield damage
                    if damage.stop:
                        return
                    continue
                yield item
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _start_crcs(self):
        """A function giving each frame's CRC; when there is much to check and more than one
        CPU, batches of frames are checksummed on worker threads (zlib releases the GIL) while
        the caller copies the frames already checked."""
        view, frames = self.source.view, self.frames
        last = len(frames) - 1
        todo = [i for i, f in enumerate(frames) if self.verify or f.kind != codec.KIND_CHUNK or i == last]
        workers = min(4, os.cpu_count() or 1)
        total = sum(frames[i].length for i in todo)
        if workers < 2 or total < _PARALLEL_CRC_BYTES:

            def inline(i: int) -> int:
                f = frames[i]
                if not self.verify and f.kind == codec.KIND_CHUNK and i != last:
                    return f.crc
                return zlib.crc32(self.payload(f))

            return inline, None
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="octa-crc")
        batch_bytes = max(1 << 20, min(_CRC_BATCH_BYTES, total // (4 * workers)))
        where: dict[int, tuple[int, int]] = {}
        futures = []
        spans: list[tuple[int, int]] = []
        size = 0
        hs = self.hsize
        for i in todo:
            f = frames[i]
            where[i] = (len(futures), len(spans))
            spans.append((f.offset + hs, f.length))
            size += f.length
            if size >= batch_bytes or i == todo[-1]:
                futures.append(pool.submit(_crc_spans, view, spans))
                spans, size = [], 0

        def pooled(i: int) -> int:
            if i not in where:
                return frames[i].crc  # not verified on request
            batch, position = where[i]
            return futures[batch].result()[position]

        return pooled, pool


class _Ledger:
    """Keeps steps by sequence number and accounts for every loss, in the reader's words.

    Every reader (replay, export, verification) runs its records through one ledger, so
    they keep the same steps and say the same thing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.report = RecordingReport()
        self.warnings: list[str] = []
        self._last = -1  # the highest seq kept
        self._kept: list[tuple[int, int]] = []  # runs of kept seqs
        self._damage: list[_Damage] = []  # damaged places not yet accounted for
        self._records: set[tuple[int, int]] = set()
        self._dupes: list[np.ndarray] = []
        self._late: list[np.ndarray] = []

    # -- damage --------------------------------------------------------------------------

    def damaged(self, damage: _Damage) -> None:
        """A damaged place: its steps are counted when the next intact step is read."""
        self.report.damaged += 1
        if damage.torn or damage.stop:
            self.report.truncated_bytes += damage.end - damage.offset
        else:
            self.report.skipped_bytes += damage.end - damage.offset
        self._damage.append(damage)

    def _settle(self, next_seq: int | None) -> None:
        """Say what the damage since the last kept step cost, now that the next kept seq is known."""
        if not self._damage:
            return
        group, self._damage = self._damage, []
        first = self._last + 1
        lost: tuple[int, int] | None = None
        if next_seq is not None:
            if next_seq > first:
                lost = (first, next_seq - 1)
            steps = f"steps {_seq_text(*lost)} lost ({lost[1] - lost[0] + 1} steps)" if lost else "no steps lost"
        else:
            # Rows each damaged place held, where its record's kind says (0: not steps).
            rows = [d.rows if d.kind == codec.KIND_CHUNK else (0 if d.kind else -1) for d in group]
            known = [d.seqs for d in group
                     if d.seqs is not None and d.seqs[0] >= first and d.seqs[1] - d.seqs[0] + 1 == d.rows]
            if known and len(known) == sum(r != 0 for r in rows):
                lost = (min(a for a, _ in known), max(b for _, b in known))
                steps = f"{sum(b - a + 1 for a, b in known)} steps lost ({_seq_text(*lost)})"
            elif all(r >= 0 for r in rows):
                count = sum(rows)
                lost = (first, first + count - 1) if count else None
                steps = f"{count} steps lost ({_seq_text(*lost)})" if count else "no steps lost"
            else:
                self.report.lost_unknown += 1
                steps = f"steps lost unknown (any step after {_seq_text(first - 1, first - 1)})" if first else (
                    "steps lost unknown")
        if lost is not None:
            _merge_ranges(self.report.lost_ranges, [lost])
        self.warnings.append(self._say(group, steps))

    def _say(self, group: list[_Damage], steps: str) -> str:
        path = self.path
        last = group[-1]
        if len(group) == 1 and last.torn:
            return (f"{path}: torn tail at offset {last.offset}: {last.reason}; dropped the last "
                    f"{last.end - last.offset} bytes ({steps})")
        if len(group) == 1 and last.stop:
            return (f"{path}: corrupt record at offset {last.offset}: {last.reason}; stopped reading there, "
                    f"{last.end - last.offset} bytes not read (a format 1 recording has no sync markers to read on "
                    f"from; {steps})")
        places = "; ".join(f"corrupt record at offset {d.offset}: {d.reason}" for d in group)
        skipped = sum(d.end - d.offset for d in group)
        where = "to the end of the file" if last.torn or last.stop else f"to the next intact record at offset {last.end}"
        return f"{path}: {places}; skipped {skipped} bytes {where}; {steps}"

    # -- steps and records ---------------------------------------------------------------

    def steps(self, seq: np.ndarray) -> np.ndarray | None:
        """Which rows of a chunk to keep: None for all, else a boolean mask.

        A row is kept when its seq is higher than every seq kept before it; the others are
        duplicates (that seq was kept already) or out of order (a later step came first).
        """
        n = len(seq)
        if n == 0:
            return None
        s = seq.astype(np.int64, copy=False)
        first = int(s[0])
        if first > self._last and (n == 1 or bool(np.all(s[1:] > s[:-1]))):
            self._settle(first)
            last = int(s[-1])
            if last - first + 1 == n:
                self._keep_run(first, last)
            else:
                for a, b in _ranges_of(s):
                    self._keep_run(a, b)
            return None
        before = np.maximum.accumulate(np.concatenate(([self._last], s[:-1])))
        keep = s > before
        if keep.any():
            self._settle(int(s[keep][0]))
        dropped = s[~keep]
        if dropped.size:
            held = self._holds(dropped) | np.isin(dropped, s[keep])
            if held.any():
                self._dupes.append(dropped[held])
            if (~held).any():
                self._late.append(dropped[~held])
        kept = s[keep]
        if kept.size:
            for a, b in _ranges_of(kept):
                self._keep_run(a, b)
        return keep

    def suspect(self, seq: np.ndarray) -> bool:
        """Whether a chunk's seqs do not simply run on from the last kept step, one by one."""
        n = len(seq)
        if n == 0:
            return False
        first, last = int(seq[0]), int(seq[-1])
        if first <= self._last or last - first + 1 != n:
            return True
        return n > 2 and not bool(np.all(np.diff(seq.astype(np.int64)) == 1))

    def _keep_run(self, first: int, last: int) -> None:
        _merge_ranges(self._kept, [(first, last)])
        self._last = max(self._last, last)

    def _holds(self, seqs: np.ndarray) -> np.ndarray:
        if not self._kept:
            return np.zeros(seqs.shape, dtype=bool)
        starts = np.array([a for a, _ in self._kept], dtype=np.int64)
        ends = np.array([b for _, b in self._kept], dtype=np.int64)
        at = np.searchsorted(starts, seqs, side="right") - 1
        inside = at >= 0
        inside[inside] &= seqs[inside] <= ends[at[inside]]
        return inside

    def record(self, f: _Frame) -> bool:
        """Whether to keep a record that is not steps (False: the file holds it twice)."""
        key = (f.length, f.crc)
        if key in self._records:
            self.report.duplicate_records += 1
            return False
        self._records.add(key)
        return True

    def finish(self) -> list[str]:
        """Account for damage at the end and for dropped steps; the warnings, in order."""
        self._settle(None)
        report, path = self.report, self.path
        if self._dupes:
            dupes = np.concatenate(self._dupes)
            report.duplicate_steps = int(dupes.size)
            report.duplicate_ranges = _ranges_of(dupes)
            self.warnings.append(f"{path}: dropped {dupes.size} duplicate steps ({_ranges_text(report.duplicate_ranges)}) "
                                 "that the file holds twice; each is kept once")
        if self._late:
            late = np.concatenate(self._late)
            report.out_of_order_steps = int(late.size)
            report.out_of_order_ranges = _ranges_of(late)
            self.warnings.append(f"{path}: dropped {late.size} steps out of order "
                                 f"({_ranges_text(report.out_of_order_ranges)}): they come after later steps in the file")
        if report.duplicate_records:
            count = report.duplicate_records
            self.warnings.append(f"{path}: dropped {count} record{'s' if count != 1 else ''} that the file holds twice")
        return self.warnings


def _chunk_problem(view: memoryview, f: _Frame, schema: Schema) -> str:
    """Why a checked chunk cannot join ``schema``'s run, or ""."""
    if f.columns is None:
        return f.problem or "its layout is malformed"
    if f.run_id != schema.run_id:
        return f"it belongs to run {f.run_id!r}, not {schema.run_id}"
    if f.width != schema.width:
        return f"it is {f.width} channels wide but the run's schema has {schema.width}"
    time = np.frombuffer(view, dtype="<f8", count=f.rows, offset=f.columns[3])
    if f.rows and not np.isfinite(time).all():
        return "its time column holds non-finite values"
    return ""


def _walk(reader: _Reader, ledger: _Ledger) -> Iterator[tuple[_Frame, Schema | Message | None, np.ndarray | None]]:
    """The records to keep, in file order, each with what it holds and (chunks) its row mask.

    Yields ``(frame, message, keep)``: for a step chunk ``message`` is None and ``keep`` the
    rows to keep (None: all); for any other record ``message`` is the decoded message. The
    first is the run's schema. Damage, duplicates and steps out of order go to ``ledger``.
    Raises RecordingError when the file holds no readable schema first.
    """
    view = reader.source.view
    schema: Schema | None = None
    for item in reader.checked():
        if isinstance(item, _Damage):
            ledger.damaged(item)
            continue
        name = _record_name(item.kind, item.rows)
        if schema is None:
            try:
                msg = codec.unpack(reader.payload(item))
            except ProtocolError as exc:
                ledger.damaged(reader.damage_of(item, f"the schema record does not decode ({exc})"))
                return
            if not isinstance(msg, Schema):
                if ledger.report.damaged:
                    return  # the schema itself is damaged: no run to read
                raise RecordingError(f"{reader.path} starts with {name} instead of the run's schema: "
                                     "it is not a complete recording")
            schema = msg
            ledger.record(item)
            yield item, msg, None
            continue
        if item.kind == codec.KIND_CHUNK:
            problem = _chunk_problem(view, item, schema)
            if problem:
                damage = reader.damage_of(item, f"{name} cannot be read: {problem}")
                ledger.damaged(damage)
                if damage.stop:
                    return
                continue
            seq = np.frombuffer(view, dtype="<u8", count=item.rows, offset=item.columns[0])
            if not reader.verify and ledger.suspect(seq) and zlib.crc32(reader.payload(item)) != item.crc:
                # Unchecked, and its sequence numbers do not run on as a writer writes them:
                # checked after all, so that a flipped bit cannot make good steps look out of order.
                damage = reader.damage_of(item, f"{name} fails its CRC check")
                ledger.damaged(damage)
                if damage.stop:
                    return
                continue
            yield item, None, ledger.steps(seq)
            continue
        if not ledger.record(item):
            continue
        try:
            msg = codec.unpack(reader.payload(item))
            if isinstance(msg, Schema) and msg != schema:
                raise ProtocolError(f"a second, different schema for run {schema.run_id}")
            if getattr(msg, "run_id", schema.run_id) != schema.run_id:
                raise ProtocolError(f"it belongs to run {msg.run_id!r}, not {schema.run_id}")
        except ProtocolError as exc:
            damage = reader.damage_of(item, f"{name} cannot be read ({exc})")
            ledger.damaged(damage)
            if damage.stop:
                return
            continue
        if isinstance(msg, Schema):
            continue  # the schema again, as it was: nothing to add
        yield item, msg, None


def _no_schema(path: Path, ledger: _Ledger) -> RecordingError:
    warnings = ledger.finish()
    why = f" ({warnings[-1]})" if warnings else ""
    return RecordingError(f"{path} holds no readable schema record, so there is no run to replay{why}")


def _chunk_of(view: memoryview, f: _Frame, run_id: str, keep: np.ndarray | None) -> StepChunk:
    """A chunk's columns as views of the file (or, with ``keep``, copies of the kept rows)."""
    n = f.rows
    seq, step, epoch, time = (
        np.frombuffer(view, dtype=dtype, count=n, offset=at) for (_, dtype, _), at in zip(_CHUNK_COLUMNS, f.columns)
    )
    values = np.frombuffer(view, dtype="<f4", count=n * f.width, offset=f.columns[4]).reshape(n, f.width)
    if keep is None:
        return StepChunk(run_id, seq, step, epoch, time, values)
    return StepChunk(run_id, seq[keep], step[keep], epoch[keep], time[keep], values[keep])


def iter_recording(
    path: str | os.PathLike[str], warnings: list[str] | None = None, report: RecordingReport | None = None
) -> Iterator[Message]:
    """Every record of a recording in write order (steps as :class:`StepChunk`).

    Damaged records are skipped (a format 1 file: reading stops there), duplicate and
    out-of-order steps dropped; pass a list as ``warnings`` to learn what was lost, and a
    :class:`RecordingReport` as ``report`` for the numbers. Raises :class:`RecordingError`
    when the file is not a recording.
    """
    with _Source(path) as source:
        reader = _Reader(source)
        ledger = _Ledger(reader.path)
        try:
            for f, msg, keep in _walk(reader, ledger):
                if msg is None:
                    chunk = _chunk_of(source.view, f, f.run_id, keep)
                    if len(chunk):
                        yield StepChunk(chunk.run_id, chunk.seq.copy(), chunk.step.copy(), chunk.epoch.copy(),
                                        chunk.time.copy(), chunk.values.copy())
                else:
                    yield msg
        finally:
            said = ledger.finish()
            if warnings is not None:
                warnings.extend(said)
            if report is not None:
                _copy_report(ledger.report, report)


def _copy_report(source: RecordingReport, target: RecordingReport) -> None:
    for name in RecordingReport.__dataclass_fields__:
        setattr(target, name, getattr(source, name))


def read_recording(path: str | os.PathLike[str], *, verify: bool = True) -> Recording:
    """Load a whole recording into a :class:`RunHistory`, as fast as memory allows.

    Step columns are preallocated to the file's total step count (known from the frame
    headers) and each chunk's columns are copied once, straight from the memory-mapped
    file, without decoding the record. Damage is skipped and reported as
    :func:`iter_recording` does (the same steps kept, the same warnings). Raises
    :class:`RecordingError` when the file is not a recording or holds no readable schema.

    ``verify=False`` skips the CRC of every step chunk but the last (checksumming is most
    of the time it takes to open a large file): the file's structure (every record header
    has its own check), every other record and the tail are still checked, so a torn tail
    or a damaged header is still found, but a flipped bit in the middle of a chunk's values
    would go unnoticed. Use it for a quick first look and call :func:`verify_recording`
    (say, on a worker thread) when it matters.
    """
    with _Source(path) as source:
        reader = _Reader(source, verify=verify)
        ledger = _Ledger(reader.path)
        history: RunHistory | None = None
        for f, msg, keep in _walk(reader, ledger):
            if history is None:
                assert isinstance(msg, Schema)
                history = RunHistory(msg)
                history.steps = StepColumns(msg.width, capacity=reader.chunk_rows())
            elif msg is None:
                chunk = _chunk_of(source.view, f, history.run_id, keep)
                if len(chunk):
                    history.steps.extend(chunk)
            else:
                try:
                    history.add(msg)
                except ProtocolError as exc:
                    damage = reader.damage_of(f, f"{_record_name(f.kind, f.rows)} cannot be read ({exc})")
                    ledger.damaged(damage)
        if history is None:
            raise _no_schema(source.path, ledger)
        warnings = ledger.finish()
        return Recording(history=history, warnings=warnings, truncated_bytes=ledger.report.truncated_bytes,
                         report=ledger.report)


def verify_recording(path: str | os.PathLike[str]) -> list[str]:
    """Check every record's CRC without loading the steps; the warnings (empty: all good).

    The warnings are those :func:`read_recording` gives for the file. Raises
    :class:`RecordingError` when the file is not a recording.
    """
    with _Source(path) as source:
        reader = _Reader(source)
        ledger = _Ledger(reader.path)
        for _ in _walk(reader, ledger):
            pass
        return ledger.finish()
