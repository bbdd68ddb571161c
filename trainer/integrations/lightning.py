"""Lightning: ``Trainer(callbacks=[OctaCallback()])`` streams the run to the monitor and takes its commands.

::

    from octa_tui.trainer.integrations.lightning import OctaCallback
    trainer = L.Trainer(max_epochs=20, callbacks=[OctaCallback()])   # the one line

What it sees: per-layer gradient norms of every real optimizer step (with
``accumulate_grad_batches=k`` one step per k batches, measured on the accumulated gradients),
the loss and its terms as the ``torch.nn.functional`` losses computed them (mean over the
accumulated batches), the outputs those losses were given, the lr of the step, and with
``precision="16-mixed"`` the GradScaler's scale and skipped steps (gradients are measured after
Lightning's ``unscale_``, before its own ``gradient_clip_val`` clipping). Each training epoch
ends in an epoch summary: the mean training loss and the metrics logged with ``self.log``
(``val_dice`` shows as the validation Dice, ``val_loss`` as the validation loss).

Commands: ``set_lr`` (a scale on whatever lr the scheduler sets, every parameter group),
clipping, pause (the step waits at its boundary while the link is served), checkpoint (the
module's and the optimizer's state) and stop (``trainer.should_stop``: the run ends after the
current batch, as Lightning's own early stopping does).

Automatic and manual optimization both work: the boundary is Lightning's
``on_before_optimizer_step``, which both call once the gradients are complete. With several
optimizers the first one is watched. Under a multi-process strategy only global rank 0
streams, and commands are refused with that reason (applied on rank 0 alone they would split
the run): use them on single-process runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from .boundary import MULTI_PROCESS, FrameworkWatch, start_watch
from .epochs import EpochGate
from .metrics import split_metrics

PRECISION_AMP = {"16-mixed": "fp16", "16": "fp16", "bf16-mixed": "bf16", "bf16": "bf16"}


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside Lightning's wrapper (``LightningOptimizer``), if it is one."""
    return getattr(optimizer, "_optimizer", optimizer)


class OctaCallback(pl.Callback):
    """Streams a Lightning fit to octa-tui and applies the monitor's commands; see the module docstring.

    Keywords are :func:`~octa_tui.trainer.watch.watch`'s: ``task`` ("segmentation",
    "heatmap" or "custom"), ``record`` (a recording file), ``data`` (a data set folder for the
    dataset report), ``name``, ``telemetry``/``control`` endpoints, ``checkpoint_dir`` (default:
    ``<default_root_dir>/octa-tui-checkpoints``) and the probe's options.
    """

    def __init__(self, task: str = "custom", **watch_kwargs: Any) -> None:
        super().__init__()
        self.task = task
        self.watch_kwargs = dict(watch_kwargs)
        self.watch: FrameworkWatch | None = None
        self._epochs: EpochGate | None = None

    # --- start and end --------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None or not trainer.is_global_zero:
            return
        optimizers = list(getattr(trainer, "optimizers", []) or [])
        if not optimizers:
            print("octa-tui: this Lightning run has no optimizer; nothing to watch", file=sys.stderr)
            return
        optimizer = _torch_optimizer(optimizers[0])
        precision = str(getattr(trainer, "precision", ""))
        config: dict[str, Any] = {
            "framework": "lightning", "precision": precision,
            "accumulate_grad_batches": int(getattr(trainer, "accumulate_grad_batches", 1) or 1),
            "automatic_optimization": bool(getattr(pl_module, "automatic_optimization", True)),
        }
        if precision in PRECISION_AMP:
            config["amp"] = PRECISION_AMP[precision]
        if len(optimizers) > 1:
            config["optimizers_watched"] = f"the first of {len(optimizers)}"
        clip = getattr(trainer, "gradient_clip_val", None)
        if clip:
            config["framework_clip"] = float(clip)  # applied after the norms are measured
        refused = None
        if trainer.world_size > 1:
            config["ranks_watched"] = "rank 0 of " + str(trainer.world_size)
            refused = MULTI_PROCESS.format(n=trainer.world_size)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        self.watch = start_watch(pl_module, optimizer, self.watch_kwargs, config,
                                 {"checkpoint_dir": Path(trainer.default_root_dir) / "octa-tui-checkpoints"},
                                 task=self.task, scaler=scaler, external_boundary=True, commands_refused=refused)
        if self.watch is not None:
            self._epochs = EpochGate(self.watch)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._close("finished")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close("stopped" if isinstance(exception, KeyboardInterrupt) else "failed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._close("finished")

    def _close(self, state: str) -> None:
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.close(state)

    # --- every optimizer step -------------------------------------------------------------------

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        watch = self.watch
        if watch is None or _torch_optimizer(optimizer) is not watch.optimizer:
            return
        if watch.probe is None:  # a resumed fit (ckpt_path) goes on counting from its checkpoint
            watch.probe_kwargs.setdefault("start_step", int(trainer.global_step))
            watch.probe_kwargs.setdefault("start_epoch", int(trainer.current_epoch))
        watch.boundary()
        self._check_stop(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._check_stop(trainer)

    def _check_stop(self, trainer: Any) -> None:
        if self.watch is not None and self.watch.stop_requested:
            trainer.should_stop = True

    # --- validation and epochs ------------------------------------------------------------------

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        if self.watch is not None:
            self.watch.serve()  # a long validation keeps the monitor's link alive

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._epochs is None or getattr(trainer, "sanity_checking", False):
            return
        self._epochs.val_done(split_metrics(trainer.callback_metrics)[1])

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        watch = self.watch
        if watch is None or self._epochs is None or watch.probe is None:
            return
        train = split_metrics(trainer.callback_metrics)[0]
        train["loss"] = watch.take_epoch_loss()
        self._epochs.train_done(train)  # Lightning validated before this hook
