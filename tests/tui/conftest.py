"""Lets the UI tests import their seeded run (tests/tui/seeded.py) by module name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
