"""``python -m octa_tui.run [options] [--] train.py ARGS`` (what ``octa-tui run`` executes).

Runs an unmodified training script streamed to the octa-tui monitor; see
:mod:`octa_tui.trainer.autorun`.
"""

import sys


def main() -> int:
    """Parse the command line and run the script; returns its exit code."""
    from octa_tui.trainer.autorun import main as autorun_main

    return autorun_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
