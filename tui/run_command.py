"""``octa-tui run [options] -- python train.py ARGS``: start a script under the attach core.

This side never imports torch: it turns the command line into
``<python> -m octa_tui.run [options] -- train.py ARGS`` and replaces this process with it.
``python``/``python3`` (or any interpreter path whose name starts with ``python``) at the
head of the command is the interpreter used (so a venv's python keeps its packages); a
command that starts with the script itself uses this interpreter. ``python -m module`` works.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with the script under the attach core (returns only on a usage error)."""
    try:
        command = build_argv(sys.argv[1:] if argv is None else argv)
    except RunUsageError as exc:
        print(f"octa-tui run: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached
