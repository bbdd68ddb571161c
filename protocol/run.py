"""Everything known about one run, in one place: what the engine, the UI and export read.

A :class:`RunHistory` is filled the same way by a live stream, a history snapshot and a
recording, so every consumer has one input type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .columns import StepColumns
from .errors import ProtocolError
from .messages import DatasetReport, EpochSummary, Event, Message, Preview, Schema, Step, StepChunk
from .spill import SpillDir


@dataclass
class RunHistory:
    """A run's schema, its steps column-wise, and its records in arrival order.

    ``spill`` keeps the step columns in unnamed files, resident only for the newest rows
    (see :mod:`octa_tui.protocol.spill`): what a long-running monitor uses.
    """

    schema: Schema
    steps: StepColumns = field(init=False)
    epochs: list[EpochSummary] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dataset: DatasetReport | None = None
    previews: list[Preview] = field(default_factory=list)
    max_previews: int = 64
    spill: SpillDir | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.steps = StepColumns(self.schema.width, spill=self.spill)

    @property
    def run_id(self) -> str:
        """The run this history belongs to."""
        return self.schema.run_id

    def add(self, msg: Message) -> None:
        """File a message of this run where it belongs; others are refused."""
        run_id = getattr(msg, "run_id", None)
        if run_id is not None and run_id != self.schema.run_id:
            raise ProtocolError(f"message of run {run_id} does not belong to run {self.schema.run_id}")
        if isinstance(msg, Step):
            self.steps.append_step(msg)
        elif isinstance(msg, StepChunk):
            self.steps.extend(msg)
        elif isinstance(msg, EpochSummary):
            self.epochs.append(msg)
        elif isinstance(msg, Event):
            self.events.append(msg)
        elif isinstance(msg, DatasetReport):
            self.dataset = msg
        elif isinstance(msg, Preview):
            self.previews.append(msg)
            if len(self.previews) > self.max_previews:
                del self.previews[0]
        elif isinstance(msg, Schema):
            if msg != self.schema:
                raise ProtocolError(f"a second, different schema arrived for run {self.schema.run_id}")
        # Heartbeats, commands and replies are not part of the run's history.
