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
happened, :class:`StepChunk` records (a chunk's steps column by column: seq u64, step i64,
epoch i32, time f64, then the ``(n, width)`` float32 values row by row), epoch summaries,
events, the dataset report and previews.

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
from .messages import Message, Schema, StepChunk, check_run_id
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

# Chunks at least this large are checksummed on worker threads while the reader copies.
_PARALLEL_CRC_BYTES = 1 << 20
_U32 = struct.Struct("<I")


class RecordingError(ProtocolError):
    """A file that is not a readable recording: not one at all, or from a newer format."""


def file_header() -> bytes:
    """The 16 bytes every recording starts with (this format and protocol version)."""
    return FILE_HEADER.pack(FORMAT_MAGIC, FORMAT_MAJOR, FORMAT_MINOR, PROTOCOL_MAJOR, PROTOCOL_MINOR)


def frame(payload: bytes) -> bytes:
    """One framed record: length, CRC-32 and the payload."""
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


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
                rows, payload = 0, item
            else:
                chunk = item.chunk(run_id) if isinstance(item, _StepBuffer) else item
                rows, payload = len(chunk), codec.pack(chunk)
            if self.error is None:
                try:
                    self._write_all(frame(payload))
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

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

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


@dataclass(frozen=True)
class _Frame:
    offset: int  # of the frame header in the file
    length: int  # of the payload
    crc: int
    kind: int  # codec kind code, 0 when the payload is too short to tell
    rows: int  # steps of a chunk record, -1 when not a chunk or unknown


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
            self._map.close()

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


def _peek(view: memoryview, start: int, length: int) -> tuple[int, int]:
    """(kind, chunk rows) of a packed message from its first bytes; (0, -1) when unknown."""
    # Layout of codec.pack: u32 count, u32 len0, head (magic 2, major, minor, kind, 3 pad),
    # u32 len1, msgpack body {"run_id", "n", "width"}, ...
    if length < 13:
        return 0, -1
    kind = view[start + 12]
    if kind != codec.KIND_CHUNK or length < 20:
        return kind, -1
    (body_len,) = _U32.unpack_from(view, start + 16)
    if body_len > 4096 or 20 + body_len > length:
        return kind, -1
    try:
        body = msgpack.unpackb(bytes(view[start + 20 : start + 20 + body_len]), raw=False)
    except Exception:  # a damaged body: its size is simply unknown
        return kind, -1
    rows = body.get("n") if isinstance(body, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= codec.MAX_CHUNK_ROWS:
        return kind, -1
    return kind, rows


def _record_name(kind: int, rows: int) -> str:
    if kind == codec.KIND_CHUNK and rows >= 0:
        return f"a chunk of {rows} steps"
    name = codec.KIND_NAMES.get(kind)
    return f"a {name} record" if name else "a record of unknown kind"


class _Reader:
    """Walks a recording's frames, checks each CRC, and notes where and why reading stopped.

    A problem at the end of the file (a frame cut short, or a last frame failing its CRC)
    is a torn tail; a problem with more frames after it is corruption in the middle.
    """

    def __init__(self, source: _Source, verify: bool = True) -> None:
        self.source = source
        self.verify = verify
        self.path = source.path
        self.size = len(source.view)
        self.warnings: list[str] = []
        self.stopped_at: int | None = None
        _check_header(self.path, source.view)
        self.frames: list[_Frame] = []
        self._end_problem = ""
        self._end_torn = False
        self._end_rows = -1
        self._index()

    @property
    def truncated_bytes(self) -> int:
        """Bytes from where reading stopped to the end of the file."""
        return 0 if self.stopped_at is None else self.size - self.stopped_at

    def chunk_rows(self) -> int:
        """Steps in all complete chunk frames (what to preallocate)."""
        return sum(max(0, f.rows) for f in self.frames if f.kind == codec.KIND_CHUNK)

    def _index(self) -> None:
        view, size = self.source.view, self.size
        offset = FILE_HEADER.size
        while offset < size:
            if size - offset < FRAME_HEADER.size:
                self._end_torn = True
                self._end_problem = (
                    f"a frame header is cut after {size - offset} of {FRAME_HEADER.size} bytes"
                )
                break
            length, crc = FRAME_HEADER.unpack_from(view, offset)
            start = offset + FRAME_HEADER.size
            if not 4 <= length <= MAX_RECORD_BYTES:
                self._end_problem = f"its length field says {length} bytes, which no record has"
                break
            kind, rows = _peek(view, start, min(length, size - start))
            if start + length > size:
                self._end_torn = True
                self._end_rows = rows
                self._end_problem = (
                    f"{_record_name(kind, rows)} is cut after {size - start} of {length} bytes"
                )
                break
            self.frames.append(_Frame(offset, length, crc, kind, rows))
            offset = start + length
        self._end = offset

    def stop(self, offset: int, reason: str, torn: bool = False, rows: int = -1) -> None:
        """Record that reading ends at ``offset`` and say why in a warning."""
        self.stopped_at = offset
        lost = self.size - offset
        if torn:
            steps = (
                f"{rows} steps lost" if rows > 0 else ("no steps lost" if rows == 0 else "steps lost unknown")
            )
            self.warnings.append(
                f"{self.path}: torn tail at offset {offset}: {reason}; dropped the last {lost} bytes ({steps})"
            )
        else:
            self.warnings.append(
                f"{self.path}: corrupt record at offset {offset}: {reason}; stopped reading there, {lost} bytes not read"
            )

    def payloads(self) -> Iterator[tuple[_Frame, memoryview]]:
        """Each frame whose CRC holds, with a view of its payload, in file order."""
        view = self.source.view
        checks, pool = self._start_crcs()
        try:
            for i, f in enumerate(self.frames):
                check = checks[i]
                crc = check if isinstance(check, int) else check.result()
                if crc != f.crc:
                    last = i == len(self.frames) - 1 and self._end == self.size
                    self.stop(f.offset, f"{_record_name(f.kind, f.rows)} fails its CRC check", last, f.rows)
                    return
                start = f.offset + FRAME_HEADER.size
                payload = view[start : start + f.length]
                try:
                    yield f, payload
                finally:
                    payload.release()
                if self.stopped_at is not None:
                    return
            if self._end < self.size:
                self.stop(self._end, self._end_problem, self._end_torn, self._end_rows)
        finally:
            if pool is not None:
                for check in checks:
                    if not isinstance(check, int):
                        check.cancel()
                pool.shutdown(wait=True)

    def _start_crcs(self) -> tuple[list, ThreadPoolExecutor | None]:
        """CRC of every payload; large ones on worker threads (zlib releases the GIL), so
        checksumming overlaps with the caller copying earlier chunks."""
        view = self.source.view
        last = len(self.frames) - 1
        skip = [
            not self.verify and f.kind == codec.KIND_CHUNK and i != last for i, f in enumerate(self.frames)
        ]
        big = sum(
            1 for f, skipped in zip(self.frames, skip) if f.length >= _PARALLEL_CRC_BYTES and not skipped
        )
        workers = min(4, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="octa-crc") if big > 1 else None
        checks: list = []
        for f, skipped in zip(self.frames, skip):
            start = f.offset + FRAME_HEADER.size
            if skipped:
                checks.append(f.crc)
            elif pool is not None and f.length >= _PARALLEL_CRC_BYTES:
                checks.append(pool.submit(zlib.crc32, view[start : start + f.length]))
            else:
                checks.append(zlib.crc32(view[start : start + f.length]))
        return checks, pool


def iter_recording(path: str | os.PathLike[str], warnings: list[str] | None = None) -> Iterator[Message]:
    """Every record of a recording in write order (steps as :class:`StepChunk`).

    Stops at a torn tail or at corruption; pass a list as ``warnings`` to learn where and
    why. Raises :class:`RecordingError` when the file is not a recording.
    """
    with _Source(path) as source:
        reader = _Reader(source)
        try:
            for f, payload in reader.payloads():
                try:
                    msg = codec.unpack(payload)
                except ProtocolError as exc:
                    reader.stop(f.offset, f"{_record_name(f.kind, f.rows)} does not decode ({exc})")
                    break
                yield msg
        finally:
            if warnings is not None:
                warnings.extend(reader.warnings)


def _chunk_columns(payload: memoryview, width: int, run_id: str) -> tuple[np.ndarray, ...]:
    """The five columns of a packed chunk as views into ``payload``: validated like
    ``codec.unpack`` does, but without copying the values."""
    (count,) = _U32.unpack_from(payload, 0)
    if count != 7:
        raise ProtocolError(f"step chunk has {count} frames; expected 7")
    parts: list[memoryview] = []
    at = 4
    for i in range(count):
        if at + 4 > len(payload):
            raise ProtocolError(f"step chunk ends inside the length of frame {i}")
        (size,) = _U32.unpack_from(payload, at)
        at += 4
        if at + size > len(payload):
            raise ProtocolError(f"step chunk frame {i} claims {size} bytes; only {len(payload) - at} remain")
        parts.append(payload[at : at + size])
        at += size
    if at != len(payload):
        raise ProtocolError(f"step chunk has {len(payload) - at} trailing bytes")
    if len(parts[0]) != codec.HEAD.size:
        raise ProtocolError(f"step chunk head is {len(parts[0])} bytes; expected {codec.HEAD.size}")
    magic, major, minor, kind = codec.HEAD.unpack_from(parts[0])
    if magic != codec.MAGIC or kind != codec.KIND_CHUNK:
        raise ProtocolError(f"not a step chunk (magic {magic!r}, kind {kind})")
    if major != PROTOCOL_MAJOR:
        raise ProtocolError(
            f"step chunk is protocol {major}.{minor}; this side speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
        )
    try:
        body = msgpack.unpackb(
            bytes(parts[1]), raw=False, max_str_len=codec.MAX_STR, max_map_len=codec.MAX_MAP
        )
    except Exception as exc:  # msgpack raises several types on damaged input
        raise ProtocolError(f"step chunk body is not valid msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"step chunk body must be a map, got {type(body).__name__}")
    chunk_run = check_run_id(body.get("run_id"))
    if chunk_run != run_id:
        raise ProtocolError(f"step chunk of run {chunk_run} does not belong to run {run_id}")
    n, chunk_width = body.get("n"), body.get("width")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= codec.MAX_CHUNK_ROWS:
        raise ProtocolError(f"step chunk row count {n!r} is not 0..{codec.MAX_CHUNK_ROWS}")
    if chunk_width != width:
        raise ProtocolError(f"step chunk is {chunk_width} channels wide but the run's schema has {width}")
    columns = []
    for part, dtype, items, name in zip(
        parts[2:],
        ("<u8", "<i8", "<i4", "<f8", "<f4"),
        (n, n, n, n, n * width),
        ("seq", "step", "epoch", "time", "values"),
    ):
        expected = items * np.dtype(dtype).itemsize
        if len(part) != expected:
            raise ProtocolError(f"step chunk {name} column is {len(part)} bytes; expected {expected}")
        columns.append(np.frombuffer(part, dtype=dtype))
    if n and not np.all(np.isfinite(columns[3])):
        raise ProtocolError("step chunk time column holds non-finite values")
    columns[4] = columns[4].reshape(n, width)
    return tuple(columns)


def read_recording(path: str | os.PathLike[str], *, verify: bool = True) -> Recording:
    """Load a whole recording into a :class:`RunHistory`, as fast as memory allows.

    Step columns are preallocated to the file's total step count (known from the frame
    headers) and each chunk is copied once, straight from the memory-mapped file. Raises
    :class:`RecordingError` when the file is not a recording or holds no readable schema.

    ``verify=False`` skips the CRC of every step chunk but the last (checksumming is most
    of the time it takes to open a large file): the file's structure, every other record
    and the tail are still checked, so a torn tail is still found, but a flipped bit in
    the middle of a chunk's values would go unnoticed. Use it for a quick first look and
    read again with ``verify=True`` (or :func:`verify_recording`) when it matters.
    """
    with _Source(path) as source:
        reader = _Reader(source, verify=verify)
        history: RunHistory | None = None
        for f, payload in reader.payloads():
            if history is None:
                history = _first_history(reader, f, payload)
                if history is None:
                    break
                continue
            try:
                if f.kind == codec.KIND_CHUNK:
                    columns = _chunk_columns(payload, history.steps.width, history.run_id)
                    history.steps.extend(StepChunk(history.run_id, *columns))
                    del columns  # views into the mapped file: drop them before it closes
                else:
                    history.add(codec.unpack(payload))
            except ProtocolError as exc:
                reader.stop(f.offset, f"{_record_name(f.kind, f.rows)} cannot be read ({exc})")
        if history is None:
            why = f" ({reader.warnings[-1]})" if reader.warnings else ""
            raise RecordingError(
                f"{source.path} holds no readable schema record, so there is no run to replay{why}"
            )
        return Recording(history=history, warnings=reader.warnings, truncated_bytes=reader.truncated_bytes)


def _first_history(reader: _Reader, f: _Frame, payload: memoryview) -> RunHistory | None:
    """The run's history from the first record, which must be its schema."""
    try:
        msg = codec.unpack(payload)
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
        for _ in reader.payloads():
            pass
        return reader.warnings
