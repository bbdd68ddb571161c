"""Hugging Face: ``Trainer(callbacks=[OctaTrainerCallback()])`` streams a Trainer run to the monitor.

::

    from octa_tui.trainer.integrations.hf import OctaTrainerCallback
    trainer = Trainer(model=model, args=args, ..., callbacks=[OctaTrainerCallback()])   # the one line

What it sees: every optimizer step (with ``gradient_accumulation_steps=k`` one step per k
batches), the per-layer gradient norms, the loss and its terms as the ``torch.nn.functional``
losses computed them inside the model's ``forward``, the outputs those losses were given, the
lr the step used (the Trainer's warm-up/decay schedule, a LambdaLR, times the monitor's
scale), and each epoch's mean training loss with the evaluation metrics (``eval_loss`` shows
as the validation loss, ``eval_dice`` as the validation Dice).

What it cannot see: the Trainer clips gradients (``max_grad_norm``, 1.0 by default) before
any callback runs, so the norms are those *after* clipping: a gradient explosion shows as a
total norm pinned at ``max_grad_norm``, not as its real size. The run says so: its config
carries ``grads_clipped_before_probe`` = ``max_grad_norm`` and the monitor shows it. Set
``max_grad_norm=0`` to see the raw norms (and clip from the monitor instead).

Commands: ``set_lr`` (a scale on whatever lr the Trainer's scheduler sets, every group),
clipping (applied after the Trainer's own), pause (the step waits while the link is served),
checkpoint (the model's and optimizer's state) and stop (``control.should_training_stop``:
the Trainer ends after the current step, with its usual end-of-training work). Only the main
process (``state.is_world_process_zero``) streams; in a multi-process run commands are refused
with that reason (applied in one process alone they would split the run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .boundary import FrameworkWatch, start_watch
from .epochs import EpochGate
from .metrics import split_metrics


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (its ``optimizer``), if wrapped."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if inner is not None and hasattr(inner, "param_groups") else optimizer


def _evaluates_every_epoch(args: Any) -> bool:
    strategy = getattr(args, "eval_strategy", None) or getattr(args, "evaluation_strategy", None)
    return str(getattr(strategy, "value", strategy)) == "epoch"


class OctaTrainerCallback(TrainerCallback):
    """Streams a Hugging Face Trainer run to octa-tui; see the module docstring.

    Keywords are :func:`~octa_tui.trainer.watch.watch`'s: ``task``, ``record``, ``data``,
    ``name``, endpoints, ``checkpoint_dir`` (default ``<output_dir>/octa-tui-checkpoints``) and
    the probe's options.
    """

    def __init__(self, task: str = "custom", **watch_kwargs: Any) -> None:
        self.task = task
        self.watch_kwargs = dict(watch_kwargs)
        self.watch: FrameworkWatch | None = None
        self._epochs: EpochGate | None = None
        self._expect_val = False

    # --- start and end --------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        if self.watch is not None or not state.is_world_process_zero:
            return
        if model is None or optimizer is None:
            print("octa-tui: the Trainer gave no model or optimizer to its callbacks; nothing to watch",
                  file=sys.stderr)
            return
        config: dict[str, Any] = {
            "framework": "transformers",
            "gradient_accumulation_steps": int(getattr(args, "gradient_accumulation_steps", 1) or 1),
        }
        max_norm = float(getattr(args, "max_grad_norm", 0.0) or 0.0)
        if max_norm > 0:
            config["grads_clipped_before_probe"] = max_norm
        if getattr(args, "fp16", False):
            config["amp"] = "fp16"
        elif getattr(args, "bf16", False):
            config["amp"] = "bf16"
        self._expect_val = _evaluates_every_epoch(args)
        world = int(getattr(args, "world_size", 1) or 1)
        refused = None
        if world > 1:
            config["ranks_watched"] = f"the main process of {world}"
            refused = (f"this run has {world} processes and is watched from the main one only; a change applied "
                       "there alone would split the run (use the commands on single-process runs)")
        self.watch = start_watch(model, _torch_optimizer(optimizer), self.watch_kwargs, config,
                                 {"checkpoint_dir": Path(args.output_dir) / "octa-tui-checkpoints"},
                                 task=self.task, scaler=getattr(optimizer, "scaler", None), commands_refused=refused)
        if self.watch is not None:
            self._epochs = EpochGate(self.watch)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        watch, self.watch = self.watch, None
        if watch is None:
            return
        if self._epochs is not None:
            self._epochs.flush()
        watch.close("finished")

    # --- steps ------------------------------------------------------------------------------------

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        watch = self.watch
        if watch is not None and watch.probe is None:  # resumed from a checkpoint: count on from it
            watch.probe_kwargs.setdefault("start_step", int(state.global_step))
            watch.probe_kwargs.setdefault("start_epoch", int(state.epoch or 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None and self.watch.stop_requested:
            control.should_training_stop = True

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None:
            self.watch.serve()  # a long evaluation keeps the monitor's link alive

    # --- epochs -----------------------------------------------------------------------------------

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._epochs is not None:
            self._epochs.flush()  # an epoch whose evaluation never came

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        watch = self.watch
        if watch is None or self._epochs is None or watch.probe is None:
            return
        # The Trainer evaluates after this hook: with eval_strategy="epoch" the summary waits for it.
        self._epochs.train_done({"loss": watch.take_epoch_loss()}, expect_val=self._expect_val)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if self._epochs is not None and metrics:
            self._epochs.val_done(split_metrics(metrics)[1])
