"""The ``octa-train`` command line: the headless trainer."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``octa-train``."""
    print("octa-train: not yet available", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
