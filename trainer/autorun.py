"""``octa-tui run``: an unmodified training script, streamed to the monitor and steerable.

The script runs in this process (``runpy``, with ``sys.argv`` as it would have it, its folder
first on ``sys.path``; ``-m module`` too). Before it starts, a :class:`~.watch.Watch` is set up
with no model and no optimizer: the global optimizer step hooks adopt the first optimizer that
steps, the model is found once as the module owning its parameters, the loss functions and
``backward`` are observed, and every GradScaler created is noted (its scale and skipped steps
become channels). The run announces itself (``octa-tui`` lists it) at its first step.

Decisions: a ``stop`` from the monitor ends the script at the next step boundary by raising
:class:`~.watch.StopRun` (a ``SystemExit`` with code 0) from the optimizer step: the script's
``finally`` blocks and ``atexit`` handlers run, the step is not applied, and the run is closed
as "stopped". ``checkpoint`` saves the model's and the optimizer's ``state_dict`` into the run
folder. By default the run is recorded to ``<script>-<time>/run.octa`` in the run store (a private
folder) unless ``--record`` names a file or ``--no-record`` is given.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def _note_scalers(watch: Any) -> Any:
    """Patch GradScaler.__init__ so that the first enabled scaler the script builds is watched."""
    import torch

    cls = torch.amp.GradScaler
    original = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            if watch.scaler is None and watch.probe is None and self.is_enabled():
                watch.set_scaler(self)
        except Exception as exc:  # noqa: BLE001 - never break the user's scaler
            print(f"octa-tui: could not watch the GradScaler ({exc})", file=sys.stderr)

    cls.__init__ = init  # type: ignore[method-assign]

    def restore() -> None:
        cls.__init__ = original  # type: ignore[method-assign]

    return restore


def default_record(target: str) -> str:
    """``<script>-<time>/run.octa`` in the user's run store (private folders, kept by the
    store's retention rule; see :mod:`octa_tui.protocol.run_store`), as ``octa-train`` and
    the demo keep theirs."""
    from octa_tui.protocol.run_store import new_run_folder

    stem = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
    return str(new_run_folder(stem or "run") / "run.octa")


def run(target: str, args: Sequence[str], *, module: bool = False, record: str | None = "",
        task: str = "custom", telemetry: str = "tcp://127.0.0.1:0", control: str = "tcp://127.0.0.1:0",
        name: str | None = None, checkpoint_dir: str | None = None, insecure: bool = False) -> int:
    """Run ``target`` (a script path, or a module with ``module=True``) under a Watch; the exit code.

    ``record`` "" means the default recording path, None no recording.
    """
    from .watch import StopRun, Watch

    if not module and not os.path.isfile(target):
        print(f"octa-tui run: {target}: no such script (give a .py file, or -m module)", file=sys.stderr)
        return EXIT_USAGE
    made_folder = None
    if record == "":
        record = default_record(target)
        made_folder = Path(record).parent
    link_options: dict[str, Any] = {"insecure": True} if insecure else {}
    watch = Watch(None, None, task=task, record=record, telemetry=telemetry, control=control,
                  name=name or (Path(target).stem if not module else target), on_stop="exit",
                  checkpoint_dir=checkpoint_dir, link_options=link_options, verbose=True)
    restore = _note_scalers(watch)
    where = f", recording to {record}" if record else ""
    print(f"octa-tui run: {'-m ' if module else ''}{target}{where}; the run appears in `octa-tui` at its "
          "first optimizer step", file=sys.stderr)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    state, code = "failed", 1
    try:
        if module:
            sys.argv = [target, *args]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *args]
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
        state, code = "finished", 0
    except StopRun as stop:
        print(f"octa-tui run: {stop}", file=sys.stderr)
        state, code = "stopped", 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        state = "finished" if code == 0 else "failed"
    except KeyboardInterrupt:
        state, code = "stopped", 130
    except BaseException:
        import traceback

        traceback.print_exc()
        state, code = "failed", 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        restore()
        watch.close(state)
    if made_folder is not None:
        from octa_tui.protocol.run_store import release

        release(made_folder)
    if watch.probe is None:
        print("octa-tui run: the script ended without an optimizer step; nothing was streamed", file=sys.stderr)
    elif record and os.path.exists(record):
        print(f"octa-tui run: the recording is {os.path.abspath(record)}\n"
              f"  replay it:  octa-tui replay {shlex.quote(os.path.abspath(record))}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m octa_tui.run [options] [--] (script.py | -m module) [ARGS...]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m octa_tui.run",
        description="Run a PyTorch training script unmodified, streamed to the octa-tui monitor and steerable.")
    parser.add_argument("--record", default="", help="recording file (default: a new folder in the run store, ~/.local/share/octa-tui/runs)")
    parser.add_argument("--no-record", action="store_true", help="do not record the run")
    parser.add_argument("--task", default="custom", help="task name shown by the monitor (default custom)")
    parser.add_argument("--telemetry", default="tcp://127.0.0.1:0", help="telemetry endpoint to bind")
    parser.add_argument("--control", default="tcp://127.0.0.1:0", help="control endpoint to bind")
    parser.add_argument("--name", default=None, help="the run's name (default the script's)")
    parser.add_argument("--checkpoint-dir", default=None, help="where `checkpoint` saves (default the run folder)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without CurveZMQ keys")
    parser.add_argument("-m", dest="module", default=None, help="run a module (like python -m)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="script.py and its arguments")
    options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = list(options.command)
    if command and command[0] == "--":
        command = command[1:]
    if options.module is None and command[:1] == ["-m"]:
        if len(command) < 2:
            parser.error("-m needs a module name")
        options.module, command = command[1], command[2:]
    if options.module is not None:
        target, args, module = options.module, command, True
    elif command:
        target, args, module = command[0], command[1:], False
    else:
        parser.error("give the training script to run: python -m octa_tui.run train.py ARGS")
        return EXIT_USAGE
    record = None if options.no_record else options.record
    return run(target, args, module=module, record=record, task=options.task, telemetry=options.telemetry,
               control=options.control, name=options.name, checkpoint_dir=options.checkpoint_dir,
               insecure=options.insecure)
