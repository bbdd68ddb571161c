"""The messages that a trainer and a monitor exchange, as frozen dataclasses.

The logical message lives here; its bytes live in :mod:`octa_tui.protocol.codec`. A run
announces its :class:`Schema` once; each training step is then a :class:`Step` carrying
one float32 vector in schema order. Everything else (epochs, events, the dataset report,
previews, heartbeats, commands and replies) is a small structured record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProtocolError
from .version import PROTOCOL_VERSION

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is 16 lowercase hex digits, else raise ProtocolError."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise ProtocolError(f"run id {run_id!r} is not 16 lowercase hex digits")
    return run_id


def new_run_id() -> str:
    """A fresh random run id; a new one means the trainer (re)started."""
    import secrets

    return secrets.token_hex(8)


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@dataclass(frozen=True)
class ModelSummary:
    """What model is training, so the header and the 'model too large' rule can say it."""

    name: str
    parameters: int
    device: str = "cpu"


@dataclass(frozen=True)
class Schema:
    """A run's announcement: who it is and what each position of a step vector means.

    Channel groups are kept apart (loss components, gradient layers shallow to deep, gradient
    summaries, output statistics, optimizer settings, timing) so a monitor can lay out panels
    without parsing names. ``config`` holds the run's settings (data set size, image size,
    batch size, epochs, ...) as plain scalars and strings.
    """

    run_id: str
    task: str
    model: ModelSummary
    loss: tuple[str, ...]
    grad: tuple[str, ...]
    gradstat: tuple[str, ...] = ()
    out: tuple[str, ...] = ()
    opt: tuple[str, ...] = ()
    time: tuple[str, ...] = ()
    loss_expects_probabilities: bool = True
    started_at: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict)
    version: tuple[int, int] = PROTOCOL_VERSION

    def groups(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(group, names) pairs in vector order."""
        return (
            ("loss", self.loss),
            ("grad", self.grad),
            ("gradstat", self.gradstat),
            ("out", self.out),
            ("opt", self.opt),
            ("time", self.time),
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """Every channel's ``group/name`` key, in the order of a step's vector."""
        return tuple(f"{group}/{name}" for group, names in self.groups() for name in names)

    @property
    def width(self) -> int:
        """How many float32 values one step carries."""
        return sum(len(names) for _, names in self.groups())

    def index(self, key: str) -> int:
        """Position of channel ``group/name`` in the step vector (ProtocolError if absent)."""
        try:
            return self.channels.index(key)
        except ValueError:
            raise ProtocolError(f"channel {key!r} is not in run {self.run_id}'s schema") from None

    def has(self, key: str) -> bool:
        """Whether the run streams channel ``group/name``."""
        return key in self.channels


@dataclass(frozen=True, eq=False)
class Step:
    """One training step: a small header and one float32 vector in schema order.

    Values may be NaN or Inf: a diverging run is what the monitor must show.
    """

    run_id: str
    seq: int
    step: int
    epoch: int
    time: float
    values: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return (self.run_id, self.seq, self.step, self.epoch, self.time) == (
            other.run_id,
            other.seq,
            other.step,
            other.epoch,
            other.time,
        ) and _arrays_equal(self.values, other.values)


@dataclass(frozen=True, eq=False)
class StepChunk:
    """Many consecutive steps stored column-wise: history replies and recording chunks.

    ``values`` has shape ``(n, schema.width)``; the other arrays have length ``n``.
    """

    run_id: str
    seq: np.ndarray  # uint64
    step: np.ndarray  # int64
    epoch: np.ndarray  # int32
    time: np.ndarray  # float64
    values: np.ndarray  # float32 (n, width)

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepChunk):
            return NotImplemented
        return self.run_id == other.run_id and all(
            _arrays_equal(a, b)
            for a, b in zip(
                (self.seq, self.step, self.epoch, self.time, self.values),
                (other.seq, other.step, other.epoch, other.time, other.values),
            )
        )


@dataclass(frozen=True)
class EpochSummary:
    """Train and validation metrics of one finished epoch (e.g. ``val['dice']``)."""

    run_id: str
    epoch: int
    step: int
    time: float
    train: Mapping[str, float] = field(default_factory=dict)
    val: Mapping[str, float] = field(default_factory=dict)


EVENT_KINDS = (
    "command_applied",
    "command_rejected",
    "checkpoint_saved",
    "warning",
    "verdict_changed",
    "trial",
    "run_started",
    "run_paused",
    "run_resumed",
    "run_finished",
    "amp_step_skipped",  # a GradScaler skipped a step (data: scale, new_scale); at most one a second
    "unused_parameters",  # layers that never received a gradient (data: layers), once per run
)


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: a command applied, a checkpoint, a warning, ...

    ``data`` carries the details as plain values (e.g. ``{"op": "set_lr", "old": 1e-3,
    "new": 5e-3}``) so replay and export can use them without parsing ``message``.
    """

    run_id: str
    step: int
    time: float
    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileProblem:
    """One data file that could not be used as it is, and why."""

    file: str
    problem: str


@dataclass(frozen=True)
class DatasetReport:
    """The seed's dataset check: pairs found, mask values, foreground ratio, pos_weight.

    ``mask_values`` lists up to 16 distinct mask values seen (``unique_mask_values`` is the
    full count); ``foreground_ratios`` is one value per image. ``suggested_pos_weight`` is
    background / foreground over all training masks. ``problems`` names files that were
    unreadable, unpaired or mismatched (and whether they were skipped).
    """

    run_id: str
    source: str
    pairs: int
    unique_mask_values: int
    mask_values: tuple[float, ...]
    foreground_ratio: float
    foreground_ratios: tuple[float, ...]
    suggested_pos_weight: float
    problems: tuple[FileProblem, ...] = ()
    image_size: tuple[int, int] = (0, 0)
    train_images: int = 0
    val_images: int = 0
    # Statistics of the training targets, for the trivial (constant-predictor) baseline:
    # the mean target value and the MSE of predicting each target channel's mean.
    target_mean: float = float("nan")
    target_var: float = float("nan")

    @property
    def masks_binary(self) -> bool:
        """Whether every mask holds at most two distinct values."""
        return self.unique_mask_values <= 2


@dataclass(frozen=True, eq=False)
class Preview:
    """One validation image, its target and the prediction, downsampled to uint8 arrays."""

    run_id: str
    step: int
    epoch: int
    image: np.ndarray  # uint8 (h, w) or (h, w, 3)
    target: np.ndarray  # uint8 (h, w)
    prediction: np.ndarray  # uint8 (h, w)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preview):
            return NotImplemented
        return (self.run_id, self.step, self.epoch) == (other.run_id, other.step, other.epoch) and all(
            _arrays_equal(a, b)
            for a, b in zip(
                (self.image, self.target, self.prediction), (other.image, other.target, other.prediction)
            )
        )


@dataclass(frozen=True)
class Heartbeat:
    """A sign of life, both ways: the trainer's state and how many monitors it sees."""

    run_id: str
    sender: str  # "trainer" or "monitor"
    time: float
    step: int = 0
    state: str = "running"  # running | paused | finished
    monitors: int = 0
    last_seq: int = 0


COMMAND_OPS = (
    "set_lr",
    "set_loss_weights",
    "set_pos_weight",
    "set_clip",
    "pause",
    "resume",
    "checkpoint",
    "stop",
    "history",
    "ping",
)


@dataclass(frozen=True)
class Command:
    """A request from a monitor to the trainer; see :mod:`octa_tui.protocol.commands`."""

    op: str
    args: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""


@dataclass(frozen=True)
class Reply:
    """The trainer's answer to one command: ok with the step it took effect, or an error.

    ``reason`` is a sentence a person can act on. ``data`` carries extra results (for
    ``history``: how many chunks follow and the last sequence number they cover).
    """

    request_id: str
    status: str  # "ok" | "error"
    reason: str = ""
    step: int = -1
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the command was accepted."""
        return self.status == "ok"


Message = (
    Schema | Step | StepChunk | EpochSummary | Event | DatasetReport | Preview | Heartbeat | Command | Reply
)
