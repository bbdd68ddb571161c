"""Diagnosis accuracy: healthy runs of five architectures x 3 seeds (target: no verdict at all) and known
faults in a plain Probe-instrumented loop (target: the root cause listed first), small and on the CPU.

The same as ``octa-tui scenarios --healthy-zoo``; the fault scenarios of the built-in trainer are
``octa-tui scenarios``. Prints two tables: every verdict each healthy run raised, with the step it
first showed, and for each fault the verdict ranked first when the fault's own verdict appeared.

Run: .venv/bin/python bench/bench_healthy_zoo.py [--seeds 3] [names ...]
"""

from __future__ import annotations

import sys

from octa_tui.trainer.scenario_check import main

if __name__ == "__main__":
    sys.exit(main(["--healthy-zoo", *sys.argv[1:]]))
