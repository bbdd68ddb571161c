"""The diagnosis engine: a run's history in, verdicts with evidence and a fix out. Pure numpy, no I/O."""
