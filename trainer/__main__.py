"""``python -m octa_tui.trainer``: the same as ``octa-train``."""

import sys

from .cli import main

sys.exit(main())
