"""``octa-tui send``, ``watch`` and ``verdicts``: the monitor for scripts and language-model agents.

A stable interface (README, "A command line for scripts and agents"): JSON lines on stdout
with the shapes of :mod:`octa_tui.tui.agent_records`, and exit statuses a script can branch on:

- 0: done (``send``: the trainer applied the command; ``watch``: the run finished or was
  stopped, or the ``--steps``/``--seconds`` limit was reached; ``verdicts``: read, and no
  verdict at or above ``--fail-on`` at the end)
- 1: the trainer refused the command (``send``), or ``--fail-on`` matched (``verdicts``)
- 2: the command line is wrong (unknown command, bad value, bad file): nothing was sent
- 3: no such run, or no trainer answered (``watch``: the run was lost)

Nothing here loads textual or torch, so each command starts in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
END_STATES = ("finished", "stopped", "failed")
DEFAULT_EVERY = 50
MAX_EVALUATIONS = 2000  # `verdicts` on a long recording: evaluate at most this often


def add_commands(sub: Any, add_lang: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``send``, ``watch`` and ``verdicts`` to the ``octa-tui`` subparsers."""
    send = sub.add_parser(
        "send", help="send one command to a running trainer and print its reply as JSON",
        description="Send one command to a running trainer; prints the reply as one JSON object. "
                    "Exit status: 0 applied, 1 refused by the trainer, 2 bad command (nothing sent), "
                    "3 no such run or no answer.",
        epilog="commands: set_lr LR | set_loss_weights BCE DICE | set_pos_weight W | set_clip NORM (0: off) | "
               "pause | resume | checkpoint | stop | ping; values also as name=value (bce=0.5 dice=0.5), "
               "or a verdict's fix as JSON ('{\"op\": \"set_clip\", \"args\": {\"clip\": 1.0}}')")
    send.add_argument("run", metavar="RUN", help="run id (or its first digits), pid, endpoint, or text matching "
                                                 "one run's task, model or recording path")
    send.add_argument("words", nargs="+", metavar="COMMAND", help="the command and its values, e.g. set_lr 1e-4")
    _link_flags(send)

    watch = sub.add_parser(
        "watch", help="follow a running trainer: summaries, verdict changes, events as JSON lines",
        description="Follow a running trainer and print what happens: a summary every N steps, each "
                    "verdict as it appears, changes or clears, events (commands applied, checkpoints, "
                    "warnings), epochs, state changes, and the replies to commands read from stdin "
                    "(--commands). Ends when the run ends.")
    watch.add_argument("run", metavar="RUN", help="as for send")
    watch.add_argument("--json", action="store_true", help="JSON lines (default: one readable line per record)")
    watch.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="N",
                       help="a summary every N steps (default %(default)s)")
    watch.add_argument("--channels", action="append", default=[], metavar="GLOB",
                       help="channels in summaries (repeatable; default: loss/* opt/* gradstat/* out/* time/*)")
    watch.add_argument("--steps", type=int, default=0, metavar="N", help="stop after N new steps (0: no limit)")
    watch.add_argument("--seconds", type=float, default=0.0, metavar="S", help="stop after S seconds (0: no limit)")
    watch.add_argument("--commands", action="store_true",
                       help="read commands from stdin, one per line (as for send: set_lr 1e-4), and print replies")
    add_lang(watch)
    _link_flags(watch)

    verdicts = sub.add_parser(
        "verdicts", help="diagnose a recording (*.octa): the verdicts as the run grew, and at its end",
        description="Feed a recording to the diagnosis engine as the monitor would have seen it grow, and "
                    "print each verdict as it appears, changes and clears, then the verdicts at the end.")
    verdicts.add_argument("file", help="the recording (*.octa)")
    verdicts.add_argument("--json", action="store_true", help="JSON lines (default: readable lines)")
    verdicts.add_argument("--every", type=int, default=0, metavar="N",
                          help="evaluate every N steps (default: 5, or fewer evaluations for long runs: at most "
                               f"{MAX_EVALUATIONS})")
    verdicts.add_argument("--fail-on", choices=("info", "warning", "critical"), default=None,
                          help="exit 1 when a verdict of this severity or worse is shown at the end")
    add_lang(verdicts)


def _link_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", default=None, metavar="ENDPOINT",
                        help="control endpoint (needed with a telemetry endpoint no run file names)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for the trainer's answer (default %(default)s)")
    parser.add_argument("--keys", metavar="DIR", default=None, help="CurveZMQ keys, for a trainer bound with --keys")
    parser.add_argument("--insecure", action="store_true", help="a non-loopback endpoint without keys")


class Output:
    """Writes records: JSON lines, or readable lines; flushed at once (a pipe sees each record)."""

    def __init__(self, as_json: bool, stream: Any = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def __call__(self, rec: dict[str, Any]) -> None:
        from .agent_text import text_line

        line = json.dumps(rec, ensure_ascii=False) if self.as_json else text_line(rec)
        self.stream.write(line + "\n")
        self.stream.flush()


def _say(message: str) -> None:
    print(f"octa-tui: {message}", file=sys.stderr, flush=True)


def _lang(args: argparse.Namespace) -> str:
    from ..diagnosis.verdict import LANGS

    lang = getattr(args, "lang", None) or os.environ.get("OCTA_TUI_LANG", "en")
    return lang if lang in LANGS else "en"


def _resolve(args: argparse.Namespace):
    """(target, None) or (None, exit status) after printing the error record."""
    from ..protocol.runfiles import list_run_files
    from .agent_records import error_record
    from .run_target import TargetError, TargetUsageError, resolve_target

    try:
        return resolve_target(args.run, list_run_files(), args.control, insecure=args.insecure), None
    except TargetError as err:
        usage = isinstance(err, TargetUsageError)
        Output(True)(error_record(args.run, "usage" if usage else "not_found", str(err)))
        _say(f"error: {err}")
        return None, EXIT_USAGE if usage else EXIT_UNREACHABLE


def _unreachable(out: Output, target: Any, args: argparse.Namespace, err: Exception, op: str = "") -> int:
    """Print that no trainer answered at ``target``'s control address; the exit status."""
    from .agent_records import error_record

    reason = f"no answer from the trainer at {target.control} within {args.timeout:g} s ({err})"
    out(error_record(target.label, "unreachable", reason, op))
    _say(f"error: {reason}")
    return EXIT_UNREACHABLE


def _curve(args: argparse.Namespace):
    from ..protocol.keys import ClientCurve

    return ClientCurve.from_dir(args.keys) if args.keys else None


def cmd_send(args: argparse.Namespace) -> int:
    """Validate the command, resolve RUN, send, print the reply; the exit status says how it went."""
    from ..protocol.errors import ProtocolError
    from ..protocol.transport import ControlClient, ControlTimeout
    from .agent_commands import CommandWordsError, parse_command
    from .agent_records import error_record, reply_record

    out = Output(True)
    try:
        command = parse_command(args.words)
    except CommandWordsError as err:
        out(error_record(args.run, "usage", str(err)))
        _say(f"error: {err}; nothing was sent")
        return EXIT_USAGE
    target, status = _resolve(args)
    if target is None:
        return status
    try:
        client = ControlClient(target.control, args.timeout, insecure=args.insecure, curve=_curve(args))
    except (ProtocolError, ValueError) as err:
        out(error_record(target.label, "usage", str(err), command.op))
        _say(f"error: {err}; nothing was sent")
        return EXIT_USAGE
    try:
        reply = client.request(command)
    except ControlTimeout as err:
        return _unreachable(out, target, args, err, command.op)
    finally:
        client.close()
    out(reply_record(target.label, command, reply))
    if not reply.ok:
        _say(f"the trainer refused {command.op}: {reply.reason}")
        return EXIT_REFUSED
    return EXIT_OK


def cmd_verdicts(args: argparse.Namespace) -> int:
    """Diagnose a recording as it grew; print verdict changes, then the verdicts at its end."""
    from ..diagnosis import Engine, Severity
    from ..protocol.errors import ProtocolError
    from ..protocol.recording import read_recording
    from .agent_records import error_record, record, run_record, verdict_fields
    from .agent_replay import diagnose_growing

    out = Output(args.json)
    if args.every < 0:
        out(error_record(args.file, "usage", f"--every must be a positive number of steps, got {args.every}"))
        return EXIT_USAGE
    try:
        recording = read_recording(args.file)
    except (ProtocolError, OSError) as err:
        reason = f"{args.file}: {getattr(err, 'strerror', None) or err}"
        out(error_record(args.file, "usage", reason))
        _say(f"error: {reason}")
        return EXIT_USAGE
    history = recording.history
    steps = len(history.steps)
    last = int(history.steps.step[-1]) if steps else -1
    out(run_record(history.schema, steps, last, source=os.path.abspath(args.file)))
    for warning in recording.warnings:
        out(record("warning", message=warning))
    every = args.every or max(5, -(-steps // MAX_EVALUATIONS))
    result = diagnose_growing(history, Engine(lang=_lang(args)), every, on_change=out)
    out(record("final", run_id=history.run_id, steps=steps, last_step=last, every=every,
               evaluations=result.evaluations, verdicts=[verdict_fields(v) for v in result.final]))
    if args.fail_on:
        bound = {"info": Severity.INFO, "warning": Severity.WARN, "critical": Severity.CRIT}[args.fail_on]
        if any(v.severity >= bound for v in result.final):
            return EXIT_REFUSED
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a run until it ends (or a limit), printing records as they happen."""
    from ..diagnosis import Engine
    from ..protocol.errors import ProtocolError
    from ..protocol.follow import RunFollower
    from ..protocol.transport import ControlTimeout
    from .agent_records import DEFAULT_CHANNELS, error_record
    from .agent_watch import Watcher

    out = Output(args.json)
    if args.every < 1:
        out(error_record(args.run, "usage", f"--every must be a positive number of steps, got {args.every}"))
        return EXIT_USAGE
    target, status = _resolve(args)
    if target is None:
        return status
    try:
        follower = RunFollower(target.telemetry, target.control, timeout_s=args.timeout, insecure=args.insecure,
                               curve=_curve(args))
    except (ProtocolError, ValueError) as err:
        out(error_record(target.label, "usage", str(err)))
        _say(f"error: {err}")
        return EXIT_USAGE
    commands = _stdin_commands() if args.commands else None
    try:
        try:
            follower.connect()
        except ControlTimeout as err:
            return _unreachable(out, target, args, err)
        watcher = Watcher(follower, Engine(lang=_lang(args)), out, every=args.every,
                          channels=tuple(args.channels) or DEFAULT_CHANNELS, label=target.label)
        end = watcher.run(max_steps=args.steps, max_seconds=args.seconds, commands=commands)
    finally:
        follower.close()
    return EXIT_UNREACHABLE if end == "lost" else EXIT_OK


def _stdin_commands() -> queue.Queue:
    """Lines of stdin, split as a shell would, on a queue (None at end of input)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                words = shlex.split(line, comments=True)
                if words:
                    lines.put(words)
        except (OSError, ValueError):
            pass
        lines.put(None)

    threading.Thread(target=read, name="octa-watch-stdin", daemon=True).start()
    return lines


COMMANDS = {"send": cmd_send, "watch": cmd_watch, "verdicts": cmd_verdicts}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m octa_tui.tui.agent_cli send|watch|verdicts ...`` (the same as ``octa-tui ...``)."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
