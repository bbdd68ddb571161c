"""The attach core: the parts that every way of instrumenting a run stands on.

The built-in trainer, ``octa-tui run``, the framework callbacks, ``watch`` and the explicit
:class:`~octa_tui.trainer.probe.Probe` all use these modules: the live lr scale
(:mod:`.lr`), the GradScaler observer (:mod:`.amp`) and the optimizer-step hooks
(:mod:`.hooks`).
"""
