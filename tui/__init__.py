"""The Textual monitor: the app, its panels, live and replay sources, and ``octa-tui``."""
