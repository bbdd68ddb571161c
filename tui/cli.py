"""The ``octa-tui`` command line: demo, list, connect, replay, diagnose-dataset, export, attach,
run, compare, and the commands for scripts (send, watch, verdicts).

Every monitor subcommand builds a source and hands it to :func:`octa_tui.tui.app.make_app`
(the same factory the tests use). Errors are one line on stderr and a non-zero exit status,
never a traceback. Output for scripts (``list --json``, ``send``, ``watch --json``,
``verdicts --json``) ends quietly when its reader goes away (``| head``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

EXIT_ERROR = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
LANGUAGES = ("en", "zh")
ENV_LANG = "OCTA_TUI_LANG"
# Subcommands whose arguments belong to another module's parser; passed on verbatim.
DELEGATED = {
    "run": ("octa_tui.tui.run_command", "run a training script under the monitor: octa-tui run -- python train.py ARGS"),
    "compare": ("octa_tui.tui.compare.cli", "compare recorded or running sessions side by side"),
}


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _add_lang(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", choices=LANGUAGES, default=None,
                        help=f"language of the verdicts (default: ${ENV_LANG}, else en)")


def build_parser() -> argparse.ArgumentParser:
    """The ``octa-tui`` subcommands and their flags."""
    parser = argparse.ArgumentParser(prog="octa-tui", description="Terminal monitor for PyTorch training: "
                                     "live panels, diagnosis, and keys that steer the run.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="start a trainer on synthetic data and monitor it")
    demo.add_argument("--steps", type=int, default=0, help="stop training after N steps (0: no limit)")
    demo.add_argument("--images", type=int, default=256, help="synthetic images (default %(default)s)")
    demo.add_argument("--image-size", type=int, default=64, help="image side in pixels (default %(default)s)")
    demo.add_argument("--base-width", type=int, default=16, help="UNet base width (default %(default)s)")
    demo.add_argument("--device", default="", help="cpu or cuda (default: what the trainer picks)")
    demo.add_argument("--run-dir", default=None,
                      help="where the trainer writes its log, checkpoints, recording (default: a new private folder "
                           "under ~/.local/share/octa-tui/runs, or $OCTA_TUI_RUNS_DIR; the newest 20 are kept)")
    demo.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch threads of the trainer (default: 1 on a machine with up to 4 cores, else torch's)")
    demo.add_argument("--refresh-hz", type=float, default=5.0, help=argparse.SUPPRESS)
    demo.add_argument("--scenario", default="", metavar="NAME",
                      help="train a fault scenario instead of a healthy run (`octa-tui scenarios --list` names them)")

    scenarios = sub.add_parser("scenarios", help="run every fault scenario small and check the verdicts")
    scenarios.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    scenarios.add_argument("--list", action="store_true", help="list the scenarios (fault, verdict, fix) and exit")
    scenarios.add_argument("--seed", type=int, default=0)
    scenarios.add_argument("--keep", metavar="DIR", help="keep the recordings in DIR")
    _add_lang(scenarios)
    _add_lang(demo)

    lister = sub.add_parser("list", help="list the trainers running on this machine (at a terminal: attach to "
                                         "the one you pick)")
    lister.add_argument("--json", action="store_true", help="print the list as JSON and exit")
    _add_lang(lister)

    connect = sub.add_parser("connect", help="monitor a trainer by endpoint or run id")
    connect.add_argument("target", help="telemetry endpoint (tcp://127.0.0.1:PORT, ipc://PATH) or run id")
    connect.add_argument("--control", default=None, help="control endpoint (default: from the run file)")
    connect.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the trainer")
    connect.add_argument("--keys", metavar="DIR", default=None,
                         help="CurveZMQ keys for a trainer bound with --keys: DIR/monitor.key_secret and "
                              "DIR/trainer.key (the trainer's public key)")
    connect.add_argument("--insecure", action="store_true",
                         help="connect to a non-loopback endpoint without keys")
    _add_lang(connect)

    keys = sub.add_parser("keys", help="CurveZMQ keys for trainers bound beyond loopback")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = keys_sub.add_parser("generate", help="write a key pair (NAME.key public, NAME.key_secret 0600)")
    generate.add_argument("dir", nargs="?", default="~/.config/octa-tui/keys", help="folder (default %(default)s)")
    generate.add_argument("--name", default="monitor", help="monitor (default) or trainer")

    replay = sub.add_parser("replay", help="replay a recorded session (*.octa)")
    replay.add_argument("file")
    replay.add_argument("--speed", type=int, default=1, choices=(1, 4, 16, 64))
    replay.add_argument("--paused", action="store_true", help="start paused at the beginning")
    replay.add_argument("--at-end", action="store_true", help="start at the end of the recording")
    _add_lang(replay)

    dataset = sub.add_parser("diagnose-dataset", help="the seed's dataset check as a report", add_help=False)
    dataset.add_argument("rest", nargs=argparse.REMAINDER)

    export = sub.add_parser(
        "export", help="export a recording (csv, jsonl, tensorboard)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a recorded session (*.octa) for other tools.",
        epilog="what goes where:\n"
               "  csv          OUT: one row per step (seq, step, epoch, time, one column per channel);\n"
               "               epoch summaries in OUT.epochs.csv, events in OUT.events.csv (-o - : steps only)\n"
               "  jsonl        one JSON object per line, every record in order: schema, step, epoch,\n"
               "               event, dataset, preview (shapes only, no pixels), warning (torn tail)\n"
               "  tensorboard  DIR/events.out.tfevents.*: every channel as a scalar per step, epoch\n"
               "               metrics as train/<name> and val/<name>; events and previews are left out\n"
               "NaN/Inf: csv writes nan, inf, -inf (pandas reads them); jsonl writes null and keeps the\n"
               "text in the record's \"nonfinite\" object; TensorBoard keeps them as floats.\n"
               "--channels and --every apply to steps only. A torn recording exports what is readable\n"
               "and warns.")
    export.add_argument("file", help="the recording (*.octa)")
    export.add_argument("--format", "-f", dest="format", required=True, choices=("csv", "jsonl", "tensorboard"))
    export.add_argument("-o", "--output", default=None, metavar="OUT",
                        help="output file (csv, jsonl; - for stdout) or folder (tensorboard); "
                             "default: next to FILE (run.csv, run.jsonl, run.tensorboard/)")
    export.add_argument("--channels", action="append", default=[], metavar="GLOB",
                        help="export only channels matching GLOB, e.g. 'loss/*' (repeatable; default: all)")
    export.add_argument("--every", type=int, default=1, metavar="N",
                        help="export every Nth step, counted from the first (default 1: every step)")
    export.add_argument("--force", action="store_true", help="overwrite output files that exist")
    attach = sub.add_parser("attach", help="monitor a trainer on another machine over SSH")
    attach.add_argument("host", metavar="[user@]host", help="where the trainer runs (as for ssh)")
    attach.add_argument("--port", type=int, default=None, help="ssh port (default: ssh's)")
    attach.add_argument("--identity", metavar="FILE", default=None, help="ssh private key (ssh -i)")
    attach.add_argument("-J", "--jump", metavar="[user@]host[:port]", default=None,
                        help="reach the host through a jump host, as ssh -J (ProxyJump) does: a login node; "
                             "several separated by commas")
    attach.add_argument("-F", "--ssh-config", metavar="FILE", default=None,
                        help="an ssh config file (ssh -F); it applies to the jump hosts too")
    attach.add_argument("-o", dest="ssh_option", metavar="OPTION", action="append", default=[],
                        help="an ssh -o option, e.g. -o StrictHostKeyChecking=accept-new (repeatable)")
    attach.add_argument("--remote-octa-tui", metavar="CMD", default="octa-tui",
                        help="how to run octa-tui on the host, e.g. ~/venv/bin/octa-tui (default %(default)s)")
    attach.add_argument("--keys", metavar="DIR", default=None, help="CurveZMQ keys, for a trainer bound with --keys")
    attach.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the trainer")
    _add_lang(attach)
    from .agent_cli import add_commands

    add_commands(sub, _add_lang)
    for name, (_module, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)  # parsed by its own module (see main)
    return parser


def _run_app(source, **options) -> int:
    from .app import make_app

    app = make_app(source, **options)
    result = app.run()
    return int(result or 0)


def _open(source) -> None:
    """Connect or load before the screen opens, so a failure is one line, not a screen."""
    try:
        source.open()
    except Exception as err:  # noqa: BLE001 - shown as one line
        source.close()
        raise CliError(_one_line(err)) from None


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a synthetic trainer, monitor it, stop it when the monitor quits; say where the
    recording is and how to replay it."""
    import shlex

    from . import demo

    trainer_args = demo.demo_trainer_args(steps=args.steps, images=args.images,
                                          image_size=args.image_size, base_width=args.base_width, device=args.device,
                                          threads=args.threads,
                                          extra=["--scenario", args.scenario] if args.scenario else ())
    with demo.DemoTrainer(trainer_args, run_dir=args.run_dir) as trainer:
        print(f"octa-tui demo: starting a trainer (log: {trainer.log_path}) ...", file=sys.stderr, flush=True)
        # The screen opens at once; the source starts the trainer on the monitor's worker thread.
        source = demo.DemoSource(trainer)
        status = _run_app(source, refresh_hz=args.refresh_hz)
        started, failure = bool(source.telemetry), source.failure  # as they were when the monitor quit
        print("octa-tui demo: stopping the trainer ...", file=sys.stderr, flush=True)
    if failure:
        raise CliError(failure)
    if not started:
        print(f"octa-tui demo: quit before the trainer had started (its log: {trainer.log_path})", file=sys.stderr)
        return status
    recording = trainer.recording()
    if recording is None:
        print(f"octa-tui demo: trainer stopped; its run folder is {trainer.run_dir} (no recording was written)",
              file=sys.stderr)
    else:
        print(f"octa-tui demo: trainer stopped; the recording is {recording}\n"
              f"  replay it:  octa-tui replay {shlex.quote(str(recording))}", file=sys.stderr)
    return status


def _running():
    from ..protocol.runfiles import list_run_files

    return list_run_files()


def describe_run(info, now: float | None = None) -> str:
    """One line per running trainer, as ``octa-tui list`` prints it."""
    import time

    age = ""
    if info.started_at:
        seconds = max(0, int((time.time() if now is None else now) - info.started_at))
        age = f"  up {seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 60 else f"  up {seconds}s"
    what = " ".join(part for part in (info.task, info.model) if part) or "trainer"
    return f"run {info.run_id}  {what}  pid {info.pid}{age}  {info.telemetry}"


def choose_run(runs: Sequence, ask) -> object | None:
    """The run the user picks at a terminal, or None when they pick none.

    ``ask(prompt)`` returns the typed answer. One run is attached to only when the user says
    so (Enter or y); several are picked by number; an empty answer or ``q`` picks none.
    Anything else raises :class:`CliError` naming the choices.
    """
    if len(runs) == 1:
        answer = ask("attach to it? [Y/n] ").strip().lower()
        if answer in ("", "y", "yes"):
            return runs[0]
        if answer in ("n", "no", "q"):
            return None
        raise CliError(f"{answer!r} is not y or n")
    answer = ask(f"attach to which trainer? [1-{len(runs)}, Enter: none] ").strip().lower()
    if answer in ("", "q", "n", "no"):
        return None
    if not answer.isdigit() or not 1 <= int(answer) <= len(runs):
        raise CliError(f"{answer!r} is not one of 1-{len(runs)}")
    return runs[int(answer) - 1]


def _interactive() -> bool:
    """Whether a person is at this terminal (stdin and stdout both a tty)."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_list(args: argparse.Namespace) -> int:
    """List running trainers and exit; at a terminal, attach to the one the user picks.

    Output that is not a terminal (a pipe, a file, a script) gets the list and nothing else:
    no screen is ever started there, and no run is attached to unless the user chose it.
    """
    runs = _running()
    if args.json:
        _write_out(json.dumps([asdict(info) for info in runs], indent=2) + "\n")
        return 0
    if not runs:
        raise CliError("no trainer is running on this machine; start one with `octa-train --synthetic 64` "
                       "or try `octa-tui demo`")
    lines = [f"  {i}. {describe_run(info)}" for i, info in enumerate(runs, 1)]
    if not _interactive():
        _write_out("\n".join(lines) + "\nattach with: octa-tui connect RUN_ID (or octa-tui send/watch RUN_ID, "
                   "see octa-tui send --help)\n")
        return 0
    _write_out("\n".join(lines) + "\n")
    chosen = choose_run(runs, input)
    if chosen is None:
        return 0
    return _connect(chosen.telemetry, chosen.control)


def _write_out(text: str) -> None:
    """Write to stdout and flush now, so a closed pipe is seen here (and ended quietly by main)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _connect(telemetry: str, control: str, timeout_s: float = 5.0, keys: str | None = None,
             insecure: bool = False) -> int:
    from ..protocol.errors import ProtocolError
    from ..protocol.keys import ClientCurve
    from .sources import LiveSource

    try:
        curve = ClientCurve.from_dir(keys) if keys else None
    except ProtocolError as err:
        raise CliError(f"--keys: {err}") from None
    source = LiveSource(telemetry, control, timeout_s=timeout_s, curve=curve, insecure=insecure)
    _open(source)
    return _run_app(source)


def cmd_keys(args: argparse.Namespace) -> int:
    """``octa-tui keys generate [DIR] [--name NAME]``: a CurveZMQ key pair, and what to do with it."""
    from ..protocol.errors import ProtocolError
    from ..protocol.keys import generate_keys

    try:
        public, secret = generate_keys(args.dir, args.name)
    except ProtocolError as err:
        raise CliError(str(err)) from None
    print(f"public key  {public}\nsecret key  {secret}  (0600: keep it on this machine)")
    folder = public.parent
    if args.name == "trainer":
        print(f"copy each monitor's monitor.key into {folder}/authorized/, give {public} to the monitors, "
              f"then: octa-train --bind tcp://0.0.0.0:PORT --keys {folder} ...")
    else:
        print(f"copy {public} into the trainer's KEYS/authorized/ folder and its trainer.key into {folder}/, "
              f"then: octa-tui connect tcp://HOST:PORT --control tcp://HOST:PORT+1 --keys {folder}")
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    """Monitor a trainer given its run id (or a prefix), pid or endpoint; a target that names
    no trainer is one line saying which mistake it is (unknown run id, no scheme, nothing
    listening, no control endpoint) and what to type instead."""
    from ..protocol.runfiles import TargetError, resolve_target

    try:
        target = resolve_target(args.target, args.control, insecure=args.insecure or bool(args.keys))
    except TargetError as err:
        raise CliError(str(err)) from None
    return _connect(target.telemetry, target.control, args.timeout, args.keys, args.insecure)


def cmd_replay(args: argparse.Namespace) -> int:
    """Open a recording in the monitor."""
    from pathlib import Path

    from .sources import ReplaySource

    if not Path(args.file).is_file():
        raise CliError(f"{args.file}: no such recording (recordings are *.octa files in the trainer's run folder)")
    source = ReplaySource(args.file, speed=args.speed, playing=not args.paused, start_at_end=args.at_end)
    _open(source)
    return _run_app(source)


def cmd_diagnose_dataset(args: argparse.Namespace) -> int:
    """The seed's dataset check (no torch is loaded)."""
    from ..trainer.dataset_report import diagnose_dataset_main

    return int(diagnose_dataset_main(args.rest))


def cmd_scenarios(args: argparse.Namespace) -> int:
    """Run the fault scenarios (in a trainer process: the monitor does not load torch)."""
    import subprocess

    flags = ["--seed", str(args.seed)] + (["--list"] if args.list else []) + (["--keep", args.keep] if args.keep else [])
    return subprocess.call([sys.executable, "-m", "octa_tui.trainer.scenario_check", *flags, *args.names])


def cmd_attach(args: argparse.Namespace) -> int:
    """Find the trainers on a host over ssh, tunnel to the chosen one, monitor it, close the tunnel."""
    import tempfile

    from .attach import (
        AttachError,
        SshTarget,
        Tunnel,
        choose_trainer,
        describe,
        parse_destination,
        plan_forward,
        quote_remote,
        remote_trainers,
    )

    try:
        target = SshTarget(parse_destination(args.host), args.port, args.identity, tuple(args.ssh_option),
                           quote_remote(args.remote_octa_tui), jump=args.jump, config=args.ssh_config)
        info = choose_trainer(remote_trainers(target), where=args.host)
        with tempfile.TemporaryDirectory(prefix="octa-attach-") as local_dir:  # 0700: local sockets stay ours
            forwards = [plan_forward(info.telemetry, local_dir, "telemetry"),
                        plan_forward(info.control, local_dir, "control")]
            print(f"octa-tui: {describe(info, args.host)} through ssh", file=sys.stderr, flush=True)
            with Tunnel(target, forwards):
                return _connect(forwards[0].local, forwards[1].local, args.timeout, args.keys)
    except AttachError as err:
        raise CliError(str(err)) from None


def cmd_export(args: argparse.Namespace) -> int:
    """Export a recording to csv, jsonl or a TensorBoard event file (no textual or torch loaded)."""
    from ..protocol.errors import ProtocolError
    from ..protocol.export import export_recording

    if args.every < 1:
        raise CliError(f"--every must be a positive number of steps, got {args.every}")
    to_stdout = args.output == "-"
    if to_stdout and args.format == "tensorboard":
        raise CliError("a TensorBoard export is a folder of event files; name it with -o DIR (not -o -)")
    try:
        result = export_recording(args.file, args.format, sys.stdout if to_stdout else args.output,
                                  patterns=args.channels, every=args.every, overwrite=args.force)
    except ProtocolError as err:
        raise CliError(_one_line(err)) from None
    except BrokenPipeError:
        if not to_stdout:
            raise CliError(f"cannot write the export: the pipe closed ({args.output})") from None
        # `octa-tui export ... -o - | head`: the reader has what it wanted. Quiet, as other
        # command line tools are; stdout is pointed at /dev/null so closing it cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as err:
        where = err.filename or args.output or "next to the recording"
        after = "" if to_stdout else "; nothing was written"
        raise CliError(f"cannot write the export: {err.strerror or err} ({where}){after}") from None
    for warning in result.warnings:
        print(f"octa-tui: warning: {warning}; exported what was readable", file=sys.stderr)
    if result.skipped:
        kinds = ", ".join(f"{kind} ({count})" for kind, count in result.skipped.items())
        hint = "use -o FILE for the epochs and events files" if to_stdout and args.format == "csv" else \
            "jsonl keeps every record"
        print(f"octa-tui: note: left out {kinds}: {args.format} has no place for them ({hint})", file=sys.stderr)
    if not to_stdout:
        where = ", ".join(str(path) for path in result.files)
        print(f"octa-tui: exported {result.steps} steps x {result.channels} channels and {result.records} "
              f"other records to {where}", file=sys.stderr)
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "list": cmd_list,
    "connect": cmd_connect,
    "replay": cmd_replay,
    "diagnose-dataset": cmd_diagnose_dataset,
    "scenarios": cmd_scenarios,
    "export": cmd_export,
    "attach": cmd_attach,
    "keys": cmd_keys,
    "send": lambda args: _agent("cmd_send", args),
    "watch": lambda args: _agent("cmd_watch", args),
    "verdicts": lambda args: _agent("cmd_verdicts", args),
}


def _agent(name: str, args: argparse.Namespace) -> int:
    """The commands for scripts and agents live in :mod:`octa_tui.tui.agent_cli`."""
    from . import agent_cli

    return getattr(agent_cli, name)(args)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def apply_language(lang: str | None) -> None:
    """Use ``lang`` for the verdicts' text here and in every process started from here.

    Without ``--lang`` the diagnosis texts read ``$OCTA_TUI_LANG`` themselves.
    """
    if not lang:
        return
    os.environ[ENV_LANG] = lang
    from ..diagnosis import texts

    setter = getattr(texts, "set_language", None)
    if setter is not None:
        setter(lang)


def _split_lang(rest: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--lang X`` / ``--lang=X`` taken out of a pass-through argument list."""
    lang, kept, items = None, [], list(rest)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--lang" and i + 1 < len(items):
            lang, i = items[i + 1], i + 2
            continue
        if item.startswith("--lang="):
            lang, i = item.split("=", 1)[1], i + 1
            continue
        kept.append(item)
        i += 1
    if lang is not None and lang not in LANGUAGES:
        raise CliError(f"--lang {lang}: choose one of {', '.join(LANGUAGES)}")
    return lang, kept


def run_delegated(name: str, argv: Sequence[str]) -> int:
    """``octa-tui run ...`` / ``octa-tui compare ...``: the arguments go verbatim to the module
    that owns the subcommand, imported only now."""
    import importlib

    module_name = DELEGATED[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise CliError(f"`octa-tui {name}` is not available in this installation ({module_name} is "
                           "missing); reinstall octa-tui") from None
        raise
    return int(module.main(list(argv)) or 0)


def _quiet_broken_pipe() -> int:
    """The reader of stdout left (``| head``): end quietly, as other command line tools do.
    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``octa-tui``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in DELEGATED:
            return run_delegated(argv[0], argv[1:])
        if argv and argv[0] == "diagnose-dataset":  # its flags are the dataset report's own
            lang, rest = _split_lang(argv[1:])
            apply_language(lang)
            return COMMANDS["diagnose-dataset"](argparse.Namespace(command="diagnose-dataset", rest=rest))
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["list"])
        apply_language(getattr(args, "lang", None))
        return COMMANDS[args.command](args)
    except CliError as err:
        print(f"octa-tui: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print("octa-tui: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - never a traceback; one line naming the problem
        print(f"octa-tui: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
