"""``octa-tui compare`` cost: the first frame over 20 long recordings, and following 8 live runs.

1. First frame: 20 recordings of 100,000 steps each (the 34-channel UNet run of the UI
   tests, lr and seed differing), written once to a temporary folder and read from the page
   cache. In process: from resolving the folder to the first composed frame of the screen
   at 200x50 (loading every recording, bucketing every run's loss into the chart, the run
   table), median of 3. End to end: ``python -m octa_tui.tui.compare.cli DIR`` started on a
   200x50 pseudo-terminal until its header is on screen (interpreter start and imports
   included). Diagnosis and the recordings' checksum check run after the first frame.
2. Follow: 8 publisher processes stream a synthetic run at 1,000 steps/s each through a
   real TrainerLink; the real compare command follows all 8 on a 200x50 pseudo-terminal
   (diagnosis on, output drained). CPU % of one core of the compare process alone, from
   /proc; at the end the run table is exported with the ``e`` key and each run's step count
   there is set against what its publisher sent, to show the ingest kept up.

    python bench/bench_compare.py                         # both, 60 s follow
    python bench/bench_compare.py --only first-frame
    python bench/bench_compare.py --only follow --follow-s 30 --live 8
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tui"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ui import PUBLISHER, TerminalApp  # noqa: E402
from seeded import seeded_chunk, seeded_schema  # noqa: E402

from octa_tui.protocol.messages import StepChunk  # noqa: E402
from octa_tui.protocol.recording import RecordingWriter  # noqa: E402
from octa_tui.tui.compare.app import CompareApp  # noqa: E402
from octa_tui.tui.compare.runs import CompareSession, resolve_targets  # noqa: E402

SIZE = (200, 50)
CLI = [sys.executable, "-m", "octa_tui.tui.compare.cli"]
TARGET_FIRST_FRAME_S = 1.0
TARGET_CPU_PCT = 50.0


def write_recordings(folder: Path, runs: int, steps: int) -> None:
    """``runs`` recordings of ``steps`` steps, each its own run id, lr and seed."""
    base = seeded_schema(steps_per_epoch=1000, epochs=steps // 1000 + 1)
    for i in range(runs):
        schema = dataclasses.replace(base, run_id=f"{i:016x}",
                                     config={**base.config, "lr": [1e-3, 3e-4, 1e-4, 3e-5][i % 4], "seed": i // 4})
        chunk = seeded_chunk(schema, steps, seed=i)
        chunk = StepChunk(schema.run_id, chunk.seq, chunk.step, chunk.epoch, chunk.time, chunk.values)
        with RecordingWriter(folder / f"run{i:02d}.octa", schema) as writer:
            for a in range(0, steps, 8192):
                writer.write(StepChunk(schema.run_id, chunk.seq[a:a + 8192], chunk.step[a:a + 8192],
                                       chunk.epoch[a:a + 8192], chunk.time[a:a + 8192], chunk.values[a:a + 8192]))


async def first_frame(folder: Path) -> tuple[float, float, float]:
    """(seconds to load every run, seconds to the first composed frame, CPU seconds of the
    whole process (loading threads included) until then: the work itself, which other
    processes sharing the CPUs stretch into more wall time)."""
    from textual._compositor import Compositor

    frames: list[tuple[float, float]] = []
    render_update = Compositor.render_update

    def timed(self, *args, **kwargs):
        result = render_update(self, *args, **kwargs)
        frames.append((time.perf_counter(), time.process_time()))
        return result

    Compositor.render_update = timed
    gc.collect()
    session = None
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        session = CompareSession(resolve_targets([str(folder)]))
        session.open()
        loaded = time.perf_counter()
        session.start()
        app = CompareApp(session)
        async with app.run_test(size=SIZE) as pilot:
            while not frames:
                await pilot.pause(0.005)
            first, first_cpu = frames[0]
            assert all(len(r.history.steps) for r in session.runs)
    finally:
        Compositor.render_update = render_update
        if session is not None:
            session.close()
    return loaded - t0, first - t0, first_cpu - cpu0


def end_to_end(folder: Path) -> float:
    """Seconds from starting the compare command to its header on screen."""
    ui = TerminalApp([*CLI, str(folder)], SIZE, watch=b"runs")
    try:
        deadline = time.perf_counter() + 60
        while ui.watch_seen_at is None:
            if time.perf_counter() > deadline or ui.proc.poll() is not None:
                raise SystemExit("the compare command did not show its screen within 60 s")
            time.sleep(0.005)
        return ui.watch_seen_at - ui.started
    finally:
        ui.quit()


def first_frame_part(runs: int, steps: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="octa-bench-compare-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        write_recordings(folder, runs, steps)
        size = sum(p.stat().st_size for p in folder.glob("*.octa"))
        print(f"  wrote {runs} recordings of {steps:,} steps ({size / 1e6:,.0f} MB) in {time.perf_counter() - t:.1f} s")
        asyncio.run(first_frame(folder))  # untimed: warms the page cache and the imports
        results = [asyncio.run(first_frame(folder)) for _ in range(repeats)]
        firsts = [f for _, f, _ in results]
        median = statistics.median(firsts)
        verdict = "meets" if median < TARGET_FIRST_FRAME_S else "MISSES"
        print(f"  {'load all s':>10} {'to first frame s':>17}  {'runs (s)':<22} {'process CPU s':>14} "
              f"{'process start -> screen s':>26}")
        e2e = statistics.median(end_to_end(folder) for _ in range(repeats))
        print(f"  {statistics.median(o for o, _, _ in results):10.3f} {median:17.3f}  "
              f"{', '.join(f'{f:.3f}' for f in firsts):<22} {statistics.median(c for *_, c in results):14.3f} "
              f"{e2e:26.3f}   {verdict} < {TARGET_FIRST_FRAME_S} s (in process)")


def follow_part(live: int, rate: float, duration_s: float) -> None:
    publishers = []
    ui = None
    try:
        pairs = []
        for _ in range(live):
            proc = subprocess.Popen(
                [sys.executable, "-c", PUBLISHER, str(ROOT / "tests" / "tui"), str(rate), str(duration_s + 40)],
                stdout=subprocess.PIPE, text=True)
            publishers.append(proc)
        for proc in publishers:
            telemetry, control = proc.stdout.readline().split()
            pairs.append(f"{telemetry},{control}")
        out = Path(tempfile.mkdtemp(prefix="octa-bench-compare-out-"))
        ui = TerminalApp([*CLI, *pairs, "--out", str(out)], SIZE, watch=f"{live} live".encode())
        deadline = time.perf_counter() + 60
        while ui.watch_seen_at is None:
            if time.perf_counter() > deadline or ui.proc.poll() is not None:
                raise SystemExit("the compare command did not show the live runs within 60 s")
            time.sleep(0.05)
        print(f"  screen up {ui.watch_seen_at - ui.started:.2f} s after start")
        time.sleep(3.0)  # the first catch-up of history is not the steady state
        t0, c0 = time.perf_counter(), ui.cpu_s()
        samples = []
        while time.perf_counter() - t0 < duration_s:
            time.sleep(10.0)
            samples.append(100 * (ui.cpu_s() - c0) / (time.perf_counter() - t0))
            print(f"  {time.perf_counter() - t0:5.0f} s: CPU {samples[-1]:.1f}% of one core so far, "
                  f"RSS {ui.rss_mb():.0f} MB")
        overall = 100 * (ui.cpu_s() - c0) / (time.perf_counter() - t0)
        os.write(ui._master, b"e")
        deadline = time.perf_counter() + 20
        while not list(out.glob("*.csv")) and time.perf_counter() < deadline:
            time.sleep(0.1)
        rows = []
        for path in out.glob("*.csv"):
            rows = list(csv.DictReader(path.open()))
        verdict = "meets" if overall <= TARGET_CPU_PCT else "MISSES"
        print(f"  overall: CPU {overall:.1f}% of one core following {live} runs at {rate:.0f} steps/s each "
              f"({verdict} <= {TARGET_CPU_PCT:.0f}%)")
        shown = [int(r["steps"]) for r in rows]
        rates = [float(r["steps_per_s"]) for r in rows if r["steps_per_s"]]
        if shown:
            print(f"  the exported table: steps per run {min(shown):,}-{max(shown):,}, steps/s per run "
                  f"{min(rates):.0f}-{max(rates):.0f}")
    finally:
        if ui is not None:
            ui.quit()
        sent = []
        for proc in publishers:
            proc.terminate()
            try:
                out_text, _ = proc.communicate(timeout=10)
                sent.append(out_text.strip())
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("first-frame", "follow"), action="append")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--follow-s", type=float, default=60.0)
    args = parser.parse_args()
    parts = set(args.only or ("first-frame", "follow"))
    print(f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    if "first-frame" in parts:
        print(f"\ncompare: {args.runs} recordings of {args.steps:,} steps, first frame at 200x50 "
              f"(median of {args.repeats})")
        first_frame_part(args.runs, args.steps, args.repeats)
    if "follow" in parts:
        print(f"\ncompare following {args.live} live runs at {args.rate:.0f} steps/s each for {args.follow_s:.0f} s "
              "(compare on a 200x50 pty; its process only)")
        follow_part(args.live, args.rate, args.follow_s)
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
