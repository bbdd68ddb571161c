"""``octa-tui compare RUNS...``: several runs, live and recorded, side by side.

RUNS are recordings (``*.octa``), folders (every recording below them), running trainers
(run id, pid or telemetry endpoint, as ``octa-tui list`` shows them) or ``TELEMETRY,CONTROL``
endpoint pairs; ``--live`` adds every trainer running on this machine. ``--csv FILE`` writes
the run table without opening the screen (for scripts).

Enter on a run opens its full monitor (a recording at its end, a live run followed); closing
that monitor comes back to the comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .runs import CompareError, CompareRun, CompareSession, resolve_targets


def build_parser() -> argparse.ArgumentParser:
    """The compare subcommand's options."""
    parser = argparse.ArgumentParser(prog="octa-tui compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="recording, folder of recordings, run id, pid, endpoint or TELEMETRY,CONTROL")
    parser.add_argument("--live", action="store_true", help="add every trainer running on this machine")
    parser.add_argument("--channel", default="loss/total",
                        help="channel shown first, e.g. loss/dice, val/dice, opt/lr, grad/<layer> (default %(default)s)")
    parser.add_argument("--x", dest="mode", choices=("step", "epoch", "time"), default="step", help="x axis")
    parser.add_argument("--group", default=None, metavar="KEY",
                        help="group runs by a config key, or 'seed' for every differing key but the seed")
    parser.add_argument("--out", default=".", metavar="DIR", help="where CSV and SVG exports go (default: here)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="write the run table to FILE and exit")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each live trainer")
    parser.add_argument("--lang", choices=("en", "zh"), default=None,
                        help="language of the verdicts in a run's full monitor (default: $OCTA_TUI_LANG, else en)")
    return parser


def _run_monitor(run: CompareRun) -> None:
    """The full monitor of one run (blocking until the user closes it)."""
    from ..app import make_app
    from ..sources import LiveSource, ReplaySource

    if run.live:
        source = LiveSource(run.target.telemetry, run.target.control)
    else:
        source = ReplaySource(run.target.path, start_at_end=True, playing=False)
    try:
        source.open()
    except Exception as err:  # noqa: BLE001 - said, and the comparison comes back
        print(f"octa-tui compare: cannot open run #{run.number}: {err}", file=sys.stderr)
        source.close()
        return
    make_app(source).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``octa-tui compare``; the exit status."""
    from .app import CompareApp, CompareState, OpenMonitor, run_row
    from .table import BY_ALL_BUT_SEED, differing_keys, write_csv

    args = build_parser().parse_args(argv)
    if args.lang:
        from ...diagnosis.texts import set_language

        set_language(args.lang)
    try:
        targets = resolve_targets(args.runs, live_all=args.live)
    except CompareError as err:
        print(f"octa-tui compare: {err}", file=sys.stderr)
        return 2
    if not targets:
        print("octa-tui compare: name the runs to compare (recordings, folders, run ids) or pass --live",
              file=sys.stderr)
        return 2
    session = CompareSession(targets, timeout_s=args.timeout)
    try:
        session.open()
        failed = [r for r in session.runs if r.error]
        for run in failed:
            print(f"octa-tui compare: run #{run.number} {run.label}: {run.error}", file=sys.stderr)
        if len(failed) == len(session.runs):
            return 1
        if args.csv:
            for run in session.runs:
                session.diagnose_run(run)
            rows = [run_row(run) for run in session.runs]
            write_csv(args.csv, rows, differing_keys([dict(r.config) for r in rows]))
            print(args.csv)
            return 0
        session.start()
        group = BY_ALL_BUT_SEED if args.group == "seed" else args.group
        state = CompareState(channel=args.channel, mode=args.mode, group_by=group)
        while True:
            result = CompareApp(session, state, export_dir=args.out).run()
            if isinstance(result, OpenMonitor):
                _run_monitor(session.runs[result.number - 1])
                continue
            return 0
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
