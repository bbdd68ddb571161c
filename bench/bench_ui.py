"""Monitor UI cost: the redraw of the main screen at 200x50, and following a 1k steps/s stream.

1. Frame cost: the main screen at 200x50 over a seeded run of 1k, 100k and 1M steps. Each
   frame is what the redraw timer does when new steps arrived: every visible panel's content
   is drawn again from the whole history (min/max envelopes), then Textual composes the screen.
2. Follow: a publisher process streams a synthetic run at 1,000 steps/s through a real
   TrainerLink; the monitor (headless, 200x50, diagnosis on) follows it through RunFollower.
   CPU % of one core and RSS of the UI process are sampled every 5 s.

    python bench/bench_ui.py                   # full: 60 s follow
    python bench/bench_ui.py --follow-s 15     # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tui"))

from seeded import seeded_chunk, seeded_history  # noqa: E402

from octa_tui.protocol.run import RunHistory  # noqa: E402
from octa_tui.tui.app import make_app  # noqa: E402
from octa_tui.tui.sources import LiveSource, MemorySource  # noqa: E402

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


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def big_history(steps: int) -> RunHistory:
    history = seeded_history(min(steps, 600))
    if steps > 600:
        history.add(seeded_chunk(history.schema, steps - 600, seed=1, start=600))
    return history


async def frame_cost(steps: int, frames: int, new_per_frame: int = 200) -> tuple[float, float, float]:
    """Median ms per frame: (panel content, content + Textual composing the screen), and
    the first frame's ms (which builds the block summaries).

    Before each frame ``new_per_frame`` steps are appended (1k steps/s at 5 Hz), so the
    panels that show steps really change, as when following a run.
    """
    history = big_history(steps)
    app = make_app(MemorySource(history), diagnose_factory=None, refresh_hz=0.5)
    async with app.run_test(size=(200, 50)) as pilot:
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


async def follow(rate: float, duration_s: float) -> None:
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(ROOT / "tests" / "tui"), str(rate), str(duration_s + 15)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        telemetry, control = publisher.stdout.readline().split()
        source = LiveSource(telemetry, control)
        app = make_app(source)
        async with app.run_test(size=(200, 50)) as pilot:
            while not app.opened:
                await pilot.pause(0.05)
            t_start, c_start = time.perf_counter(), cpu_s()
            last_t, last_c, last_steps = t_start, c_start, len(source.history.steps)
            print(f"  {'t (s)':>6} {'CPU % of one core':>18} {'RSS MB':>8} {'steps/s in':>11} {'steps held':>11}")
            samples = []
            while time.perf_counter() - t_start < duration_s:
                await pilot.pause(5.0)
                now, cpu = time.perf_counter(), cpu_s()
                steps = len(source.history.steps)
                pct = 100 * (cpu - last_c) / (now - last_t)
                rate_in = (steps - last_steps) / (now - last_t)
                samples.append((now - t_start, pct, rss_mb()))
                print(f"  {now - t_start:6.0f} {pct:18.1f} {rss_mb():8.1f} {rate_in:11.0f} {steps:11,}")
                last_t, last_c, last_steps = now, cpu, steps
            overall = 100 * (cpu_s() - c_start) / (time.perf_counter() - t_start)
            print(f"  overall CPU {overall:.1f}% of one core; RSS {samples[0][2]:.0f} -> {samples[-1][2]:.0f} MB; "
                  f"gaps filled {source.status().gaps_filled}, steps missing "
                  f"{int(source.history.steps.seq[-1]) - int(source.history.steps.seq[0]) + 1 - len(source.history.steps)}")
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--follow-s", type=float, default=60.0, help="seconds to follow the stream (default 60)")
    parser.add_argument("--rate", type=float, default=1000.0, help="steps/s of the synthetic stream")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    args = parser.parse_args()
    print(f"frame cost, main screen at 200x50 (median of {args.frames} frames)")
    print(f"  {'steps':>10} {'panel content ms':>17} {'content + compose ms':>21} {'first frame ms':>15}")
    for steps in (int(s) for s in args.sizes.split(",")):
        draw, frame, first = asyncio.run(frame_cost(steps, args.frames))
        print(f"  {steps:>10,} {draw:17.1f} {frame:21.1f} {first:15.1f}")
    print(f"\nfollowing a synthetic {args.rate:.0f} steps/s stream for {args.follow_s:.0f} s (UI process, 200x50)")
    asyncio.run(follow(args.rate, args.follow_s))


if __name__ == "__main__":
    main()
