"""Monitor UI cost: frame cost, following a 1k steps/s stream, and a replay's first frame.

1. Frame cost: the main screen at 200x50 over a seeded run of 1k, 100k and 1M steps. Each
   frame is what the chart redraw does when new steps arrived: every visible panel's content
   is drawn again from the whole history (min/max envelopes), then Textual composes the screen.
2. Follow: a publisher process streams a synthetic run at 1,000 steps/s through a real
   TrainerLink; the real ``octa-tui connect`` runs in its own process on a 200x50 pseudo-
   terminal (diagnosis on, output drained). Every 10 s: CPU % of one core of that process
   alone (all its threads, from /proc; the publisher is another process), its RSS, and the
   ingest rate read off its own header (the step it shows). 60 s by default; run 90 s or
   more to read "memory flat after the first minute" off the RSS column.
3. Replay first frame: a 1M-step, 152-channel recording (written once to a temporary
   folder, read from the page cache). In process: ``ReplaySource.open()`` as the CLI calls
   it, then the app until its first composed frame (median of 3). End to end: ``octa-tui
   replay FILE`` started on a pseudo-terminal until its header is on screen (interpreter
   start and imports included).

    python bench/bench_ui.py                            # everything, 60 s follow
    python bench/bench_ui.py --only follow --follow-s 90
    python bench/bench_ui.py --only replay
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tui"))

from seeded import seeded_chunk, seeded_history, seeded_schema  # noqa: E402

from octa_tui.protocol.recording import read_recording  # noqa: E402
from octa_tui.protocol.run import RunHistory  # noqa: E402
from octa_tui.tui.app import make_app  # noqa: E402
from octa_tui.tui.sources import MemorySource, ReplaySource  # noqa: E402

SIZE = (200, 50)
SAMPLE_S = 10.0
TARGET_CPU_PCT = 25.0
TARGET_FIRST_FRAME_S = 0.5
CLI = [sys.executable, "-m", "octa_tui.tui.cli"]

PUBLISHER = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from seeded import seeded_chunk, seeded_schema
from octa_tui.protocol.link import TrainerLink
rate, duration = float(sys.argv[2]), float(sys.argv[3])
schema = seeded_schema(steps_per_epoch=1000, epochs=1000)
rows = seeded_chunk(schema, 20000).values
link = TrainerLink(schema)
print(link.telemetry_endpoint, link.control_endpoint, flush=True)
start = time.perf_counter()
step = 0
end = start + duration
while time.perf_counter() < end:
    due = int((time.perf_counter() - start) * rate)
    while step < due:
        link.publish_step(step, step // 1000, rows[step % len(rows)])
        step += 1
    link.poll_commands()
    link.tick()
    time.sleep(0.002)
link.close()
print(step, flush=True)
"""


# --- the UI in its own process, on a pseudo-terminal -----------------------------------------


class TerminalApp:
    """A command run on a pseudo-terminal of a fixed size, its output drained on a thread.

    The drain keeps the screen's latest header facts (``step N``, ``gaps filled N``), so
    what the monitor shows can be read without a terminal emulator.
    """

    STEP = re.compile(rb"step ([0-9,]+)  epoch")
    GAPS = re.compile(rb"gaps filled ([0-9]+)(?:, ([0-9,]+) steps missing)?")

    def __init__(self, argv: list[str], size: tuple[int, int], watch: bytes = b"") -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=_controlling_terminal, close_fds=True)
        os.close(slave)
        self._master = master
        self._watch = watch
        self.watch_seen_at: float | None = None
        self.step: int | None = None
        self.first_step_at: float | None = None
        self.gaps = (0, 0)
        self.output_bytes = 0
        self._tail = b""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            self.output_bytes += len(data)
            text = self._tail + data
            self._tail = text[-96:]
            if self._watch and self.watch_seen_at is None and self._watch in text:
                self.watch_seen_at = time.perf_counter()
            steps = self.STEP.findall(text)
            if steps:
                self.step = int(steps[-1].replace(b",", b""))
                if self.first_step_at is None and self.step > 0:
                    self.first_step_at = time.perf_counter()
            gaps = self.GAPS.findall(text)
            if gaps:
                filled, missing = gaps[-1]
                self.gaps = (int(filled), int(missing.replace(b",", b"")) if missing else 0)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (all its threads) so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident memory of the process."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def quit(self, keys: bytes = b"q", timeout_s: float = 15.0) -> int | None:
        """Press ``keys`` and wait for the process to end (killed if it does not)."""
        try:
            os.write(self._master, keys)
            return self.proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)
            return None
        finally:
            self._reader.join(timeout=2)
            os.close(self._master)


def _controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def follow(rate: float, duration_s: float) -> None:
    """CPU, RSS and ingest of the real monitor process following a ``rate`` steps/s stream."""
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(ROOT / "tests" / "tui"), str(rate), str(duration_s + 60)],
        stdout=subprocess.PIPE, text=True,
    )
    ui = None
    try:
        telemetry, control = publisher.stdout.readline().split()
        ui = TerminalApp([*CLI, "connect", telemetry, "--control", control], SIZE)
        deadline = time.perf_counter() + 30
        while ui.first_step_at is None:
            if time.perf_counter() > deadline or ui.proc.poll() is not None:
                raise SystemExit("the monitor did not show a step within 30 s")
            time.sleep(0.05)
        print(f"  connected: first step on screen {ui.first_step_at - ui.started:.2f} s after start")
        # What the monitor must hold: every step's values (float32) plus seq, step, epoch, time.
        row_bytes = 4 * seeded_schema().width + 28
        print(f"  {'t (s)':>6} {'CPU % of one core':>18} {'RSS MB':>8} {'steps/s shown':>14} {'step shown':>11} "
              f"{'steps held MB':>14}")
        t_start, c_start, s_start = time.perf_counter(), ui.cpu_s(), ui.step or 0
        last_t, last_c, last_s = t_start, c_start, s_start
        rss_start = ui.rss_mb()
        series = []
        while last_t - t_start < duration_s - 1e-6:
            time.sleep(max(0.0, t_start + (len(series) + 1) * SAMPLE_S - time.perf_counter()))
            now, cpu, step, rss = time.perf_counter(), ui.cpu_s(), ui.step or 0, ui.rss_mb()
            series.append((now - t_start, 100 * (cpu - last_c) / (now - last_t), rss, (step - last_s) / (now - last_t)))
            print(f"  {now - t_start:6.0f} {series[-1][1]:18.1f} {rss:8.1f} {series[-1][3]:14.0f} {step:11,} "
                  f"{step * row_bytes / 2**20:14.1f}")
            last_t, last_c, last_s = now, cpu, step
        elapsed = last_t - t_start
        overall = 100 * (last_c - c_start) / elapsed
        verdict = "meets" if overall <= TARGET_CPU_PCT else "MISSES"
        print(f"  overall: CPU {overall:.1f}% of one core over {elapsed:.0f} s ({verdict} <= {TARGET_CPU_PCT:.0f}%); "
              f"{(last_s - s_start) / elapsed:,.0f} steps/s shown; RSS {rss_start:.0f} -> {series[-1][2]:.0f} MB")
        after_minute = [(t, rss) for t, _, rss, _ in series if t >= 60 - 1e-6]
        if len(after_minute) >= 2:
            (t0, r0), (t1, r1) = after_minute[0], after_minute[-1]
            print(f"  RSS after the first minute: {r0:.1f} -> {r1:.1f} MB over {t1 - t0:.0f} s "
                  f"({(r1 - r0) / (t1 - t0) * 60:+.1f} MB/min; the steps alone grow "
                  f"{rate * 60 * row_bytes / 2**20:.1f} MB/min)")
        print(f"  header: gaps filled {ui.gaps[0]}, steps missing {ui.gaps[1]}")
    finally:
        if ui is not None:
            code = ui.quit()
            print(f"  monitor quit with exit status {code}")
        publisher.terminate()
        publisher.wait(timeout=10)


# --- frame cost (in process, headless) ---------------------------------------------------------


def big_history(steps: int) -> RunHistory:
    history = seeded_history(min(steps, 600))
    if steps > 600:
        history.add(seeded_chunk(history.schema, steps - 600, seed=1, start=600))
    return history


async def frame_cost(steps: int, frames: int, new_per_frame: int = 400) -> tuple[float, float, float]:
    """Median ms per chart frame: (panel content, content + Textual composing the screen), and
    the first frame's ms (which builds the block summaries).

    Before each frame ``new_per_frame`` steps are appended (1k steps/s at the chart rate), so
    the panels that show steps really change, as when following a run.
    """
    history = big_history(steps)
    app = make_app(MemorySource(history), diagnose_factory=None, refresh_hz=0.5, chart_hz=0.5)
    async with app.run_test(size=SIZE) as pilot:
        while not app.opened:
            await pilot.pause(0.05)
        start = len(history.steps)
        extra = seeded_chunk(history.schema, new_per_frame * (frames + 1), seed=2, start=start)
        draw_ms, frame_ms = [], []
        for i in range(frames + 1):
            a, b = i * new_per_frame, (i + 1) * new_per_frame
            history.steps.extend(type(extra)(extra.run_id, extra.seq[a:b], extra.step[a:b], extra.epoch[a:b],
                                             extra.time[a:b], extra.values[a:b]))
            t0 = time.perf_counter()
            app._redraw()
            for widget in app._widgets.values():
                if widget.display and hasattr(widget, "_draw") and widget._draw is not None:
                    widget.render()
            t1 = time.perf_counter()
            app.screen._compositor.render_update(full=True)
            t2 = time.perf_counter()
            draw_ms.append((t1 - t0) * 1e3)
            frame_ms.append((t2 - t0) * 1e3)
    return statistics.median(draw_ms[1:]), statistics.median(frame_ms[1:]), frame_ms[0]


# --- replay: open to first frame ---------------------------------------------------------------


def write_replay_file(path: Path, steps: int) -> None:
    """A ``steps``-step recording of the recording benchmark's 152-channel run."""
    from bench_recording import write_recording

    write_recording(path, steps, keep_all=True)


def _charts_drawn(app) -> bool:
    """Whether every visible chart panel shows its chart (none waits for its summaries)."""
    from octa_tui.tui.panel_widgets import ChartPanel

    history = app.source.history
    charts = [w for w in app._widgets.values() if isinstance(w, ChartPanel) and w.display]
    return bool(charts) and all(w._draw is not None and not w._waiting and w.behind(history, len(history.steps)) == 0
                                for w in charts)


async def replay_first_frame(path: Path, at_end: bool) -> tuple[float, float, float, float, float]:
    """(seconds in ``ReplaySource.open``, seconds from opening to the first composed frame,
    seconds until the whole recording is loaded and checked, CPU seconds the UI thread spent
    from opening to the first frame, seconds from opening until every visible chart is drawn
    from the whole recording), as ``octa-tui replay`` does it: open the source, then start the
    app on it. The CPU figure is the work itself, which other processes sharing the CPUs
    stretch into more wall time. The first frame has the header, the verdicts and event log and
    every panel; a chart whose summaries of a long recording are still being built by the
    ingest worker says "summarising N steps..." in it until they are."""
    from textual._compositor import Compositor

    frames: list[tuple[float, float]] = []
    render_update = Compositor.render_update

    def timed(self, *args, **kwargs):
        result = render_update(self, *args, **kwargs)
        frames.append((time.perf_counter(), time.thread_time()))
        return result

    Compositor.render_update = timed
    gc.collect()  # the previous run's 600 MB goes back before this one allocates
    try:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        source = ReplaySource(str(path), start_at_end=at_end)  # as `octa-tui replay FILE [--at-end]`
        source.open()
        opened = time.perf_counter()
        app = make_app(source)
        async with app.run_test(size=SIZE) as pilot:
            while not frames:
                await pilot.pause(0.01)
            first, first_cpu = frames[0]
            assert app._widgets["header"]._draw is not None, "the first frame had no header facts"
            if at_end:
                assert len(source.history.steps) == source.length
            while not _charts_drawn(app):
                await pilot.pause(0.005)
            drawn = frames[-1][0]
            problems = await asyncio.to_thread(source.verify)  # the app checks it too; this waits
            checked = time.perf_counter()
            assert not problems and source.loaded, problems
    finally:
        Compositor.render_update = render_update
    return opened - t0, first - t0, checked - t0, first_cpu - cpu0, drawn - t0


def replay_end_to_end(path: Path, at_end: bool) -> float:
    """Seconds from starting ``octa-tui replay FILE`` to its header being on screen."""
    flags = ["--at-end"] if at_end else []
    ui = TerminalApp([*CLI, "replay", str(path), *flags], SIZE, watch="● replay".encode())
    try:
        deadline = time.perf_counter() + 30
        while ui.watch_seen_at is None:
            if time.perf_counter() > deadline or ui.proc.poll() is not None:
                raise SystemExit("octa-tui replay did not show its screen within 30 s")
            time.sleep(0.005)
        return ui.watch_seen_at - ui.started
    finally:
        ui.quit()


def replay(steps: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="octa-bench-ui-") as tmp:
        path = Path(tmp) / "replay.octa"
        t = time.perf_counter()
        write_replay_file(path, steps)
        print(f"  wrote a {steps:,}-step, 152-channel recording ({path.stat().st_size / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - t:.1f} s")
        os.sync()
        # One untimed load first: it checks the file and warms the page cache. On a virtual
        # machine whose memory was never touched since boot, the first load pays the host's
        # first-touch cost on every page of the copy (seconds for 600 MB): that figure is
        # printed apart, since it says more about the machine than about the monitor.
        t, c = time.perf_counter(), time.process_time()
        warnings = read_recording(path).warnings
        assert not warnings, warnings
        print(f"  untimed first load (read_recording, CRC-checked): {time.perf_counter() - t:.2f} s wall, "
              f"{time.process_time() - c:.2f} s CPU")
        print(f"  {'start':<24} {'open s':>7} {'open -> first frame s':>22}  {'runs (s)':<20} "
              f"{'UI thread CPU s':>16} {'charts drawn s':>15} {'all loaded + checked s':>23} "
              f"{'process start -> screen s':>26}")
        for at_end, label in ((False, "from the start (default)"), (True, "at the end (--at-end)")):
            results = [asyncio.run(replay_first_frame(path, at_end)) for _ in range(runs)]
            firsts = [r[1] for r in results]
            median = statistics.median(firsts)
            end_to_end = statistics.median(replay_end_to_end(path, at_end) for _ in range(runs))
            verdict = "meets" if median < TARGET_FIRST_FRAME_S else "MISSES"
            print(f"  {label:<24} {statistics.median(r[0] for r in results):7.3f} {median:22.3f}  "
                  f"{', '.join(f'{f:.3f}' for f in firsts):<20} {statistics.median(r[3] for r in results):16.3f} "
                  f"{statistics.median(r[4] for r in results):15.3f} "
                  f"{statistics.median(r[2] for r in results):23.3f} "
                  f"{end_to_end:26.3f}   {verdict} < {TARGET_FIRST_FRAME_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("frames", "follow", "replay"), action="append",
                        help="run only these parts (repeatable; default all)")
    parser.add_argument("--follow-s", type=float, default=60.0, help="seconds to follow the stream (default 60)")
    parser.add_argument("--rate", type=float, default=1000.0, help="steps/s of the synthetic stream")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--replay-steps", type=int, default=1_000_000)
    parser.add_argument("--replay-runs", type=int, default=3)
    args = parser.parse_args()
    parts = set(args.only or ("frames", "follow", "replay"))
    print(f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    if "frames" in parts:
        print(f"\nframe cost, main screen at 200x50 (median of {args.frames} chart frames)")
        print(f"  {'steps':>10} {'panel content ms':>17} {'content + compose ms':>21} {'first frame ms':>15}")
        for steps in (int(s) for s in args.sizes.split(",")):
            draw, frame, first = asyncio.run(frame_cost(steps, args.frames))
            print(f"  {steps:>10,} {draw:17.1f} {frame:21.1f} {first:15.1f}")
    if "follow" in parts:
        print(f"\nfollowing a synthetic {args.rate:.0f} steps/s stream for {args.follow_s:.0f} s "
              f"(octa-tui connect on a 200x50 pty; its process only)")
        follow(args.rate, args.follow_s)
    if "replay" in parts:
        print(f"\nreplay: open to first frame, 200x50, median of {args.replay_runs}")
        replay(args.replay_steps, args.replay_runs)
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
