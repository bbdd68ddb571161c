"""Integrity benchmark: what one bad frame or byte costs the monitor and the reader.

Run: ``.venv/bin/python bench/bench_integrity.py [--steps 300000] [--only follower|filing|recording]``

  follower   a RunFollower following a real TrainerLink (in-process thread, loopback TCP)
             that holds ``--steps`` steps, attacked through the trainer's own PUB socket:
             10 frames with flipped run ids, one step with seq 4.6e18, 2,000 frames of
             random run ids and seq jumps. Figures: seconds spent in poll, history requests
             the trainer answered (a full download is one from seq 0), steps shown after the
             attack, frames counted as rejected, and the monitor's resident memory growth.
  filing     RunFollower.poll filing ``--steps`` decoded steps into its history (no sockets:
             what the follower itself costs per step, in 10 blocks, and one step at a time).
  recording  a recording of ``--steps`` steps (152 channels) read whole (CRC-checked), clean
             and with 10 damaged places (flipped bytes, a zeroed 4 KB block, a damaged
             length field): steps kept, steps reported lost, read time.
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from octa_tui.protocol import ModelSummary, Schema, encode_step, new_run_id
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.link import TrainerLink
from octa_tui.protocol.recording import FILE_HEADER, FRAME_HEADER, RecordingWriter, read_recording


def bench_schema(width_layers: int = 128) -> Schema:
    """The publish benchmark's shape: 8 loss terms, 128 gradient layers, 16 output statistics."""
    return Schema(
        run_id=new_run_id(),
        task="segmentation",
        model=ModelSummary("UNet", 1_000_000),
        loss=tuple(f"l{i}" for i in range(8)),
        grad=tuple(f"layer{i}" for i in range(width_layers)),
        out=tuple(f"o{i}" for i in range(16)),
    )


class _Trainer:
    """A TrainerLink served on a thread; counts the history requests it answers."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.asked: list[int] = []
        self._work: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        ready: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        self.telemetry, self.control = ready.get(timeout=60)

    def _main(self, ready: queue.Queue) -> None:
        self.link = TrainerLink(self.schema, heartbeat_s=0.2)
        answer = self.link._send_history

        def counted(identity, command):
            self.asked.append(int(command.args.get("from_seq", 0)))
            return answer(identity, command)

        self.link._send_history = counted
        ready.put((self.link.telemetry_endpoint, self.link.control_endpoint))
        while not self._stop.is_set():
            try:
                fn, box = self._work.get_nowait()
                box.put(fn(self.link))
            except queue.Empty:
                # A training step's worth of work (2 ms of this thread's CPU): the link serves
                # monitors with a share of the training thread's time.
                started = time.thread_time()
                while time.thread_time() - started < 0.002:
                    pass
            for command in self.link.poll_commands():
                command.ok(0)
            self.link.tick()
        self.link.close()

    def call(self, fn):
        box: queue.Queue = queue.Queue()
        self._work.put((fn, box))
        return box.get(timeout=600)

    def publish(self, first: int, count: int) -> None:
        values = np.ones(self.schema.width, dtype=np.float32)

        def run(link):
            for i in range(first, first + count):
                link.publish_step(i, 0, values)

        self.call(run)

    def inject(self, frames: list[bytes]) -> None:
        self.call(lambda link: [link._publisher._socket.send(f) for f in frames])

    def frame(self, seq: int, run_id: str | None = None) -> bytes:
        values = np.zeros(self.schema.width, dtype=np.float32)
        return encode_step(bytes.fromhex(run_id or self.schema.run_id), seq, 0, 0, time.time(), values)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _follow_until(f: RunFollower, n: int, ceiling_s: float = 120.0) -> float:
    """Poll until ``n`` steps are held, then a little longer; the seconds spent in poll
    (the time poll waited for the first message of a batch is not counted)."""
    spent = 0.0
    deadline = time.monotonic() + ceiling_s
    settle = time.monotonic() + 0.3
    while (len(f.history.steps) < n or time.monotonic() < settle) and time.monotonic() < deadline:
        while not f._sub._socket.poll(10) and time.monotonic() < deadline:  # wait outside the timing
            if len(f.history.steps) >= n and time.monotonic() >= settle:
                break
        t = time.perf_counter()
        f.poll(0)
        spent += time.perf_counter() - t
        if len(f.history.steps) < n:
            settle = time.monotonic() + 0.3  # take in what is still arriving (late checks, held frames)
    return spent


def bench_follower(steps: int) -> list[tuple[str, str]]:
    rows = []
    trainer = _Trainer(bench_schema())
    try:
        trainer.publish(0, steps)
        f = RunFollower(trainer.telemetry, trainer.control, timeout_s=30)
        t = time.perf_counter()
        f.connect()
        rows.append((f"join a run of {steps:,} steps (one full history download)", f"{time.perf_counter() - t:.2f} s"))
        n = steps
        # 10 flipped run ids, each between good steps
        before, rss = len(trainer.asked), _rss_mb()
        for i in range(10):
            token = bytearray(bytes.fromhex(trainer.schema.run_id))
            token[i % 8] ^= 1 << (i % 7)
            trainer.inject([trainer.frame(n + i, token.hex())])
            trainer.publish(n + i, 1)
        n += 10
        spent = _follow_until(f, n)
        asked = trainer.asked[before:]
        rows.append(("10 frames with flipped run ids",
                     f"{spent:.3f} s in poll, {len(asked)} checks, {asked.count(0)} full downloads, "
                     f"+{_rss_mb() - rss:.1f} MB, {len(f.history.steps) - steps:,} of 10 good steps shown, "
                     f"rejected {f.rejected_detail}"))
        # one far jump
        before = len(trainer.asked)
        trainer.inject([trainer.frame(4_600_000_000_000_000_000)])
        trainer.publish(n, 1000)
        n += 1000
        spent = _follow_until(f, n)
        rows.append(("one step with seq 4.6e18, then 1,000 good steps",
                     f"{spent:.3f} s in poll, {len(trainer.asked) - before} checks, "
                     f"{len(f.history.steps) - (n - 1000):,} of 1,000 shown, state {f.state}"))
        # a flood
        rng = np.random.default_rng(0)
        frames = []
        for i in range(1000):
            frames.append(trainer.frame(int(rng.integers(n + 10, 2**62))))
            frames.append(trainer.frame(n + i, rng.bytes(8).hex()))
        before, rejected = len(trainer.asked), f.rejected_frames
        trainer.inject(frames)
        trainer.publish(n, 1000)
        n += 1000
        spent = _follow_until(f, n)
        rows.append(("2,000 frames: random run ids and seq jumps, then 1,000 good steps",
                     f"{spent:.3f} s in poll, {len(trainer.asked) - before} checks, "
                     f"{f.rejected_frames - rejected:,} rejected, {len(f.history.steps) - (n - 1000):,} of 1,000 shown"))
        ok = np.array_equal(f.history.steps.seq, np.arange(n, dtype=np.uint64))
        rows.append(("every step held once, in order", "yes" if ok else "NO"))
        f.close()
    finally:
        trainer.stop()
    return rows


def _chunks(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    out, at = [], FILE_HEADER.size
    while at < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, at)
        if length > 100_000:
            out.append((at, FRAME_HEADER.size + length))
        at += FRAME_HEADER.size + length
    return out


def _timed_read(path: Path):
    times, recording = [], None
    for _ in range(3):
        t = time.perf_counter()
        recording = read_recording(path)
        times.append(time.perf_counter() - t)
    return recording, sorted(times)[1]


def bench_recording(steps: int, folder: str) -> list[tuple[str, str]]:
    schema = bench_schema()
    path = Path(folder) / "run.octa"
    values = np.ones(schema.width, dtype=np.float32)
    with RecordingWriter(path, schema, flush_s=3600.0) as writer:
        for i in range(steps):
            values[0] = i
            writer.write_step(i, i, 0, float(i), values)
    rows = []
    clean, spent = _timed_read(path)
    rows.append((f"read {steps:,} steps (CRC-checked), clean",
                 f"{spent:.3f} s (median of 3), {len(clean.history.steps):,} steps"))
    chunks = _chunks(path)
    data = bytearray(path.read_bytes())
    picks = np.linspace(1, len(chunks) - 2, 10).astype(int).tolist()
    for k, c in enumerate(picks):
        at, size = chunks[c]
        if k % 3 == 0:
            data[at + size // 2] ^= 0x10  # a flipped byte
        elif k % 3 == 1:
            data[at - 2048 : at + 2048] = bytes(4096)  # a zeroed 4 KB block across a record start
        else:
            data[at : at + 4] = (0x7FFFFFF0).to_bytes(4, "little")  # a damaged length field
    path.write_bytes(bytes(data))
    damaged, spent = _timed_read(path)
    report = damaged.report
    rows.append(("same file, 10 damaged places (flips, zeroed 4 KB, length fields)",
                 f"{spent:.3f} s (median of 3), {len(damaged.history.steps):,} steps kept, {report.lost_steps:,} reported lost "
                 f"in {len(report.lost_ranges)} ranges, {len(damaged.history.steps) + report.lost_steps:,} accounted for"))
    return rows


class _QuietSubscriber:
    """Hands the follower pre-decoded batches, as its socket would after a backlog."""

    malformed = 0
    foreign_version = 0
    incompatible = None
    received = 0

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def drain_blocks(self, max_messages: int, timeout_s: float) -> list:
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        pass


class _QuietTrainer:
    last_heard = None

    def collect(self) -> list:
        return []

    def send(self, command) -> str:
        return "ping"

    def close(self) -> None:
        pass


def bench_filing(steps: int) -> list[tuple[str, str]]:
    from octa_tui.protocol import decode
    from octa_tui.protocol.codec import decode_step_frames
    from octa_tui.protocol.run import RunHistory

    schema = bench_schema()
    token = bytes.fromhex(schema.run_id)
    values = np.ones(schema.width, dtype=np.float32)
    frames = [encode_step(token, i, i, 0, 1.0 + i, values) for i in range(steps)]
    per = max(1, steps // 10)

    def rate(batches: list, runs: int) -> float:
        best = 0.0
        for _ in range(runs):
            f = RunFollower("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
            f.history = RunHistory(schema)
            f._sub, f._client, f._next_ping = _QuietSubscriber(list(batches)), _QuietTrainer(), float("inf")
            t = time.perf_counter()
            while len(f.history.steps) < steps:
                f.poll(0)
            best = max(best, steps / (time.perf_counter() - t))
        return best

    blocks = [decode_step_frames(frames[a : a + per], lambda *_: None) for a in range(0, steps, per)]
    singles = [[decode([fr]) for fr in frames[a : a + per]] for a in range(0, steps, per)]
    return [
        (f"poll filing {steps:,} decoded steps in blocks (best of 5)", f"{rate(blocks, 5):,.0f} steps/s"),
        (f"poll filing {steps:,} decoded steps one at a time (best of 3)", f"{rate(singles, 3):,.0f} steps/s"),
    ]


def main(argv: list[str]) -> int:
    """Run both benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--only", choices=("follower", "filing", "recording"))
    args = parser.parse_args(argv)
    rows: list[tuple[str, str]] = []
    if args.only in (None, "follower"):
        rows += bench_follower(args.steps)
    if args.only in (None, "filing"):
        rows += bench_filing(min(args.steps, 200_000))
    if args.only in (None, "recording"):
        with tempfile.TemporaryDirectory() as folder:
            rows += bench_recording(args.steps, folder)
    print(f"integrity benchmarks ({bench_schema().width} float32 channels per step, cpus={os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}, max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    left = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{left}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
