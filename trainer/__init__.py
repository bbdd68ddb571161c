"""The trainer side: models, data, losses, the probe, the training loop and ``octa-train``.

Importing this package loads nothing heavy; torch is imported by the modules that need it.
"""
