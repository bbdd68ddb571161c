"""A real trainer link on its own thread, and a way to put any frame on its telemetry stream.

The follower tests in this folder attack a monitor the way a buggy or hostile publisher
would: real ZeroMQ sockets on 127.0.0.1 or ipc paths, real frames, one bad frame among good
ones. ``TrainerThread.inject`` sends raw frames through the trainer's own PUB socket, in
order with its steps, so the follower sees exactly what a broken publisher would send.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from octa_tui.protocol import ModelSummary, Schema, new_run_id
from octa_tui.protocol.codec import encode_step
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.link import TrainerLink

HEARTBEAT_S = 0.05


def make_schema(layers: int = 4) -> Schema:
    """A small run: three loss terms, ``layers`` gradient channels and the lr."""
    return Schema(
        run_id=new_run_id(),
        task="segmentation",
        model=ModelSummary("UNet", 1000),
        loss=("total", "bce", "dice"),
        grad=tuple(f"enc{i}" for i in range(layers)),
        opt=("lr",),
    )


def row(schema: Schema, i: int, width: int | None = None) -> np.ndarray:
    """A step vector whose every value is the step number, so mix-ups show."""
    return np.full(schema.width if width is None else width, float(i), dtype=np.float32)


class TrainerThread:
    """A TrainerLink served on its own thread, the way a training loop serves it.

    ``call(fn)`` runs ``fn(link)`` there; ``publish`` sends genuine steps; ``inject`` sends
    raw frames through the same PUB socket. ``history_requests`` lists the ``from_seq`` of
    every history request the trainer answered.
    """

    def __init__(self, schema: Schema, **kwargs) -> None:
        self.schema = schema
        self.history_requests: list[int] = []
        self._work: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        ready: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, args=(kwargs, ready), daemon=True)
        self._thread.start()
        result = ready.get(timeout=30)
        if isinstance(result, BaseException):
            raise result
        self.telemetry, self.control = result

    def _main(self, kwargs, ready) -> None:
        try:
            self.link = TrainerLink(self.schema, heartbeat_s=HEARTBEAT_S, **kwargs)
        except BaseException as exc:  # handed to the test thread
            ready.put(exc)
            return
        answer = self.link._send_history

        def counted(identity, command):
            self.history_requests.append(int(command.args.get("from_seq", 0)))
            return answer(identity, command)

        self.link._send_history = counted
        ready.put((self.link.telemetry_endpoint, self.link.control_endpoint))
        while not self._stop.is_set():
            try:
                fn, box = self._work.get(timeout=0.002)
            except queue.Empty:
                fn = None
            if fn is not None:
                try:
                    box.put((True, fn(self.link)))
                except BaseException as exc:  # handed to the test thread
                    box.put((False, exc))
            self.serve()
        self.link.close()

    def serve(self) -> None:
        if getattr(self.link, "_closed", False):
            return  # the test closed the link (a run that ended)
        for command in self.link.poll_commands():
            command.ok(self.link.history.steps.last_seq())
        self.link.tick()

    def call(self, fn: Callable[[TrainerLink], object], timeout_s: float = 60.0):
        box: queue.Queue = queue.Queue()
        self._work.put((fn, box))
        ok, value = box.get(timeout=timeout_s)
        if not ok:
            raise value
        return value

    def publish(self, first: int, count: int) -> None:
        """Genuine steps ``first`` .. ``first + count - 1`` (seq = step = value)."""

        def run(link: TrainerLink) -> None:
            for i in range(first, first + count):
                link.publish_step(i, i // 100, row(self.schema, i))
                if i % 64 == 0:
                    self.serve()

        self.call(run)

    def inject(self, *messages: list[bytes] | bytes) -> None:
        """Raw messages (one frame, or a list of frames) on the trainer's telemetry socket."""

        def run(link: TrainerLink) -> None:
            socket = link._publisher._socket
            for msg in messages:
                socket.send_multipart(msg if isinstance(msg, list) else [msg])

        self.call(run)

    def step_frame(self, seq: int, *, run_id: str | None = None, width: int | None = None,
                   value: float | None = None) -> bytes:
        """The frame of a step as the probe encodes it, with any field made wrong."""
        values = row(self.schema, seq if value is None else int(value), width)
        step = min(seq, 2**62)
        return encode_step(bytes.fromhex(run_id or self.schema.run_id), seq, step, min(step // 100, 2**31 - 1),
                           time.time(), values)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def poll_until(f: RunFollower, done: Callable[[], bool], timeout_s: float = 30.0) -> list:
    """Poll until ``done()``; a generous ceiling, never a timing assumption."""
    updates = []
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the follower did not get there in time"
        updates.append(f.poll(0.02))
    return updates


def assert_steps_exactly(f: RunFollower, n: int) -> None:
    """Steps 0..n-1, each once, in order, each with its own values."""
    steps = f.history.steps
    assert len(steps) == n, f"{len(steps)} steps held, expected {n}"
    assert np.array_equal(steps.seq, np.arange(n, dtype=np.uint64)), "steps missing, duplicated or out of order"
    assert np.array_equal(steps.values[:, 0], np.arange(n, dtype=np.float32)), "a step holds another step's values"
