"""Session recordings: an append-only ``*.octa`` file that replay and export read later.

File layout (all integers little-endian)::

    file header, 16 bytes
        0   8  magic  b"\\x89OCT\\r\\n\\x1a\\n"   (the high byte and CR/LF catch text-mode copies)
        8   2  u16    recording format major   (a newer major is refused)
        10  2  u16    recording format minor   (a newer minor is read)
        12  1  u8     protocol major of the records inside
        13  1  u8     protocol minor
        14  2  zero
    then frames, back to back, until the end of the file
        0   4  u32    payload length in bytes
        4   4  u32    CRC-32 (zlib) of the payload
        8   n         payload: one message as written by ``codec.pack``
                      (u32 frame count, then per frame a u32 length and its bytes)

The first frame holds the run's :class:`Schema`. The others hold, in the order they
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
writer had already handed over.

A reader truncates a torn tail (a frame cut short or failing its CRC at the end of the
file) with a warning saying how much was lost, stops with a warning at corruption in the
middle, and refuses a file that is not a recording with :class:`RecordingError`.
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
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FILE_HEADER = struct.Struct("<8sHHBB2x")
FRAME_HEADER = struct.Struct("<II")
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


def frame(payload: bytes) -> bytes:
    """One framed record: length, CRC-32 and the payload."""
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


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
    return [FRAME_HEADER.pack(sum(len(p) for p in parts), crc), *parts]


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
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644
            )
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
class Recording:
    """What a recording holds: the run's history, and what the reader had to skip.

    ``truncated_bytes`` counts the bytes at the end of the file that were not replayed (a
    torn tail, or everything from a corrupt record on); ``warnings`` says why.
    """

    history: RunHistory
    warnings: list[str] = field(default_factory=list)
    truncated_bytes: int = 0


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
        self.view = memoryview(data)

    def close(self) -> None:
        self.view.release()
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


def _check_header(path: Path, view: memoryview) -> None:
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
    if major != FORMAT_MAJOR:
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


_CHUNK_COLUMNS = (("seq", "<u8", 8), ("step", "<i8", 8), ("epoch", "<i4", 4), ("time", "<f8", 8))


def _inspect(view: memoryview, offset: int, length: int, available: int) -> _Frame:
    """What the frame at ``offset`` holds, from its payload's first ``available`` bytes.

    For a complete step chunk it also finds and checks, as ``codec.unpack`` would, where
    each column lies, so that the reader can copy the columns without decoding the record.
    """
    found = _Frame(offset, length, FRAME_HEADER.unpack_from(view, offset)[1], 0)
    start = offset + FRAME_HEADER.size
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


class _Reader:
    """Walks a recording's frames, checks each CRC, and notes where and why reading stopped.

    A problem at the end of the file (a frame cut short, or a last frame failing its CRC)
    is a torn tail; a problem with more frames after it is corruption in the middle.
    """

    def __init__(self, source: _Source, verify: bool = True) -> None:
        self.source = source
        self.path = source.path
        self.size = len(source.view)
        self.verify = verify
        self.warnings: list[str] = []
        self.stopped_at: int | None = None
        _check_header(self.path, source.view)
        self.frames: list[_Frame] = []
        self._tail: _Frame | None = None  # a frame cut short at the end of the file
        self._end_problem = ""
        self._index()

    @property
    def truncated_bytes(self) -> int:
        """Bytes from where reading stopped to the end of the file."""
        return 0 if self.stopped_at is None else self.size - self.stopped_at

    def chunk_rows(self) -> int:
        """Steps in all well-formed chunk frames (what to preallocate)."""
        return sum(f.rows for f in self.frames if f.columns is not None)

    def payload(self, f: _Frame) -> memoryview:
        """A view of a frame's payload (valid while the source is open)."""
        start = f.offset + FRAME_HEADER.size
        return self.source.view[start : start + f.length]

    def _index(self) -> None:
        view, size = self.source.view, self.size
        offset = FILE_HEADER.size
        while offset < size:
            if size - offset < FRAME_HEADER.size:
                self._tail = _Frame(offset, -1, 0, 0)
                self._end_problem = (
                    f"a frame header is cut after {size - offset} of {FRAME_HEADER.size} bytes"
                )
                break
            (length,) = _U32.unpack_from(view, offset)
            if not 4 <= length <= MAX_RECORD_BYTES:
                self._end_problem = f"its length field says {length} bytes, which no record has"
                break
            available = min(length, size - offset - FRAME_HEADER.size)
            found = _inspect(view, offset, length, available)
            if available < length:
                self._tail = found
                self._end_problem = (
                    f"{_record_name(found.kind, found.rows)} is cut after {available} of {length} bytes"
                )
                break
            self.frames.append(found)
            offset += FRAME_HEADER.size + length
        self._end = offset

    def stop(self, offset: int, reason: str, torn: bool = False, rows: int = -1) -> None:
        """Record that reading ends at ``offset`` and say why in a warning."""
        self.stopped_at = offset
        lost = self.size - offset
        if torn:
            steps = (
                f"{rows} steps lost" if rows > 0 else "no steps lost" if rows == 0 else "steps lost unknown"
            )
            self.warnings.append(
                f"{self.path}: torn tail at offset {offset}: {reason}; dropped the last {lost} bytes ({steps})"
            )
        else:
            self.warnings.append(
                f"{self.path}: corrupt record at offset {offset}: {reason}; stopped reading there, {lost} bytes not read"
            )

    def checked(self) -> Iterator[_Frame]:
        """Each frame whose CRC holds, in file order, until the first one that fails."""
        crc_of, pool = self._start_crcs()
        try:
            last = len(self.frames) - 1
            for i, f in enumerate(self.frames):
                if crc_of(i) != f.crc:
                    torn = i == last and self._end == self.size
                    self.stop(f.offset, f"{_record_name(f.kind, f.rows)} fails its CRC check", torn, f.rows)
                    return
                yield f
                if self.stopped_at is not None:
                    return
            if self._end < self.size:
                rows = self._tail.rows if self._tail is not None else -1
                self.stop(self._end, self._end_problem, self._tail is not None, rows)
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
        for i in todo:
            f = frames[i]
            where[i] = (len(futures), len(spans))
            spans.append((f.offset + FRAME_HEADER.size, f.length))
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


def iter_recording(path: str | os.PathLike[str], warnings: list[str] | None = None) -> Iterator[Message]:
    """Every record of a recording in write order (steps as :class:`StepChunk`).

    Stops at a torn tail or at corruption; pass a list as ``warnings`` to learn where and
    why. Raises :class:`RecordingError` when the file is not a recording.
    """
    with _Source(path) as source:
        reader = _Reader(source)
        try:
            for f in reader.checked():
                try:
                    msg = codec.unpack(reader.payload(f))
                except ProtocolError as exc:
                    reader.stop(f.offset, f"{_record_name(f.kind, f.rows)} does not decode ({exc})")
                    break
                yield msg
        finally:
            if warnings is not None:
                warnings.extend(reader.warnings)


def read_recording(path: str | os.PathLike[str], *, verify: bool = True) -> Recording:
    """Load a whole recording into a :class:`RunHistory`, as fast as memory allows.

    Step columns are preallocated to the file's total step count (known from the frame
    headers) and each chunk's columns are copied once, straight from the memory-mapped
    file, without decoding the record. Raises :class:`RecordingError` when the file is not
    a recording or holds no readable schema.

    ``verify=False`` skips the CRC of every step chunk but the last (checksumming is most
    of the time it takes to open a large file): the file's structure, every other record
    and the tail are still checked, so a torn tail is still found, but a flipped bit in
    the middle of a chunk's values would go unnoticed. Use it for a quick first look and
    call :func:`verify_recording` (say, on a worker thread) when it matters.
    """
    with _Source(path) as source:
        reader = _Reader(source, verify=verify)
        history: RunHistory | None = None
        for f in reader.checked():
            if history is None:
                history = _first_history(reader, f)
                if history is None:
                    break
                continue
            if f.kind == codec.KIND_CHUNK:
                problem = _copy_chunk(source.view, f, history)
                if problem:
                    reader.stop(f.offset, f"{_record_name(f.kind, f.rows)} cannot be read: {problem}")
                continue
            try:
                history.add(codec.unpack(reader.payload(f)))
            except ProtocolError as exc:
                reader.stop(f.offset, f"{_record_name(f.kind, f.rows)} cannot be read ({exc})")
        if history is None:
            why = f" ({reader.warnings[-1]})" if reader.warnings else ""
            raise RecordingError(
                f"{source.path} holds no readable schema record, so there is no run to replay{why}"
            )
        return Recording(history=history, warnings=reader.warnings, truncated_bytes=reader.truncated_bytes)


def _copy_chunk(view: memoryview, f: _Frame, history: RunHistory) -> str:
    """Append a chunk's steps to ``history`` straight from the file; the problem, or ""."""
    if f.columns is None:
        return f.problem or "its layout is malformed"
    if f.run_id != history.run_id:
        return f"it belongs to run {f.run_id!r}, not {history.run_id}"
    if f.width != history.steps.width:
        return f"it is {f.width} channels wide but the run's schema has {history.steps.width}"
    n = f.rows
    seq, step, epoch, time = (
        np.frombuffer(view, dtype=dtype, count=n, offset=at)
        for (_, dtype, _), at in zip(_CHUNK_COLUMNS, f.columns)
    )
    if n and not np.isfinite(time).all():
        return "its time column holds non-finite values"
    values = np.frombuffer(view, dtype="<f4", count=n * f.width, offset=f.columns[4]).reshape(n, f.width)
    history.steps.extend(StepChunk(history.run_id, seq, step, epoch, time, values))
    return ""


def _first_history(reader: _Reader, f: _Frame) -> RunHistory | None:
    """The run's history from the first record, which must be its schema."""
    try:
        msg = codec.unpack(reader.payload(f))
    except ProtocolError as exc:
        reader.stop(f.offset, f"the schema record does not decode ({exc})")
        return None
    if not isinstance(msg, Schema):
        raise RecordingError(
            f"{reader.path} starts with {_record_name(f.kind, f.rows)} instead of the run's schema: "
            "it is not a complete recording"
        )
    history = RunHistory(msg)
    history.steps = StepColumns(msg.width, capacity=reader.chunk_rows())
    return history


def verify_recording(path: str | os.PathLike[str]) -> list[str]:
    """Check every record's CRC without loading anything; the warnings (empty: all good).

    Raises :class:`RecordingError` when the file is not a recording.
    """
    with _Source(path) as source:
        reader = _Reader(source)
        for _ in reader.checked():
            pass
        return reader.warnings
