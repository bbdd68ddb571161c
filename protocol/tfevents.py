"""TensorBoard event files written by hand: TFRecord framing and ``Event`` protobufs.

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of TFRecords, each
``u64 length | u32 masked CRC-32C of the length | data | u32 masked CRC-32C of the data``
(little-endian), where each record's data is a serialized ``tensorflow.Event``::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

This module encodes exactly that subset, so export needs neither tensorboard, tensorflow
nor protobuf. :class:`ScalarEventEncoder` writes one event per training step holding every
exported channel as a scalar; for a fixed set of tags each event has a fixed layout (only
the step's varint length varies), so whole blocks of steps are laid out and checksummed
with numpy instead of byte by byte in Python.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, reflected
FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")
# Bytes of framed records encoded per numpy block (bounds the memory one block takes).
_BLOCK_BYTES = 32 << 20


def _crc32c_table() -> np.ndarray:
    """The 256-entry CRC-32C table, built for all bytes at once."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(CRC32C_POLYNOMIAL), table >> 1).astype(np.uint32)
    return table


CRC32C_TABLE = _crc32c_table()
_TABLE = [int(x) for x in CRC32C_TABLE]


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc`` (the checksum TFRecords use)."""
    table = _TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _mask_crcs(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint32)
    return (((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(_MASK_DELTA)).astype(np.uint32)


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (length, its masked CRC, data, its masked CRC)."""
    length = _U64.pack(len(data))
    return length + _U32.pack(mask_crc(crc32c(length))) + data + _U32.pack(mask_crc(crc32c(data)))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; a negative int64 takes ten bytes (two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def scalar_value(tag: str, value: float) -> bytes:
    """One ``Summary.Value`` holding a ``simple_value`` (float32; NaN and Inf kept)."""
    return _length_delimited(1, tag.encode("utf-8")) + b"\x15" + _F32.pack(value)


def event(wall_time: float, step: int, *, file_version: str = "",
          scalars: Sequence[tuple[str, float]] = ()) -> bytes:
    """One serialized ``Event``: its wall time, step, and a file version or scalar values."""
    out = b"\x09" + _F64.pack(wall_time) + b"\x10" + varint(step)
    if file_version:
        out += _length_delimited(3, file_version.encode("utf-8"))
    if scalars:
        summary = b"".join(_length_delimited(1, scalar_value(tag, v)) for tag, v in scalars)
        out += _length_delimited(5, summary)
    return out


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each int64 takes as a varint (1..10)."""
    unsigned = values.astype(np.int64).view(np.uint64)
    lengths = np.ones(unsigned.shape, dtype=np.int64)
    for k in range(1, 10):
        lengths += unsigned >= np.uint64(1 << (7 * k))
    return lengths


class ScalarEventEncoder:
    """Encodes blocks of steps as framed ``Event`` records, one per step, all tags each.

    A step's event is ``wall_time | step | summary`` and, for a fixed list of tags, only
    the wall time, the step's varint and the 4 bytes of each value change from step to
    step. The encoder lays a template out once and fills those bytes column-wise. CRC-32C
    is linear, so a record's checksum is the template's checksum XOR one precomputed
    table entry per variable byte (its contribution at its distance from the end): one
    numpy gather per block instead of a Python loop over every byte.
    """

    def __init__(self, tags: Sequence[str]) -> None:
        if not tags:
            raise ValueError("a scalar event needs at least one tag")
        self.tags = tuple(tags)
        parts, float_offsets, at = [], [], 0
        for tag in self.tags:
            value = scalar_value(tag, 0.0)
            head = varint(1 << 3 | 2) + varint(len(value))
            parts.append(head + value)
            float_offsets.append(at + len(head) + len(value) - 4)
            at += len(head) + len(value)
        summary = b"".join(parts)
        self._summary_field = b"\x2a" + varint(len(summary)) + summary
        self._summary_len = len(summary)
        self._float_offsets = np.asarray(float_offsets, dtype=np.int64)
        self._layouts: dict[int, _Layout] = {}

    def record_size(self, step_bytes: int) -> int:
        """Bytes of one framed record whose step varint takes ``step_bytes`` bytes."""
        return 12 + 9 + 1 + step_bytes + len(self._summary_field) + 4

    def encode(self, wall_time: np.ndarray, step: np.ndarray, values: np.ndarray) -> bytes:
        """Framed records for ``n`` steps: ``wall_time`` f64[n], ``step`` i64[n], ``values`` f32[n, tags]."""
        n = int(step.shape[0])
        if values.shape != (n, len(self.tags)):
            raise ValueError(f"values have shape {values.shape}; expected ({n}, {len(self.tags)})")
        if n == 0:
            return b""
        lengths = _varint_lengths(step)
        cuts = np.flatnonzero(np.diff(lengths)) + 1
        out = []
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            a, b = int(a), int(b)
            layout = self._layout(int(lengths[a]))
            rows = max(1, _BLOCK_BYTES // layout.size)
            for start in range(a, b, rows):
                stop = min(b, start + rows)
                out.append(layout.encode(wall_time[start:stop], step[start:stop], values[start:stop]))
        return b"".join(out)

    def _layout(self, step_bytes: int) -> _Layout:
        layout = self._layouts.get(step_bytes)
        if layout is None:
            layout = self._layouts[step_bytes] = _Layout(
                self._summary_field, self._summary_len, self._float_offsets, step_bytes
            )
        return layout


class _Layout:
    """The fixed byte layout (and CRC tables) of a record whose step takes ``step_bytes`` bytes.

    A record is a numpy structured row: the constant bytes come from a template, the wall
    time and each float are fields at their byte offsets, so filling a block is one
    strided copy per channel rather than a byte scatter.
    """

    def __init__(self, summary_field: bytes, summary_len: int, float_offsets: np.ndarray, step_bytes: int) -> None:
        self.step_bytes = step_bytes
        payload_len = 9 + 1 + step_bytes + len(summary_field)
        self.payload_len = payload_len
        self.size = 12 + payload_len + 4
        payload = b"\x09" + bytes(8) + b"\x10" + bytes(step_bytes) + summary_field
        length = _U64.pack(payload_len)
        record = length + _U32.pack(mask_crc(crc32c(length))) + payload + bytes(4)
        self.template = np.frombuffer(record, dtype=np.uint8)
        self.template_crc = crc32c(payload)
        self.step_cols = 12 + np.arange(10, 10 + step_bytes)
        float_starts = 12 + payload_len - summary_len + float_offsets
        self.channels = len(float_offsets)
        self.dtype = np.dtype({
            "names": ["wall_time", "crc", *(f"v{i}" for i in range(self.channels))],
            "formats": ["<f8", "<u4", *(["<f4"] * self.channels)],
            "offsets": [13, self.size - 4, *float_starts.tolist()],
            "itemsize": self.size,
        })
        time_cols = np.arange(1, 9)
        step_cols = np.arange(10, 10 + step_bytes)
        float_cols = (float_starts[:, None] - 12 + np.arange(4)[None, :]).ravel()
        # Variable bytes in the order the CRC gathers them: wall time, step, the floats.
        variable = np.concatenate([time_cols, step_cols, float_cols])
        self.tables = _contribution_tables(payload_len, variable)
        self.table_rows = (np.arange(variable.shape[0], dtype=np.int32) * 256)[None, :]

    def encode(self, wall_time: np.ndarray, step: np.ndarray, values: np.ndarray) -> bytes:
        n = step.shape[0]
        raw = np.empty((n, self.size), dtype=np.uint8)
        raw[:] = self.template
        records = raw.view(self.dtype).reshape(n)
        wall = np.ascontiguousarray(wall_time, dtype="<f8")
        floats = np.ascontiguousarray(values, dtype="<f4")
        records["wall_time"] = wall
        for i in range(self.channels):
            records[f"v{i}"] = floats[:, i]
        unsigned = np.ascontiguousarray(step, dtype="<i8").view(np.uint64)
        step_bytes = np.empty((n, self.step_bytes), dtype=np.uint8)
        for k, col in enumerate(self.step_cols):
            byte = (unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)
            if k < self.step_bytes - 1:
                byte |= np.uint64(0x80)
            step_bytes[:, k] = byte
            raw[:, col] = step_bytes[:, k]
        variable = np.concatenate([wall.view(np.uint8).reshape(n, 8), step_bytes,
                                   floats.view(np.uint8).reshape(n, 4 * self.channels)], axis=1)
        gathered = self.tables[self.table_rows + variable]
        crcs = np.bitwise_xor.reduce(gathered, axis=1) ^ np.uint32(self.template_crc)
        records["crc"] = _mask_crcs(crcs)
        return raw.tobytes()


def _contribution_tables(length: int, positions: np.ndarray) -> np.ndarray:
    """For each position, the CRC-32C contribution of each byte value there, flattened.

    The CRC register after a byte ``v`` followed by ``d`` zero bytes (starting from zero)
    is what byte ``v`` at distance ``d`` from the end adds to any message's CRC.
    """
    distances = length - 1 - positions
    order = np.argsort(distances, kind="stable")
    tables = np.empty((positions.shape[0], 256), dtype=np.uint32)
    register = CRC32C_TABLE.copy()
    done = 0
    for i in order:
        while done < distances[i]:
            register = CRC32C_TABLE[register & np.uint32(0xFF)] ^ (register >> np.uint32(8))
            done += 1
        tables[i] = register
    return tables.ravel()
