"""Device vectors to host memory without a synchronisation per step.

On CUDA each step's numbers are one stacked float32 tensor. :class:`DeviceCopies` copies it
into one of a few pinned host buffers without blocking, records an event, and hands the
host copy on when that event has completed (normally one step later); only when every
buffer is in flight does it wait for the oldest. On the CPU the numbers are in host memory
already and are handed on at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PENDING_VECTORS = 4  # pinned buffers in flight on CUDA before the oldest is waited for

Deliver = Callable[[int, int, np.ndarray, Any], None]


class DeviceCopies:
    """Hands ``deliver(step, epoch, host_array, extra)`` each submitted step, in order."""

    def __init__(self, deliver: Deliver, depth: int = PENDING_VECTORS) -> None:
        self.deliver = deliver
        self.depth = int(depth)
        self._pinned: list[torch.Tensor] = []
        self._pending: deque[tuple[int, Any, int, int, Any]] = deque()

    def submit(self, step: int, epoch: int, device_vector: torch.Tensor, extra: Any) -> None:
        """Start the copy of one step's vector; deliver every step whose copy has completed."""
        if device_vector.device.type != "cuda":
            self.deliver(step, epoch, device_vector.numpy(), extra)
            return
        if not self._pinned or self._pinned[0].shape != device_vector.shape:
            self.flush()
            self._pinned = [torch.empty(device_vector.shape, dtype=torch.float32, pin_memory=True)
                            for _ in range(self.depth)]
        if len(self._pending) == self.depth:
            self._deliver_oldest(wait=True)
        slot = (self._pending[-1][0] + 1) % self.depth if self._pending else 0
        self._pinned[slot].copy_(device_vector, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((slot, event, step, epoch, extra))
        while self._pending and self._pending[0][1].query():
            self._deliver_oldest(wait=False)

    def _deliver_oldest(self, wait: bool) -> None:
        slot, event, step, epoch, extra = self._pending.popleft()
        if wait:
            event.synchronize()
        self.deliver(step, epoch, self._pinned[slot].numpy(), extra)

    def flush(self) -> None:
        """Deliver every submitted step now (waits for the GPU)."""
        while self._pending:
            self._deliver_oldest(wait=True)

    @property
    def in_flight(self) -> int:
        """Steps submitted and not yet delivered."""
        return len(self._pending)
