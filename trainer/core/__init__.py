"""The attach core: the parts that every way of instrumenting a run stands on.

The built-in trainer, ``octa-tui run``, the framework callbacks, ``watch`` and the explicit
:class:`~octa_tui.trainer.probe.Probe` all use these modules, one job each: measuring on the
device (:mod:`.measure`), the step vector by named slot and its assembly on the host
(:mod:`.layout`), the CUDA pinned-copy pipeline (:mod:`.pipeline`), the thread that reads, lays
out and publishes finished steps off the training thread (:mod:`.publisher`), the link service
(:mod:`.service`), the GradScaler's facts (:mod:`.amp`) and the live lr scale around the
optimizer's step (:mod:`.lr`).
"""
