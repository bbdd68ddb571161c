"""The ``octa-tui`` command line: demo, connect, replay, diagnose-dataset, export."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``octa-tui``."""
    parser = argparse.ArgumentParser(prog="octa-tui", description="Terminal monitor for PyTorch training.")
    parser.add_argument("command", nargs="?", default="list")
    args, _ = parser.parse_known_args(argv)
    print(f"octa-tui {args.command}: not yet available", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
