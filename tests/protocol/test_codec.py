"""The codec: every message survives the wire, and every malformed input is one clear ProtocolError."""

from __future__ import annotations

import math
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octa_tui.protocol import codec
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.messages import (
    Command,
    DatasetReport,
    EpochSummary,
    Event,
    FileProblem,
    Heartbeat,
    ModelSummary,
    Preview,
    Reply,
    Schema,
    Step,
    StepChunk,
)
from octa_tui.protocol.version import PROTOCOL_MAJOR, PROTOCOL_MINOR

RUN = "0123456789abcdef"


def make_schema() -> Schema:
    return Schema(
        run_id=RUN,
        task="segmentation",
        model=ModelSummary("UNet", 8_500_000, "cuda:0"),
        loss=("total", "bce", "dice"),
        grad=tuple(f"enc{i}" for i in range(4)),
        gradstat=("total_norm", "n_over_bound", "max_param_norm"),
        out=("raw_min", "raw_max"),
        opt=("lr",),
        time=("step_s",),
        loss_expects_probabilities=True,
        started_at=1_700_000_000.5,
        config={"train_images": 40, "loss": "dice_bce", "image_size": [64, 64], "nested": {"a": [1, 2.5, "x"]}},
    )


def every_message() -> list:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(make_schema().width).astype(np.float32)
    values[2] = np.nan
    values[3] = np.inf
    n = 5
    return [
        make_schema(),
        Step(RUN, seq=7, step=70, epoch=2, time=1_700_000_001.25, values=values),
        StepChunk(
            RUN,
            seq=np.arange(n, dtype=np.uint64),
            step=np.arange(n, dtype=np.int64) * 2,
            epoch=np.zeros(n, dtype=np.int32),
            time=np.linspace(1.0, 2.0, n),
            values=rng.standard_normal((n, 14)).astype(np.float32),
        ),
        EpochSummary(RUN, epoch=3, step=120, time=5.0, train={"loss": 0.61, "bce": float("nan")}, val={"dice": 0.4}),
        Event(RUN, step=10, time=6.0, kind="command_applied", message="lr 1e-3 -> 5e-3", data={"op": "set_lr", "old": 1e-3, "new": 5e-3}),
        DatasetReport(
            RUN,
            source="synthetic",
            pairs=40,
            unique_mask_values=256,
            mask_values=(0.0, 1.0, 255.0),
            foreground_ratio=0.005,
            foreground_ratios=(0.004, 0.006),
            suggested_pos_weight=199.0,
            problems=(FileProblem("masks/x.png", "missing"),),
            image_size=(64, 64),
            train_images=32,
            val_images=8,
            target_mean=0.005,
            target_var=0.004975,
        ),
        Preview(
            RUN,
            step=100,
            epoch=1,
            image=rng.integers(0, 255, (16, 12, 3), dtype=np.uint8),
            target=rng.integers(0, 255, (16, 12), dtype=np.uint8),
            prediction=rng.integers(0, 255, (16, 12), dtype=np.uint8),
        ),
        Heartbeat(RUN, sender="trainer", time=9.0, step=5, state="paused", monitors=2, last_seq=4),
        Command("set_loss_weights", {"bce": 0.5, "dice": 0.5}, request_id="r1"),
        Reply("r1", "error", reason="lr must be finite", step=42, data={"last_seq": 9}),
    ]


@pytest.mark.parametrize("msg", every_message(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_frames_and_packed_form(msg) -> None:
    # GIVEN any protocol message WHEN encoded and decoded THEN the same message comes back
    # (NaN != NaN inside metric maps, so records with NaN compare by their text form)
    for back in (codec.decode(codec.encode(msg)), codec.unpack(codec.pack(msg))):
        assert back == msg or repr(back) == repr(msg)
        assert type(back) is type(msg)


def test_step_nan_and_inf_values_are_data_not_errors() -> None:
    step = every_message()[1]
    back = codec.decode(codec.encode(step))
    assert math.isnan(back.values[2]) and math.isinf(back.values[3])


def test_schema_channels_are_in_vector_order() -> None:
    schema = make_schema()
    assert schema.channels[:3] == ("loss/total", "loss/bce", "loss/dice")
    assert schema.index("grad/enc0") == 3
    assert schema.width == len(schema.channels) == 14
    with pytest.raises(ProtocolError, match="not in run"):
        schema.index("grad/nope")


def _record_frames(kind: int, body: object, major: int = PROTOCOL_MAJOR, minor: int = PROTOCOL_MINOR) -> list[bytes]:
    return [codec.HEAD.pack(codec.MAGIC, major, minor, kind), msgpack.packb(body)]


def _good_heartbeat_body() -> dict:
    return {"run_id": RUN, "sender": "trainer", "time": 1.0}


MALFORMED = {
    "no frames": ([], "no frames"),
    "too many frames": ([b"x"] * 9, "frames"),
    "short head": ([b"OC"], "head"),
    "wrong magic": ([b"XX\x01\x00\x08\x00\x00\x00", b"\x80"], "not an octa-tui message"),
    "wrong major": (_record_frames(codec.KIND_HEARTBEAT, _good_heartbeat_body(), major=PROTOCOL_MAJOR + 1), "not compatible"),
    "unknown kind": (_record_frames(99, {}), "unknown message kind"),
    "record without body": ([codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_HEARTBEAT)], "expected 2"),
    "body not msgpack": ([codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_HEARTBEAT), b"\xc1"], "msgpack|decoded"),
    "body truncated": (
        [codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_HEARTBEAT), msgpack.packb(_good_heartbeat_body())[:-3]],
        "msgpack|decoded",
    ),
    "body not a map": (_record_frames(codec.KIND_HEARTBEAT, [1, 2]), "must be a map"),
    "missing field": (_record_frames(codec.KIND_HEARTBEAT, {"run_id": RUN, "sender": "trainer"}), "missing field 'time'"),
    "wrong type": (_record_frames(codec.KIND_HEARTBEAT, {**_good_heartbeat_body(), "step": "five"}), "must be an integer"),
    "bad run id": (_record_frames(codec.KIND_HEARTBEAT, {**_good_heartbeat_body(), "run_id": "ZZ"}), "run id"),
    "nan where finite": (_record_frames(codec.KIND_HEARTBEAT, {**_good_heartbeat_body(), "time": float("nan")}), "must be finite"),
    "bad choice": (_record_frames(codec.KIND_REPLY, {"request_id": "x", "status": "maybe"}), "expected one of"),
    "oversized string": (_record_frames(codec.KIND_EVENT, {"run_id": RUN, "step": 1, "time": 1.0, "kind": "warning", "message": "x" * 70000}), "limit|msgpack"),
    "too deep data": (
        _record_frames(codec.KIND_EVENT, {"run_id": RUN, "step": 1, "time": 1.0, "kind": "w", "message": "", "data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}),
        "nested deeper",
    ),
    "step truncated header": ([codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_STEP) + b"\x00" * 10], "header alone"),
    "step ragged values": ([codec.encode_step(bytes.fromhex(RUN), 1, 1, 0, 1.0, np.zeros(3, np.float32)) + b"\x00"], "whole number"),
    "step too wide": ([codec.encode_step(bytes.fromhex(RUN), 1, 1, 0, 1.0, np.zeros(codec.MAX_CHANNELS + 1, np.float32))], "limit"),
    "step nan time": ([codec.encode_step(bytes.fromhex(RUN), 1, 1, 0, float("nan"), np.zeros(3, np.float32))], "finite"),
    "step extra frame": ([codec.encode_step(bytes.fromhex(RUN), 1, 1, 0, 1.0, np.zeros(3, np.float32)), b""], "expected 1"),
    "chunk column short": (
        codec.encode(every_message()[2])[:6] + [codec.encode(every_message()[2])[6][:-4]],
        "values column",
    ),
    "chunk too many rows": (
        [codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_CHUNK), msgpack.packb({"run_id": RUN, "n": 1 << 30, "width": 1})]
        + [b""] * 5,
        "rows",
    ),
    "preview wrong size": (
        codec.encode(every_message()[6])[:4] + [b"\x00" * 3],
        "needs",
    ),
    "preview huge shape": (
        [
            codec.HEAD.pack(codec.MAGIC, PROTOCOL_MAJOR, 0, codec.KIND_PREVIEW),
            msgpack.packb({"run_id": RUN, "step": 1, "epoch": 0, "shapes": [[100000, 100000], [1, 1], [1, 1]]}),
            b"",
            b"\x00",
            b"\x00",
        ],
        "shape",
    ),
    "schema duplicate channel": (
        _record_frames(codec.KIND_SCHEMA, {**codec._schema_body(make_schema()), "loss": ["total", "total"]}),
        "same channel twice",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_raises_one_clear_protocol_error(name: str) -> None:
    frames, pattern = MALFORMED[name]
    with pytest.raises(ProtocolError, match=pattern):
        codec.decode(frames)


def test_newer_minor_version_is_read_and_unknown_fields_are_ignored() -> None:
    # GIVEN a heartbeat from a peer one minor version ahead that added a field
    frames = _record_frames(codec.KIND_HEARTBEAT, {**_good_heartbeat_body(), "gpu_temp": 71}, minor=PROTOCOL_MINOR + 1)
    # WHEN it is decoded THEN it is read, and the version of the sender is kept where the message has one
    msg = codec.decode(frames)
    assert msg == Heartbeat(RUN, "trainer", 1.0)
    schema_frames = _record_frames(codec.KIND_SCHEMA, {**codec._schema_body(make_schema()), "future": 1}, minor=PROTOCOL_MINOR + 3)
    assert codec.decode(schema_frames).version == (PROTOCOL_MAJOR, PROTOCOL_MINOR + 3)


def test_major_mismatch_names_both_versions() -> None:
    frames = _record_frames(codec.KIND_HEARTBEAT, _good_heartbeat_body(), major=PROTOCOL_MAJOR + 1, minor=4)
    with pytest.raises(ProtocolError) as info:
        codec.decode(frames)
    assert f"{PROTOCOL_MAJOR + 1}.4" in str(info.value) and f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}" in str(info.value)


def test_encoding_something_that_is_not_a_message_is_refused() -> None:
    with pytest.raises(ProtocolError, match="not a protocol message"):
        codec.encode({"op": "set_lr"})  # type: ignore[arg-type]


def test_packed_form_rejects_truncation_and_trailing_bytes() -> None:
    packed = codec.pack(every_message()[7])
    for cut in range(len(packed)):
        with pytest.raises(ProtocolError):
            codec.unpack(packed[:cut])
    with pytest.raises(ProtocolError, match="trailing"):
        codec.unpack(packed + b"\x00")


def test_step_fast_path_matches_the_generic_encoder() -> None:
    step = every_message()[1]
    fast = codec.encode_step(bytes.fromhex(RUN), step.seq, step.step, step.epoch, step.time, step.values)
    assert [fast] == codec.encode(step)
    assert struct.calcsize("<2sBBB3x8sQqid") == codec.STEP_HEAD.size


def test_the_wire_never_uses_pickle() -> None:
    import inspect

    source = inspect.getsource(codec)
    assert "pickle" not in source


GOOD_FRAMES = [codec.encode(m) for m in every_message()]


@st.composite
def mutated_frames(draw) -> list[bytes]:
    frames = list(draw(st.sampled_from(GOOD_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(frames) - 1))
        frame = bytearray(frames[i])
        action = draw(st.sampled_from(["flip", "cut", "extend", "replace"]))
        if action == "flip" and frame:
            pos = draw(st.integers(0, len(frame) - 1))
            frame[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            frame = frame[: draw(st.integers(0, len(frame)))]
        elif action == "extend":
            frame += draw(st.binary(max_size=16))
        else:
            frame = bytearray(draw(st.binary(max_size=64)))
        frames[i] = bytes(frame)
    if draw(st.booleans()):
        frames = frames[: draw(st.integers(0, len(frames)))]
    return frames


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_fuzzed_frames_decode_or_raise_protocol_error_only(frames: list[bytes]) -> None:
    # GIVEN valid messages mutated at random WHEN decoded THEN nothing but ProtocolError escapes
    try:
        codec.decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=9))
def test_random_frames_decode_or_raise_protocol_error_only(frames: list[bytes]) -> None:
    try:
        codec.decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_packed_buffers_unpack_or_raise_protocol_error_only(buffer: bytes) -> None:
    try:
        codec.unpack(buffer)
    except ProtocolError:
        pass
