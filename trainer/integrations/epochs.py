"""An epoch summary that waits for its validation metrics, whichever comes first.

Frameworks end an epoch and validate in different orders: Lightning validates before its
``on_train_epoch_end``; the Hugging Face Trainer calls ``on_epoch_end`` and then evaluates;
an Ignite ``ValidationHandler`` runs among the other ``EPOCH_COMPLETED`` handlers. The monitor
wants one :class:`~octa_tui.protocol.messages.EpochSummary` per epoch with both. An
:class:`EpochGate` is told when the training part is done and when validation metrics arrive,
and publishes each epoch once, with the validation metrics of that epoch when there are any.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EpochGate:
    """Publishes epoch summaries through ``watch.end_epoch(train, val)``.

    :meth:`train_done` with ``expect_val``: hold the summary until :meth:`val_done` (or
    :meth:`flush`, when no validation came after all). Without it the summary goes out now,
    with the validation metrics that arrived since the previous epoch (a validation run
    before the epoch's end, or mid-epoch).
    """

    def __init__(self, watch: Any) -> None:
        self.watch = watch
        self._train: dict[str, float] | None = None
        self._val: dict[str, float] = {}

    def train_done(self, train: Mapping[str, float], expect_val: bool = False) -> None:
        """The epoch's training part ended with these metrics."""
        self.flush()
        self._train = dict(train)
        if not expect_val:
            self.flush()

    def val_done(self, val: Mapping[str, float]) -> None:
        """Validation metrics arrived: they complete the held epoch, or the next one."""
        self._val = dict(val)
        if self._train is not None:
            self.flush()

    def flush(self) -> None:
        """Publish a held epoch now (with whatever validation metrics there are)."""
        train, self._train = self._train, None
        if train is None:
            return
        val, self._val = self._val, {}
        self.watch.end_epoch(train, val)
