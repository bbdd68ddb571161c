"""octa-tui: a terminal monitor for PyTorch training that diagnoses and steers the run.

The sub-packages live in the repository's top-level folders: ``octa_tui.protocol`` (the
wire contract), ``octa_tui.diagnosis`` (rules), ``octa_tui.trainer`` (torch) and
``octa_tui.tui`` (the Textual monitor).

``octa_tui.watch(model, optimizer)`` instruments a training loop in one call (see
:mod:`octa_tui.trainer.watch`). It is imported on first use, so importing this package
(as the monitor does) never imports torch.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("watch", "Watch"):
        from octa_tui.trainer import watch as module

        return getattr(module, name)
    raise AttributeError(f"module 'octa_tui' has no attribute {name!r}")
