"""One-line integrations of octa-tui with training frameworks.

Each stands on the same core as ``octa-tui run`` and ``octa_tui.watch`` (a
:class:`~octa_tui.trainer.watch.Watch`): the same measuring, the same live commands, the same
stream. What a framework adds is where its step boundary is, where its GradScaler lives, what
its validation metrics are called and how it is asked to stop:

- Lightning: ``Trainer(callbacks=[OctaCallback()])`` (:mod:`.lightning`);
- Hugging Face: ``Trainer(callbacks=[OctaTrainerCallback()])`` (:mod:`.hf`);
- MONAI / PyTorch Ignite: ``OctaHandler().attach(trainer)`` (:mod:`.ignite`).

The frameworks are imported only by their own module, so importing this package costs nothing.
"""
