"""``octa-tui run [options] -- python train.py ARGS``: start a script under the attach core.

This side never imports torch: it turns the command line into
``<python> -m octa_tui.run [options] -- train.py ARGS`` and replaces this process with it.
``python``/``python3`` (or any interpreter path whose name starts with ``python``) at the
head of the command is the interpreter used (so a venv's python keeps its packages); a
command that starts with the script itself uses this interpreter. ``python -m module`` works.
An interpreter that cannot import octa-tui cannot run the attach core: a bare ``python`` found on
PATH (a shell whose venv is not activated) is replaced by the interpreter octa-tui runs in, with
a line saying so; an interpreter named by its path gets an error that names the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

USAGE = ("usage: octa-tui run [--record PATH | --no-record] [--task T] [--name N] [--telemetry E] [--control E] "
         "[--checkpoint-dir DIR] [--insecure] -- python train.py ARGS")
VALUE_OPTIONS = ("--record", "--task", "--telemetry", "--control", "--name", "--checkpoint-dir")
FLAG_OPTIONS = ("--no-record", "--insecure")


class RunUsageError(ValueError):
    """The command line cannot be run; the message says what to write instead."""


def _is_python(word: str) -> bool:
    return os.path.basename(word).startswith("python") and not word.endswith(".py")


def build_argv(argv: Sequence[str]) -> list[str]:
    """The argv that runs the command: ``[python, "-m", "octa_tui.run", *options, "--", *command]``."""
    words = list(argv)
    options: list[str] = []
    while words and words[0] != "--":
        word = words.pop(0)
        name = word.split("=", 1)[0]
        if name in VALUE_OPTIONS:
            if "=" in word:
                options.append(word)
            elif words:
                options += [word, words.pop(0)]
            else:
                raise RunUsageError(f"{word} needs a value\n{USAGE}")
        elif word in FLAG_OPTIONS:
            options.append(word)
        elif word in ("-h", "--help"):
            raise RunUsageError(USAGE)
        else:  # no "--": the command starts here
            words.insert(0, word)
            break
    if words and words[0] == "--":
        words.pop(0)
    if not words:
        raise RunUsageError(f"no command to run\n{USAGE}")
    python = sys.executable
    if _is_python(words[0]):
        found = shutil.which(words[0])
        if found is None:
            raise RunUsageError(f"{words[0]}: no such interpreter on PATH")
        python = found
        words.pop(0)
    if not words:
        raise RunUsageError(f"no script after the interpreter\n{USAGE}")
    if words[0] in ("torchrun", "accelerate", "deepspeed"):
        raise RunUsageError(f"{words[0]}: multi-process launchers are not supported by `octa-tui run` yet; run the "
                            "script with one process, or use octa_tui.watch() in the script")
    return [python, "-m", "octa_tui.run", *options, "--", *words]


# Run by the chosen interpreter in the script's folder: can it import the attach core? (No torch import.)
_HAS_OCTA_TUI = ("import importlib.util, sys; "
                 "sys.exit(0 if importlib.util.find_spec('octa_tui.trainer.autorun') else 3)")


def has_octa_tui(python: str) -> bool:
    """Whether ``python`` can import octa-tui's attach core (from the current folder, as the run will)."""
    try:
        return subprocess.run([python, "-c", _HAS_OCTA_TUI], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def choose_interpreter(command: list[str], argv: Sequence[str],
                       can_run: Callable[[str], bool] = has_octa_tui) -> tuple[list[str], str]:
    """``command`` with an interpreter that can run the attach core, and a line for the user when it
    was changed. A bare ``python``/``python3`` resolved on PATH that lacks octa-tui falls back to this
    interpreter; an interpreter given by path that lacks it is a RunUsageError naming the fix."""
    if os.path.realpath(command[0]) == os.path.realpath(sys.executable) or can_run(command[0]):
        return command, ""
    named = next((w for w in argv if _is_python(w)), command[0])
    if os.sep in named:
        raise RunUsageError(f"{named} cannot import octa-tui, so it cannot run the script under the monitor; "
                            f"install octa-tui there ({named} -m pip install octa-tui) or use the interpreter that "
                            f"has it: {sys.executable}")
    notice = (f"octa-tui run: {named} on PATH ({command[0]}) has no octa-tui; running the script with octa-tui's "
              f"own interpreter, {sys.executable} (activate the environment that has both to choose another)")
    return [sys.executable, *command[1:]], notice


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with the script under the attach core (returns only on a usage error)."""
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        command, notice = choose_interpreter(build_argv(words), words)
    except RunUsageError as exc:
        print(f"octa-tui run: {exc}", file=sys.stderr)
        return 2
    if notice:
        print(notice, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached
