"""Wire benchmarks: the trainer's publish path and the monitor's ingest rate.

  publish   TrainerLink.publish_step for 152 float32 channels (128 gradient layers, 8 loss
            terms, 16 output statistics) with a subscriber reading in another process:
            p50 / p99 per step in microseconds (target: p50 <= 10 us). Also with the
            recording writer attached, when it is available.
  ingest    decode + append into StepColumns from pre-encoded frames (target >= 100k steps/s).
  receive   SUB receive + decode + append: draining a queued backlog, and while a publisher
            process floods it (both processes then share the machine's cores).
  monitor   what `octa-tui connect` runs: socket -> RunFollower.poll -> RunHistory, from a
            queued backlog of steps and with a publisher process sending concurrently
            (target >= 100k steps/s).
  follow    RunFollower following a TrainerLink process that publishes at full speed
            (drops at the socket are repaired from history, and counted).
  late join RunFollower.connect() to a trainer that already holds the run's history.

Run: ``python bench/bench_wire.py [--steps N]``. Helper processes are started and stopped by
this script (``--role`` is for them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from octa_tui.protocol import Heartbeat, ModelSummary, Schema, decode, encode_step, new_run_id
from octa_tui.protocol.columns import StepColumns
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.link import TrainerLink
from octa_tui.protocol.spill import spill_dir
from octa_tui.protocol.transport import TelemetryPublisher, TelemetrySubscriber

LAYERS, LOSS_TERMS, OUT_STATS = 128, 8, 16


def bench_schema(run_id: str | None = None) -> Schema:
    """The benchmark's run: 152 channels."""
    return Schema(
        run_id=run_id or new_run_id(),
        task="segmentation",
        model=ModelSummary("UNet", 31_000_000),
        loss=("total",) + tuple(f"term{i}" for i in range(1, LOSS_TERMS)),
        grad=tuple(f"layer{i:03d}" for i in range(LAYERS)),
        out=tuple(f"stat{i}" for i in range(OUT_STATS)),
    )


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )


def _stop(proc: subprocess.Popen) -> str:
    """Tell a helper to finish (communicate closes its stdin), wait for it, return what it printed."""
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


# --- helper processes ----------------------------------------------------------------------


def role_reader(endpoint: str) -> None:
    """Subscribe and read until stdin closes; print how many messages arrived."""
    sub = TelemetrySubscriber(endpoint)
    print("ready", flush=True)
    received = 0
    import select

    while True:
        received += len(sub.drain(100_000, timeout_s=0.01))
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
            break
    received += len(sub.drain(100_000, timeout_s=0.05))
    print(received, flush=True)
    sub.close()


def role_flood(endpoint_file: str, steps: int, run_id: str | None = None) -> None:
    """Publish pre-encoded step frames as fast as possible, over and over, until told to stop."""
    pub = TelemetryPublisher("tcp://127.0.0.1:0", sndhwm=100_000)
    with open(endpoint_file, "w") as fh:
        fh.write(pub.endpoint)
    schema = bench_schema(run_id)
    token = bytes.fromhex(schema.run_id)
    values = np.random.default_rng(0).random(schema.width, dtype=np.float32)
    frames = [encode_step(token, i, i, 0, 1.0 + i, values) for i in range(steps)]
    print("ready", flush=True)
    sys.stdin.readline()  # go
    import select

    if run_id is None:
        while not select.select([sys.stdin], [], [], 0)[0]:
            for frame in frames:
                pub.send_frame(frame)
    else:  # a run a follower keeps: every step is new, as from a trainer
        seq = 0
        while not select.select([sys.stdin], [], [], 0)[0]:
            for _ in range(steps):
                pub.send_frame(encode_step(token, seq, seq, 0, 1.0 + seq, values))
                seq += 1
    pub.close()


def role_trainer(endpoint_file: str, steps: int, preload: int) -> None:
    """A TrainerLink that holds ``preload`` steps, then on 'go' publishes ``steps`` more at full speed."""
    schema = bench_schema()
    link = TrainerLink(schema, heartbeat_s=0.2)
    with open(endpoint_file, "w") as fh:
        fh.write(f"{link.telemetry_endpoint} {link.control_endpoint}")
    rng = np.random.default_rng(0)
    values = rng.random(schema.width, dtype=np.float32)
    for i in range(preload):
        link.publish_step(i, 0, values)
    print("ready", flush=True)
    import select

    seq = preload
    remaining = 0
    while True:
        if select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline()
            if not line:
                break
            remaining = steps
        for _ in range(min(remaining, 256)):
            link.publish_step(seq, 0, values)
            seq += 1
        remaining = max(0, remaining - 256)
        link.poll_commands()
        link.tick()
        if not remaining:
            time.sleep(0.001)
    link.close()


# --- benchmarks ------------------------------------------------------------------------------


def bench_publish(steps: int, recording_dir: str | None) -> tuple[float, float, int]:
    """p50 / p99 microseconds of publish_step, and the steps the reader process received."""
    schema = bench_schema()
    recording = None
    if recording_dir is not None:
        from octa_tui.protocol.recording import RecordingWriter

        recording = RecordingWriter(os.path.join(recording_dir, "bench.octa"), schema)
    link = TrainerLink(schema, recording=recording)
    reader = _spawn("--role", "reader", link.telemetry_endpoint)
    assert reader.stdout.readline().strip() == "ready"
    values = np.random.default_rng(1).random(schema.width, dtype=np.float32)
    # Give the reader's subscription time to reach the publisher, so the timed steps are
    # really sent to a reader (the received count below shows that they were).
    time.sleep(0.3)
    warmup = 5000
    for i in range(warmup):
        link.publish_step(i, 0, values)
    times = np.empty(steps, dtype=np.int64)
    clock = time.perf_counter_ns
    publish = link.publish_step
    for i in range(steps):
        t0 = clock()
        publish(warmup + i, 0, values)
        times[i] = clock() - t0
    link.close()
    received = int(_stop(reader).split()[-1])
    us = times / 1000.0
    return float(np.percentile(us, 50)), float(np.percentile(us, 99)), received


def bench_ingest(steps: int) -> float:
    """Steps/s to decode pre-encoded frames and append them to StepColumns."""
    schema = bench_schema()
    token = bytes.fromhex(schema.run_id)
    values = np.random.default_rng(2).random(schema.width, dtype=np.float32)
    frames = [[encode_step(token, i, i, 0, 1.0 + i, values)] for i in range(steps)]
    columns = StepColumns(schema.width)
    append = columns.append_step
    start = time.perf_counter()
    for frame in frames:
        append(decode(frame))
    elapsed = time.perf_counter() - start
    assert len(columns) == steps
    return steps / elapsed


def bench_receive_backlog(steps: int) -> float:
    """Steps/s to drain a backlog of ``steps`` queued steps: SUB receive + decode + append."""
    schema = bench_schema()
    token = bytes.fromhex(schema.run_id)
    values = np.random.default_rng(3).random(schema.width, dtype=np.float32)
    frames = [encode_step(token, i, i, 0, 1.0 + i, values) for i in range(steps)]
    pub = TelemetryPublisher("tcp://127.0.0.1:0", sndhwm=steps + 1000)
    sub = TelemetrySubscriber(pub.endpoint, rcvhwm=steps + 1000)
    while sub.recv(0.02) is None:  # until the subscription is live
        pub.send_frame(frames[0])
    sub.drain()
    for frame in frames:
        pub.send_frame(frame)
    columns = StepColumns(schema.width, capacity=steps)
    start = time.perf_counter()
    while len(columns) < steps and time.perf_counter() - start < 60:
        for msg in sub.drain(20_000, timeout_s=0.05):
            columns.append_step(msg)
    elapsed = time.perf_counter() - start
    sub.close()
    pub.close()
    assert len(columns) == steps, f"only {len(columns)} of {steps} steps arrived"
    return steps / elapsed


def bench_receive_flood(seconds: float) -> float:
    """Steps/s the SUB side takes in while another process publishes as fast as it can."""
    with tempfile.TemporaryDirectory() as folder:
        endpoint_file = os.path.join(folder, "endpoint")
        flood = _spawn("--role", "flood", endpoint_file, "50000")
        assert flood.stdout.readline().strip() == "ready"
        with open(endpoint_file) as fh:
            endpoint = fh.read()
    sub = TelemetrySubscriber(endpoint)
    columns = StepColumns(bench_schema().width, capacity=1 << 21)
    flood.stdin.write("go\n")
    flood.stdin.flush()
    sub.recv(5.0)  # the first message: the stream is flowing
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for msg in sub.drain(20_000, timeout_s=0.05):
            if len(columns) == columns.capacity - 1:
                columns = StepColumns(columns.width, capacity=1 << 21)
            columns.append_step(msg)
            count += 1
    elapsed = time.perf_counter() - start
    _stop(flood)
    sub.close()
    return count / elapsed


def role_control(endpoint_file: str) -> None:
    """A trainer's control socket holding an empty run: answers a follower's join, pings and history."""
    link = TrainerLink(bench_schema(BENCH_RUN_ID), heartbeat_s=0.2)
    with open(endpoint_file, "w") as fh:
        fh.write(f"{link.telemetry_endpoint} {link.control_endpoint}")
    print("ready", flush=True)
    import select

    while not select.select([sys.stdin], [], [], 0.001)[0]:
        link.poll_commands()
        link.tick()
    link.close()


BENCH_RUN_ID = "0123456789abcdef"


def _followed_control(folder: str) -> tuple[subprocess.Popen, str]:
    endpoint_file = os.path.join(folder, "control")
    control = _spawn("--role", "control", endpoint_file)
    assert control.stdout.readline().strip() == "ready"
    with open(endpoint_file) as fh:
        return control, fh.read().split()[1]


def bench_monitor_backlog(steps: int, spill: bool = False) -> float | str:
    """Steps/s of RunFollower.poll taking a queued backlog of ``steps`` steps into its history.

    The path `octa-tui connect` runs: SUB receive, decode, the follower's seq checks, the
    column store. The follower joins an empty run (history from a control process), then
    the steps are queued on its socket and timed from the first poll to the last row.
    With ``spill`` the columns are paged to files as `octa-tui connect` does by default
    (the reason is returned instead when the folder cannot take them).
    """
    token = bytes.fromhex(BENCH_RUN_ID)
    width = bench_schema().width
    values = np.random.default_rng(4).random(width, dtype=np.float32)
    frames = [encode_step(token, i, i, 0, 1.0 + i, values) for i in range(steps)]
    with tempfile.TemporaryDirectory() as folder:
        control, control_endpoint = _followed_control(folder)
        pub = TelemetryPublisher("tcp://127.0.0.1:0", sndhwm=steps + 1000)
        where = None
        if spill:
            where, note = spill_dir(os.environ.get("OCTA_TUI_SPILL_DIR") or os.path.join(folder, "spill"))
            if where is None:
                pub.close()
                _stop(control)
                return note
        follower = RunFollower(pub.endpoint, control_endpoint, timeout_s=10.0, spill=where)
        follower.connect()
        probe = TelemetrySubscriber(pub.endpoint)  # a second subscriber tells when the subscription is live
        while probe.recv(0.02) is None:
            pub.send(Heartbeat(BENCH_RUN_ID, "trainer", 1.0))
        probe.close()
        follower.poll(0.1)
        for frame in frames:
            pub.send_frame(frame)
        time.sleep(0.5)  # the backlog reaches the follower's queue
        start = time.perf_counter()
        while len(follower.history.steps) < steps and time.perf_counter() - start < 60:
            follower.poll(0.05)
        elapsed = time.perf_counter() - start
        got = len(follower.history.steps)
        complete = bool(np.array_equal(follower.history.steps.seq, np.arange(got, dtype=np.uint64)))
        follower.close()
        pub.close()
        _stop(control)
    assert got == steps and complete, f"follower holds {got} of {steps} steps (in order: {complete})"
    return steps / elapsed


def bench_monitor_flood(seconds: float) -> tuple[float, int, int]:
    """Steps/s RunFollower.poll adds to its history while a publisher process sends new steps
    as fast as it can; also the steps dropped at the socket (holes the empty control side
    cannot fill) and the messages that could not be read (must be 0)."""
    with tempfile.TemporaryDirectory() as folder:
        control, control_endpoint = _followed_control(folder)
        endpoint_file = os.path.join(folder, "endpoint")
        flood = _spawn("--role", "flood", endpoint_file, "50000", BENCH_RUN_ID)
        assert flood.stdout.readline().strip() == "ready"
        with open(endpoint_file) as fh:
            endpoint = fh.read()
        follower = RunFollower(endpoint, control_endpoint, timeout_s=10.0)
        follower.connect()
        flood.stdin.write("go\n")
        flood.stdin.flush()
        steps = follower.history.steps
        while len(steps) == 0:
            follower.poll(0.05)
        first, first_seq = len(steps), steps.last_seq()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            follower.poll(0.05)
        elapsed = time.perf_counter() - start
        count = len(steps) - first
        dropped = steps.last_seq() - first_seq - count
        malformed = follower.malformed
        _stop(flood)
        follower.close()
        _stop(control)
    return count / elapsed, dropped, malformed


def bench_follow(steps: int) -> tuple[float, int, int]:
    """Steps/s a RunFollower takes in from a trainer publishing at full speed, gaps filled."""
    with tempfile.TemporaryDirectory() as folder:
        endpoint_file = os.path.join(folder, "endpoint")
        trainer = _spawn("--role", "trainer", endpoint_file, str(steps), "0")
        assert trainer.stdout.readline().strip() == "ready"
        with open(endpoint_file) as fh:
            telemetry, control = fh.read().split()
    follower = RunFollower(telemetry, control, timeout_s=10.0)
    follower.connect()
    trainer.stdin.write("go\n")
    trainer.stdin.flush()
    gaps = 0
    start = time.perf_counter()
    while len(follower.history.steps) < steps:
        gaps += follower.poll(0.05).gaps_filled
        if time.perf_counter() - start > 120:
            break
    elapsed = time.perf_counter() - start
    got = len(follower.history.steps)
    complete = bool(np.array_equal(follower.history.steps.seq, np.arange(got, dtype=np.uint64)))
    follower.close()
    _stop(trainer)
    assert complete, "follower history is not seq 0..n-1"
    return got / elapsed, gaps, got


def bench_late_join(steps: int, spill: bool = False) -> float:
    """Seconds for RunFollower.connect() to fetch and merge ``steps`` steps of history
    (with ``spill``, into file-backed columns, as ``octa-tui connect`` does)."""
    with tempfile.TemporaryDirectory() as folder:
        endpoint_file = os.path.join(folder, "endpoint")
        trainer = _spawn("--role", "trainer", endpoint_file, "0", str(steps))
        assert trainer.stdout.readline().strip() == "ready"
        with open(endpoint_file) as fh:
            telemetry, control = fh.read().split()
    where = spill_dir()[0] if spill else None
    follower = RunFollower(telemetry, control, timeout_s=30.0, spill=where)
    start = time.perf_counter()
    history = follower.connect()
    elapsed = time.perf_counter() - start
    assert len(history.steps) == steps
    follower.close()
    _stop(trainer)
    return elapsed


def main(argv: list[str]) -> int:
    """Run every wire benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="steps per measurement (default 200000)")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        role, *rest = args.role
        if role == "reader":
            role_reader(rest[0])
        elif role == "flood":
            role_flood(rest[0], int(rest[1]), *rest[2:])
        elif role == "control":
            role_control(rest[0])
        elif role == "trainer":
            role_trainer(rest[0], int(rest[1]), int(rest[2]))
        return 0

    n = args.steps
    width = bench_schema().width
    rows: list[tuple[str, str, str]] = []
    p50, p99, received = bench_publish(n, None)
    rows.append(
        (
            f"publish_step, {width} ch, subscriber reading",
            f"p50 {p50:.2f} us  p99 {p99:.2f} us",
            "p50 <= 10 us",
        )
    )
    rows.append(
        ("  messages the reader process received", f"{received:,} ({n + 5000:,} steps + heartbeat)", "")
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            p50r, p99r, _ = bench_publish(n, folder)
        rows.append(
            ("publish_step + RecordingWriter", f"p50 {p50r:.2f} us  p99 {p99r:.2f} us", "p50 <= 10 us")
        )
    except ImportError:
        rows.append(("publish_step + RecordingWriter", "recording not available", ""))
    rows.append(("ingest: decode + append (in memory)", f"{bench_ingest(n):,.0f} steps/s", ">= 100k steps/s"))
    rows.append(
        ("receive: drain a queued backlog", f"{bench_receive_backlog(n):,.0f} steps/s", ">= 100k steps/s")
    )
    rows.append(
        (
            "receive: publisher process flooding",
            f"{bench_receive_flood(2.0):,.0f} steps/s",
            "(2 processes, shared cores)",
        )
    )
    rows.append(
        ("monitor: socket -> follower.poll -> history, backlog", f"{bench_monitor_backlog(n):,.0f} steps/s",
         ">= 100k steps/s")
    )
    spilled = bench_monitor_backlog(n, spill=True)
    rows.append(
        ("monitor: same, columns spilled to files (connect's default)",
         f"{spilled:,.0f} steps/s" if isinstance(spilled, float) else spilled, ">= 100k steps/s")
    )
    flood_rate, flood_dropped, flood_malformed = bench_monitor_flood(2.0)
    rows.append(
        ("monitor: same, publisher process sending",
         f"{flood_rate:,.0f} steps/s ({flood_dropped:,} dropped at the socket, {flood_malformed} malformed)",
         "(2 processes, shared cores)")
    )
    rate, gaps, got = bench_follow(n)
    rows.append(
        ("follow: RunFollower vs full-speed trainer", f"{rate:,.0f} steps/s ({gaps} gaps filled)", "")
    )
    join_steps = min(n, 200_000)
    rows.append(
        (f"late join: connect() with {join_steps:,} steps", f"{bench_late_join(join_steps):.3f} s", "< 1 s")
    )
    rows.append(
        ("late join: 1,000,000 steps, columns spilled (octa-tui connect)",
         f"{bench_late_join(1_000_000, spill=True):.3f} s", "< 1 s")
    )

    print(f"wire benchmarks ({width} float32 channels per step, {n:,} steps)")
    left = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    print(f"{'measure':<{left}}  {'result':<{middle}}  target")
    for name, result, target in rows:
        print(f"{name:<{left}}  {result:<{middle}}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
