"""Messages to wire frames and back: msgpack for records, raw float32 for vectors.

Every message is a list of frames. Frame 0 starts with an 8-byte head: magic ``b"OC"``,
protocol major and minor, a kind code, three reserved bytes. A step is one frame: the
head, a fixed binary header (run token, seq, step, epoch, time) and the float32 values,
little-endian. A record is the head, a msgpack body, and raw buffers for any arrays.

No object serialisation, ever: only msgpack and raw arrays. Every size is bounded before it is trusted. Anything malformed raises
:class:`ProtocolError` with a message that names the problem; a newer minor version is
read and its unknown fields are ignored; another major version is refused.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np

from .errors import ProtocolError
from .messages import (
    Command,
    DatasetReport,
    EpochSummary,
    Event,
    FileProblem,
    Heartbeat,
    Message,
    ModelSummary,
    Preview,
    Reply,
    Schema,
    Step,
    StepChunk,
    check_run_id,
)
from .version import PROTOCOL_MAJOR, PROTOCOL_MINOR

MAGIC = b"OC"
HEAD = struct.Struct("<2sBBB3x")
STEP_HEAD = struct.Struct("<2sBBB3x8sQqid")

# Decode limits: a peer can never make us allocate more than these.
MAX_FRAMES = 8
MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_CHANNELS = 8192
MAX_STR = 65536
MAX_MAP = 1024
MAX_LIST = 1 << 20
MAX_DEPTH = 4
MAX_CHUNK_ROWS = 1 << 20
MAX_PREVIEW_SIDE = 1024

KIND_STEP = 1
KIND_CHUNK = 2
KIND_SCHEMA = 3
KIND_EPOCH = 4
KIND_EVENT = 5
KIND_DATASET = 6
KIND_PREVIEW = 7
KIND_HEARTBEAT = 8
KIND_COMMAND = 9
KIND_REPLY = 10


# --- field checks -------------------------------------------------------------------------


def _need(body: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in body:
        raise ProtocolError(f"{what}: missing field {key!r}")
    return body[key]


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > MAX_STR:
        raise ProtocolError(f"{where} is {len(value)} characters long; the limit is {MAX_STR}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where} must be an integer, got {type(value).__name__}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where} must be a number, got {type(value).__name__}")
    return float(value)


def _finite(value: Any, where: str) -> float:
    number = _float(value, where)
    if not math.isfinite(number):
        raise ProtocolError(f"{where} must be finite, got {number!r}")
    return number


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where} must be true or false, got {type(value).__name__}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"{where} must be a list of names, got {type(value).__name__}")
    if len(value) > MAX_CHANNELS:
        raise ProtocolError(f"{where} has {len(value)} names; the limit is {MAX_CHANNELS}")
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(value))


def _floats(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"{where} must be a list of numbers, got {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise ProtocolError(f"{where} has {len(value)} values; the limit is {MAX_LIST}")
    return tuple(_float(v, f"{where}[{i}]") for i, v in enumerate(value))


def _plain(value: Any, where: str, depth: int = 0) -> Any:
    """A free-form value: scalars, strings, lists and string-keyed maps, bounded in depth."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _str(value, where)
    if depth >= MAX_DEPTH:
        raise ProtocolError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_MAP:
            raise ProtocolError(f"{where} has {len(value)} items; the limit is {MAX_MAP}")
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return _map(value, where, depth + 1)
    raise ProtocolError(f"{where} has a value of unsupported type {type(value).__name__}")


def _map(value: Any, where: str, depth: int = 0) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where} must be a map, got {type(value).__name__}")
    if len(value) > MAX_MAP:
        raise ProtocolError(f"{where} has {len(value)} entries; the limit is {MAX_MAP}")
    out = {}
    for key, item in value.items():
        out[_str(key, f"{where} key")] = _plain(item, f"{where}[{key!r}]", depth)
    return out


def _metrics(value: Any, where: str) -> dict[str, float]:
    """Named numbers that may be NaN/Inf (a diverging run is data, not an error)."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where} must be a map of numbers, got {type(value).__name__}")
    if len(value) > MAX_MAP:
        raise ProtocolError(f"{where} has {len(value)} entries; the limit is {MAX_MAP}")
    return {_str(k, f"{where} key"): _float(v, f"{where}[{k!r}]") for k, v in value.items()}


def _run_id(value: Any, where: str) -> str:
    return check_run_id(_str(value, where))


def _choice(value: Any, where: str, choices: Sequence[str]) -> str:
    text = _str(value, where)
    if text not in choices:
        raise ProtocolError(f"{where} is {text!r}; expected one of {', '.join(choices)}")
    return text


# --- records ------------------------------------------------------------------------------


def _schema_body(msg: Schema) -> dict[str, Any]:
    return {
        "run_id": msg.run_id,
        "task": msg.task,
        "model": {"name": msg.model.name, "parameters": msg.model.parameters, "device": msg.model.device},
        "loss": list(msg.loss),
        "grad": list(msg.grad),
        "gradstat": list(msg.gradstat),
        "out": list(msg.out),
        "opt": list(msg.opt),
        "time": list(msg.time),
        "loss_expects_probabilities": msg.loss_expects_probabilities,
        "started_at": msg.started_at,
        "config": dict(msg.config),
    }


def _schema_from(body: Mapping[str, Any], version: tuple[int, int]) -> Schema:
    w = "schema"
    model = _map(_need(body, "model", w), "schema.model")
    schema = Schema(
        run_id=_run_id(_need(body, "run_id", w), "schema.run_id"),
        task=_str(_need(body, "task", w), "schema.task"),
        model=ModelSummary(
            name=_str(_need(model, "name", "schema.model"), "schema.model.name"),
            parameters=_int(_need(model, "parameters", "schema.model"), "schema.model.parameters"),
            device=_str(model.get("device", "cpu"), "schema.model.device"),
        ),
        loss=_names(_need(body, "loss", w), "schema.loss"),
        grad=_names(_need(body, "grad", w), "schema.grad"),
        gradstat=_names(body.get("gradstat", []), "schema.gradstat"),
        out=_names(body.get("out", []), "schema.out"),
        opt=_names(body.get("opt", []), "schema.opt"),
        time=_names(body.get("time", []), "schema.time"),
        loss_expects_probabilities=_bool(body.get("loss_expects_probabilities", True), "schema.loss_expects_probabilities"),
        started_at=_finite(body.get("started_at", 0.0), "schema.started_at"),
        config=_map(body.get("config", {}), "schema.config"),
        version=version,
    )
    if schema.width > MAX_CHANNELS:
        raise ProtocolError(f"schema has {schema.width} channels; the limit is {MAX_CHANNELS}")
    if len(set(schema.channels)) != schema.width:
        raise ProtocolError("schema names the same channel twice")
    return schema


def _epoch_body(msg: EpochSummary) -> dict[str, Any]:
    return {
        "run_id": msg.run_id,
        "epoch": msg.epoch,
        "step": msg.step,
        "time": msg.time,
        "train": dict(msg.train),
        "val": dict(msg.val),
    }


def _epoch_from(body: Mapping[str, Any], version: tuple[int, int]) -> EpochSummary:
    w = "epoch summary"
    return EpochSummary(
        run_id=_run_id(_need(body, "run_id", w), f"{w}.run_id"),
        epoch=_int(_need(body, "epoch", w), f"{w}.epoch"),
        step=_int(_need(body, "step", w), f"{w}.step"),
        time=_finite(_need(body, "time", w), f"{w}.time"),
        train=_metrics(body.get("train", {}), f"{w}.train"),
        val=_metrics(body.get("val", {}), f"{w}.val"),
    )


def _event_body(msg: Event) -> dict[str, Any]:
    return {
        "run_id": msg.run_id,
        "step": msg.step,
        "time": msg.time,
        "kind": msg.kind,
        "message": msg.message,
        "data": dict(msg.data),
    }


def _event_from(body: Mapping[str, Any], version: tuple[int, int]) -> Event:
    w = "event"
    return Event(
        run_id=_run_id(_need(body, "run_id", w), f"{w}.run_id"),
        step=_int(_need(body, "step", w), f"{w}.step"),
        time=_finite(_need(body, "time", w), f"{w}.time"),
        # Unknown kinds are kept: a newer trainer may add some.
        kind=_str(_need(body, "kind", w), f"{w}.kind"),
        message=_str(_need(body, "message", w), f"{w}.message"),
        data=_map(body.get("data", {}), f"{w}.data"),
    )


def _dataset_body(msg: DatasetReport) -> dict[str, Any]:
    return {
        "run_id": msg.run_id,
        "source": msg.source,
        "pairs": msg.pairs,
        "unique_mask_values": msg.unique_mask_values,
        "mask_values": list(msg.mask_values),
        "foreground_ratio": msg.foreground_ratio,
        "foreground_ratios": list(msg.foreground_ratios),
        "suggested_pos_weight": msg.suggested_pos_weight,
        "problems": [[p.file, p.problem] for p in msg.problems],
        "image_size": list(msg.image_size),
        "train_images": msg.train_images,
        "val_images": msg.val_images,
        "target_mean": msg.target_mean,
        "target_var": msg.target_var,
    }


def _dataset_from(body: Mapping[str, Any], version: tuple[int, int]) -> DatasetReport:
    w = "dataset report"
    problems_raw = body.get("problems", [])
    if not isinstance(problems_raw, (list, tuple)) or len(problems_raw) > MAX_LIST:
        raise ProtocolError(f"{w}.problems must be a list of [file, problem] pairs")
    problems = []
    for i, item in enumerate(problems_raw):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ProtocolError(f"{w}.problems[{i}] must be a [file, problem] pair")
        problems.append(FileProblem(_str(item[0], f"{w}.problems[{i}].file"), _str(item[1], f"{w}.problems[{i}].problem")))
    size = body.get("image_size", [0, 0])
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ProtocolError(f"{w}.image_size must be [height, width]")
    return DatasetReport(
        run_id=_run_id(_need(body, "run_id", w), f"{w}.run_id"),
        source=_str(_need(body, "source", w), f"{w}.source"),
        pairs=_int(_need(body, "pairs", w), f"{w}.pairs"),
        unique_mask_values=_int(_need(body, "unique_mask_values", w), f"{w}.unique_mask_values"),
        mask_values=_floats(body.get("mask_values", []), f"{w}.mask_values"),
        foreground_ratio=_float(_need(body, "foreground_ratio", w), f"{w}.foreground_ratio"),
        foreground_ratios=_floats(body.get("foreground_ratios", []), f"{w}.foreground_ratios"),
        suggested_pos_weight=_float(_need(body, "suggested_pos_weight", w), f"{w}.suggested_pos_weight"),
        problems=tuple(problems),
        image_size=(_int(size[0], f"{w}.image_size[0]"), _int(size[1], f"{w}.image_size[1]")),
        train_images=_int(body.get("train_images", 0), f"{w}.train_images"),
        val_images=_int(body.get("val_images", 0), f"{w}.val_images"),
        target_mean=_float(body.get("target_mean", float("nan")), f"{w}.target_mean"),
        target_var=_float(body.get("target_var", float("nan")), f"{w}.target_var"),
    )


def _heartbeat_body(msg: Heartbeat) -> dict[str, Any]:
    return {
        "run_id": msg.run_id,
        "sender": msg.sender,
        "time": msg.time,
        "step": msg.step,
        "state": msg.state,
        "monitors": msg.monitors,
        "last_seq": msg.last_seq,
    }


def _heartbeat_from(body: Mapping[str, Any], version: tuple[int, int]) -> Heartbeat:
    w = "heartbeat"
    return Heartbeat(
        run_id=_run_id(_need(body, "run_id", w), f"{w}.run_id"),
        sender=_choice(_need(body, "sender", w), f"{w}.sender", ("trainer", "monitor")),
        time=_finite(_need(body, "time", w), f"{w}.time"),
        step=_int(body.get("step", 0), f"{w}.step"),
        state=_str(body.get("state", "running"), f"{w}.state"),
        monitors=_int(body.get("monitors", 0), f"{w}.monitors"),
        last_seq=_int(body.get("last_seq", 0), f"{w}.last_seq"),
    )


def _command_body(msg: Command) -> dict[str, Any]:
    return {"op": msg.op, "args": dict(msg.args), "request_id": msg.request_id}


def _command_from(body: Mapping[str, Any], version: tuple[int, int]) -> Command:
    w = "command"
    return Command(
        op=_str(_need(body, "op", w), f"{w}.op"),
        args=_map(body.get("args", {}), f"{w}.args"),
        request_id=_str(body.get("request_id", ""), f"{w}.request_id"),
    )


def _reply_body(msg: Reply) -> dict[str, Any]:
    return {
        "request_id": msg.request_id,
        "status": msg.status,
        "reason": msg.reason,
        "step": msg.step,
        "data": dict(msg.data),
    }


def _reply_from(body: Mapping[str, Any], version: tuple[int, int]) -> Reply:
    w = "reply"
    return Reply(
        request_id=_str(_need(body, "request_id", w), f"{w}.request_id"),
        status=_choice(_need(body, "status", w), f"{w}.status", ("ok", "error")),
        reason=_str(body.get("reason", ""), f"{w}.reason"),
        step=_int(body.get("step", -1), f"{w}.step"),
        data=_map(body.get("data", {}), f"{w}.data"),
    )


_RECORDS: dict[type, tuple[int, Callable[[Any], dict[str, Any]]]] = {
    Schema: (KIND_SCHEMA, _schema_body),
    EpochSummary: (KIND_EPOCH, _epoch_body),
    Event: (KIND_EVENT, _event_body),
    DatasetReport: (KIND_DATASET, _dataset_body),
    Heartbeat: (KIND_HEARTBEAT, _heartbeat_body),
    Command: (KIND_COMMAND, _command_body),
    Reply: (KIND_REPLY, _reply_body),
}
_RECORD_READERS: dict[int, Callable[[Mapping[str, Any], tuple[int, int]], Message]] = {
    KIND_SCHEMA: _schema_from,
    KIND_EPOCH: _epoch_from,
    KIND_EVENT: _event_from,
    KIND_DATASET: _dataset_from,
    KIND_HEARTBEAT: _heartbeat_from,
    KIND_COMMAND: _command_from,
    KIND_REPLY: _reply_from,
}
KIND_NAMES = {
    KIND_STEP: "step",
    KIND_CHUNK: "step chunk",
    KIND_SCHEMA: "schema",
    KIND_EPOCH: "epoch summary",
    KIND_EVENT: "event",
    KIND_DATASET: "dataset report",
    KIND_PREVIEW: "preview",
    KIND_HEARTBEAT: "heartbeat",
    KIND_COMMAND: "command",
    KIND_REPLY: "reply",
}


_LITTLE_ENDIAN = sys.byteorder == "little"


def _head(kind: int) -> bytes:
    return HEAD.pack(MAGIC, PROTOCOL_MAJOR, PROTOCOL_MINOR, kind)


def _pack_body(body: Mapping[str, Any]) -> bytes:
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message body: {exc}") from exc


def _unpack_body(frame: bytes, what: str) -> dict[str, Any]:
    if len(frame) > MAX_BODY_BYTES:
        raise ProtocolError(f"{what} body is {len(frame)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        body = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_STR,
            max_bin_len=MAX_BODY_BYTES,
            max_array_len=MAX_LIST,
            max_map_len=MAX_MAP,
            max_ext_len=0,
        )
    except ValueError as exc:  # msgpack's ExtraData, FormatError, StackError, limits
        raise ProtocolError(f"{what} body is not valid msgpack: {exc}") from exc
    except Exception as exc:  # msgpack raises a few other types on hostile input
        raise ProtocolError(f"{what} body could not be decoded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{what} body must be a map, got {type(body).__name__}")
    return body


# --- public API ---------------------------------------------------------------------------


def encode_step(run_token: bytes, seq: int, step: int, epoch: int, time: float, values: np.ndarray) -> bytes:
    """The one frame of a step: the fast path that the probe calls every step.

    ``run_token`` is ``bytes.fromhex(run_id)``; ``values`` must be float32 (it is not copied
    when it already is little-endian and contiguous).
    """
    return STEP_HEAD.pack(MAGIC, PROTOCOL_MAJOR, PROTOCOL_MINOR, KIND_STEP, run_token, seq, step, epoch, time) + (
        values.astype("<f4", copy=False).tobytes()
    )


def _chunk_frames(msg: StepChunk) -> list[bytes]:
    n = len(msg)
    width = int(msg.values.shape[1]) if msg.values.ndim == 2 else 0
    body = {"run_id": msg.run_id, "n": n, "width": width}
    return [
        _head(KIND_CHUNK),
        _pack_body(body),
        np.ascontiguousarray(msg.seq, dtype="<u8").tobytes(),
        np.ascontiguousarray(msg.step, dtype="<i8").tobytes(),
        np.ascontiguousarray(msg.epoch, dtype="<i4").tobytes(),
        np.ascontiguousarray(msg.time, dtype="<f8").tobytes(),
        np.ascontiguousarray(msg.values, dtype="<f4").tobytes(),
    ]


def chunk_frames_zero_copy(msg: StepChunk) -> list[Any]:
    """A chunk's wire frames with its arrays as buffers, not copies (for ``send(copy=False)``).

    The frames are the same bytes as :func:`encode` gives on a little-endian machine, but
    the arrays are handed to ZeroMQ as they are: a trainer answering ``history`` sends
    megabytes of rows it never changes again, and copying them twice (a chunk, then its
    bytes) is most of what serving a late joiner costs the training thread.
    """
    if not _LITTLE_ENDIAN:
        return _chunk_frames(msg)
    n = len(msg)
    width = int(msg.values.shape[1]) if msg.values.ndim == 2 else 0
    body = {"run_id": msg.run_id, "n": n, "width": width}
    arrays = (
        np.ascontiguousarray(msg.seq, dtype="<u8"),
        np.ascontiguousarray(msg.step, dtype="<i8"),
        np.ascontiguousarray(msg.epoch, dtype="<i4"),
        np.ascontiguousarray(msg.time, dtype="<f8"),
        np.ascontiguousarray(msg.values, dtype="<f4"),
    )
    return [_head(KIND_CHUNK), _pack_body(body), *(memoryview(a).cast("B") for a in arrays)]


def _preview_frames(msg: Preview) -> list[bytes]:
    arrays = (msg.image, msg.target, msg.prediction)
    body = {
        "run_id": msg.run_id,
        "step": msg.step,
        "epoch": msg.epoch,
        "shapes": [list(a.shape) for a in arrays],
    }
    return [_head(KIND_PREVIEW), _pack_body(body)] + [np.ascontiguousarray(a, dtype=np.uint8).tobytes() for a in arrays]


def encode(msg: Message) -> list[bytes]:
    """The wire frames of any message."""
    if isinstance(msg, Step):
        return [encode_step(bytes.fromhex(msg.run_id), msg.seq, msg.step, msg.epoch, msg.time, msg.values)]
    if isinstance(msg, StepChunk):
        return _chunk_frames(msg)
    if isinstance(msg, Preview):
        return _preview_frames(msg)
    entry = _RECORDS.get(type(msg))
    if entry is None:
        raise ProtocolError(f"cannot encode {type(msg).__name__}: not a protocol message")
    kind, to_body = entry
    return [_head(kind), _pack_body(to_body(msg))]


def _decode_step(frame: bytes) -> Step:
    if len(frame) < STEP_HEAD.size:
        raise ProtocolError(f"step frame is {len(frame)} bytes; its header alone is {STEP_HEAD.size}")
    _, _, _, _, token, seq, step, epoch, time = STEP_HEAD.unpack_from(frame)
    payload = len(frame) - STEP_HEAD.size
    if payload % 4:
        raise ProtocolError(f"step values are {payload} bytes, not a whole number of float32 values")
    if payload // 4 > MAX_CHANNELS:
        raise ProtocolError(f"step carries {payload // 4} values; the limit is {MAX_CHANNELS}")
    if not math.isfinite(time):
        raise ProtocolError(f"step.time must be finite, got {time!r}")
    values = np.frombuffer(frame, dtype="<f4", offset=STEP_HEAD.size)
    return Step(run_id=token.hex(), seq=seq, step=step, epoch=epoch, time=time, values=values)


def _decode_chunk(frames: Sequence[bytes]) -> StepChunk:
    if len(frames) != 7:
        raise ProtocolError(f"step chunk has {len(frames)} frames; expected 7")
    body = _unpack_body(frames[1], "step chunk")
    run_id = _run_id(_need(body, "run_id", "step chunk"), "step chunk.run_id")
    n = _int(_need(body, "n", "step chunk"), "step chunk.n")
    width = _int(_need(body, "width", "step chunk"), "step chunk.width")
    if not 0 <= n <= MAX_CHUNK_ROWS:
        raise ProtocolError(f"step chunk has {n} rows; the limit is {MAX_CHUNK_ROWS}")
    if not 0 <= width <= MAX_CHANNELS:
        raise ProtocolError(f"step chunk is {width} channels wide; the limit is {MAX_CHANNELS}")
    arrays = []
    for frame, dtype, count, name in zip(
        frames[2:], ("<u8", "<i8", "<i4", "<f8", "<f4"), (n, n, n, n, n * width), ("seq", "step", "epoch", "time", "values")
    ):
        expected = count * np.dtype(dtype).itemsize
        if len(frame) != expected:
            raise ProtocolError(f"step chunk {name} column is {len(frame)} bytes; expected {expected}")
        arrays.append(np.frombuffer(frame, dtype=dtype))
    if n and not np.all(np.isfinite(arrays[3])):
        raise ProtocolError("step chunk time column holds non-finite values")
    return StepChunk(run_id, arrays[0], arrays[1], arrays[2], arrays[3], arrays[4].reshape(n, width))


def _decode_preview(frames: Sequence[bytes]) -> Preview:
    if len(frames) != 5:
        raise ProtocolError(f"preview has {len(frames)} frames; expected 5")
    body = _unpack_body(frames[1], "preview")
    shapes = _need(body, "shapes", "preview")
    if not isinstance(shapes, (list, tuple)) or len(shapes) != 3:
        raise ProtocolError("preview.shapes must list three array shapes")
    arrays = []
    for name, shape, frame in zip(("image", "target", "prediction"), shapes, frames[2:]):
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) not in (2, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_PREVIEW_SIDE for d in shape[:2])
            or (len(shape) == 3 and shape[2] not in (1, 3))
        ):
            raise ProtocolError(f"preview {name} shape {shape!r} is not (h, w) or (h, w, 3) with sides up to {MAX_PREVIEW_SIDE}")
        expected = int(np.prod(shape))
        if len(frame) != expected:
            raise ProtocolError(f"preview {name} is {len(frame)} bytes; its shape {list(shape)} needs {expected}")
        arrays.append(np.frombuffer(frame, dtype=np.uint8).reshape(shape))
    return Preview(
        run_id=_run_id(_need(body, "run_id", "preview"), "preview.run_id"),
        step=_int(_need(body, "step", "preview"), "preview.step"),
        epoch=_int(_need(body, "epoch", "preview"), "preview.epoch"),
        image=arrays[0],
        target=arrays[1],
        prediction=arrays[2],
    )


def decode(frames: Sequence[bytes]) -> Message:
    """The message that ``frames`` carry; ProtocolError if they are not a valid one."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError("empty message: no frames")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"message has {len(frames)} frames; the limit is {MAX_FRAMES}")
    frames = [bytes(f) if not isinstance(f, bytes) else f for f in frames]
    for i, frame in enumerate(frames):
        if len(frame) > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame {i} is {len(frame)} bytes; the limit is {MAX_FRAME_BYTES}")
    head = frames[0]
    if len(head) < HEAD.size:
        raise ProtocolError(f"message head is {len(head)} bytes; expected at least {HEAD.size}")
    magic, major, minor, kind = HEAD.unpack_from(head)
    if magic != MAGIC:
        raise ProtocolError(f"not an octa-tui message (magic {magic!r}, expected {MAGIC!r})")
    if major != PROTOCOL_MAJOR:
        raise ProtocolError(
            f"protocol version {major}.{minor} is not compatible with this side's {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; "
            "install the same major version of octa-tui on the trainer and the monitor"
        )
    if kind == KIND_STEP:
        if len(frames) != 1:
            raise ProtocolError(f"step message has {len(frames)} frames; expected 1")
        return _decode_step(head)
    if len(head) != HEAD.size:
        raise ProtocolError(f"{KIND_NAMES.get(kind, 'record')} head is {len(head)} bytes; expected {HEAD.size}")
    if kind == KIND_CHUNK:
        return _decode_chunk(frames)
    if kind == KIND_PREVIEW:
        return _decode_preview(frames)
    reader = _RECORD_READERS.get(kind)
    if reader is None:
        raise ProtocolError(f"unknown message kind {kind}")
    name = KIND_NAMES[kind]
    if len(frames) != 2:
        raise ProtocolError(f"{name} has {len(frames)} frames; expected 2")
    body = _unpack_body(frames[1], name)
    return reader(body, (major, minor))


_PACK_COUNT = struct.Struct("<I")


def pack(msg: Message) -> bytes:
    """One buffer for a message (frame count, then each frame length-prefixed): for files."""
    frames = encode(msg)
    parts = [_PACK_COUNT.pack(len(frames))]
    for frame in frames:
        parts.append(_PACK_COUNT.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def unpack(buffer: bytes) -> Message:
    """The message in a buffer written by :func:`pack`."""
    view = memoryview(buffer)
    if len(view) < 4:
        raise ProtocolError("packed message is shorter than its frame count")
    (count,) = _PACK_COUNT.unpack_from(view, 0)
    if not 1 <= count <= MAX_FRAMES:
        raise ProtocolError(f"packed message claims {count} frames; expected 1 to {MAX_FRAMES}")
    offset = 4
    frames = []
    for i in range(count):
        if offset + 4 > len(view):
            raise ProtocolError(f"packed message ends inside the length of frame {i}")
        (size,) = _PACK_COUNT.unpack_from(view, offset)
        offset += 4
        if size > MAX_FRAME_BYTES or offset + size > len(view):
            raise ProtocolError(f"packed message frame {i} claims {size} bytes; only {len(view) - offset} remain")
        frames.append(bytes(view[offset : offset + size]))
        offset += size
    if offset != len(view):
        raise ProtocolError(f"packed message has {len(view) - offset} trailing bytes")
    return decode(frames)


# --- many step frames at once (the monitor's ingest fast path) -----------------------------


class StepBlock:
    """Consecutive step frames of one run, decoded at once into columns.

    What :func:`decode_step_frames` makes of a backlog of step frames: the steps in arrival
    order as a :class:`StepChunk` (``chunk``), so a follower can add them with one
    ``StepColumns.extend`` instead of one append per step. The steps are exactly those that
    :func:`decode` would have returned one frame at a time; :meth:`steps` gives them so.
    """

    __slots__ = ("chunk",)

    def __init__(self, chunk: StepChunk) -> None:
        self.chunk = chunk

    @property
    def run_id(self) -> str:
        """The run all these steps belong to."""
        return self.chunk.run_id

    def __len__(self) -> int:
        return len(self.chunk)

    def __repr__(self) -> str:
        return f"StepBlock(run_id={self.run_id!r}, steps={len(self)})"

    def steps(self) -> list[Step]:
        """The block as single :class:`Step` messages, for code that takes one step at a time."""
        c = self.chunk
        return [
            Step(c.run_id, int(seq), int(step), int(epoch), float(time), values)
            for seq, step, epoch, time, values in zip(
                c.seq.tolist(), c.step.tolist(), c.epoch.tolist(), c.time.tolist(), c.values
            )
        ]


_STEP_PREFIX = [("magic", "<u2"), ("major", "u1"), ("minor", "u1"), ("kind", "u1"), ("pad", "V3"), ("token", "V8"),
                ("seq", "<u8"), ("step", "<i8"), ("epoch", "<i4"), ("time", "<f8")]
_MAGIC_U2 = int.from_bytes(MAGIC, "little")
_step_dtypes: dict[int, np.dtype] = {}


def _step_dtype(frame_bytes: int) -> np.dtype:
    """The structured dtype of a step frame of ``frame_bytes`` bytes (header, then float32 values)."""
    dtype = _step_dtypes.get(frame_bytes)
    if dtype is None:
        width = (frame_bytes - STEP_HEAD.size) // 4
        dtype = np.dtype(_STEP_PREFIX + [("values", "<f4", (width,))]) if width else np.dtype(_STEP_PREFIX)
        assert dtype.itemsize == frame_bytes
        if len(_step_dtypes) < 64:
            _step_dtypes[frame_bytes] = dtype
    return dtype


def _one_by_one(frames: Sequence[bytes], out: list, on_error: Callable[[list[bytes], ProtocolError], None]) -> None:
    for frame in frames:
        try:
            out.append(decode([frame]))
        except ProtocolError as exc:
            on_error([frame], exc)


def _same_length_block(frames: Sequence[bytes], out: list, on_error: Callable[[list[bytes], ProtocolError], None]) -> None:
    """Decode frames that all have one length: every header checked at once, bad rows one by one."""
    size = len(frames[0])
    payload = size - STEP_HEAD.size
    if payload < 0 or payload % 4 or payload // 4 > MAX_CHANNELS or size > MAX_FRAME_BYTES:
        _one_by_one(frames, out, on_error)  # no frame of this size is a step: decode() says why
        return
    n = len(frames)
    rows = np.frombuffer(b"".join(frames), dtype=_step_dtype(size))
    # The checks of decode() for a step frame, on every row at once.
    ok = (rows["magic"] == _MAGIC_U2) & (rows["major"] == PROTOCOL_MAJOR) & (rows["kind"] == KIND_STEP)
    ok &= np.isfinite(rows["time"])
    tokens = rows["token"].view("<u8")
    cuts = np.flatnonzero((tokens[1:] != tokens[:-1]) | (ok[1:] != ok[:-1])) + 1
    starts = [0, *cuts.tolist()]
    stops = [*starts[1:], n]
    values = rows["values"] if payload else np.zeros((n, 0), dtype=np.float32)
    for a, b in zip(starts, stops):
        if not ok[a]:
            _one_by_one(frames[a:b], out, on_error)
            continue
        run_id = frames[a][8:16].hex()
        out.append(StepBlock(StepChunk(run_id, rows["seq"][a:b], rows["step"][a:b], rows["epoch"][a:b],
                                       rows["time"][a:b], values[a:b])))


def decode_step_frames(
    frames: Sequence[bytes], on_error: Callable[[list[bytes], ProtocolError], None]
) -> list[Message | StepBlock]:
    """Single-frame messages, in arrival order, decoded with one numpy pass per run of equal sizes.

    The monitor's ingest fast path: a backlog of step frames becomes a few
    :class:`StepBlock` (consecutive steps of one run) instead of one :class:`Step` each.
    Every check of :func:`decode` is applied to every frame; a frame that fails one is
    decoded on its own, so ``on_error(frames, error)`` gets the same ProtocolError that
    :func:`decode` raises for it, and the frame is left out. Order is kept: the result,
    expanded with :meth:`StepBlock.steps`, is what :func:`decode` gives frame by frame.
    """
    out: list[Message | StepBlock] = []
    n = len(frames)
    if n == 0:
        return out
    sizes = np.fromiter(map(len, frames), dtype=np.int64, count=n)
    cuts = np.flatnonzero(sizes[1:] != sizes[:-1]) + 1
    starts = [0, *cuts.tolist()]
    stops = [*starts[1:], n]
    for a, b in zip(starts, stops):
        _same_length_block(frames[a:b], out, on_error)
    return out
