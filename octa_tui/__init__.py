"""octa-tui: a terminal monitor for PyTorch training that diagnoses and steers the run.

The sub-packages live in the repository's top-level folders: ``octa_tui.protocol`` (the
wire contract), ``octa_tui.diagnosis`` (rules), ``octa_tui.trainer`` (torch) and
``octa_tui.tui`` (the Textual monitor).
"""

__version__ = "0.1.0"
