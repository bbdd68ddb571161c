"""MONAI / PyTorch Ignite: ``OctaHandler().attach(trainer)`` streams an engine's run to the monitor.

::

    from octa_tui.trainer.integrations.ignite import OctaHandler
    trainer = SupervisedTrainer(...)          # MONAI, or any Ignite Engine
    OctaHandler().attach(trainer)             # the one line
    trainer.run()

The model, optimizer and GradScaler are taken from the engine where it has them (MONAI's
``SupervisedTrainer``: ``network``, ``optimizer``, ``scaler``); for a plain Ignite engine
(``create_supervised_trainer``) pass them: ``OctaHandler(model, optimizer)``. The validation
metrics come from the evaluator of a MONAI ``ValidationHandler`` on the engine, or from the
``evaluator=`` given.

What it sees: every optimizer step (with ``accumulation_steps`` one step per window), the
per-layer gradient norms of the true (unscaled) gradients, the loss and its terms as the
``torch.nn.functional`` losses computed them (MONAI's ``DiceCELoss`` shows its BCE/CE term;
its Dice term is in the total), the outputs the loss was given, the lr, and under AMP the
scale and the steps the GradScaler skipped. Gradients are still AMP-scaled when MONAI fires
``BACKWARD_COMPLETED``; they are measured at the optimizer's step instead, after
``scaler.step`` unscaled them (a skipped step has no gradient numbers and is marked skipped,
never non-finite). Each epoch ends in a summary: the mean training loss, the engine's own
metrics and the evaluator's (``val_mean_dice`` shows as the validation Dice).

Commands: ``set_lr`` (a scale on whatever lr the engine's scheduler sets, every group),
clipping, pause (the step waits while the link is served), checkpoint and stop
(``engine.terminate()`` after the current iteration). In a multi-process run only rank 0
streams and commands are refused with that reason (applied on one rank they would split it).
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

from .boundary import MULTI_PROCESS, FrameworkWatch, start_watch
from .epochs import EpochGate
from .metrics import split_metrics

VAL_PREFIX = "val_"


def find_evaluator(engine: Engine) -> Engine | None:
    """The evaluator a MONAI ``ValidationHandler`` (or anything with a ``validator``) runs for ``engine``."""
    for handlers in getattr(engine, "_event_handlers", {}).values():
        for entry in handlers:
            handler = entry[0]
            for candidate in (handler, getattr(handler, "__self__", None), getattr(handler, "__wrapped__", None)):
                validator = getattr(candidate, "validator", None)
                if isinstance(validator, Engine):
                    return validator
    return None


def _world_size() -> int:
    try:
        from ignite.distributed import get_world_size

        return int(get_world_size())
    except Exception:  # noqa: BLE001 - no distributed configuration: one process
        return 1


def _rank() -> int:
    try:
        from ignite.distributed import get_rank

        return int(get_rank())
    except Exception:  # noqa: BLE001
        return 0


def _val_names(metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluator's metrics are validation metrics: prefix them so :func:`split_metrics` files them so."""
    return {k if k.startswith(VAL_PREFIX) else VAL_PREFIX + k: v for k, v in metrics.items()}


class OctaHandler:
    """Streams an Ignite/MONAI engine's run to octa-tui; see the module docstring.

    ``model``/``optimizer``/``scaler`` default to the engine's ``network``/``optimizer``/
    ``scaler`` (MONAI); ``evaluator`` to the one a ``ValidationHandler`` runs. Other keywords
    are :func:`~octa_tui.trainer.watch.watch`'s (``task``, ``record``, ``data``, ``name``,
    endpoints, ``checkpoint_dir``, the probe's options).
    """

    def __init__(self, model: Any = None, optimizer: Any = None, *, task: str = "custom", scaler: Any = None,
                 evaluator: Engine | None = None, **watch_kwargs: Any) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.evaluator = evaluator
        self.task = task
        self.watch_kwargs = dict(watch_kwargs)
        self.watch: FrameworkWatch | None = None
        self._epochs: EpochGate | None = None
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> OctaHandler:
        """Start watching when ``engine`` starts; returns this handler."""
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        return self

    # --- the run --------------------------------------------------------------------------------

    def _started(self, engine: Engine) -> None:
        if self.watch is not None or _rank() != 0:
            return
        model = self.model if self.model is not None else getattr(engine, "network", None)
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        scaler = self.scaler if self.scaler is not None else getattr(engine, "scaler", None)
        config: dict[str, Any] = {"framework": "monai" if type(engine).__module__.startswith("monai") else "ignite"}
        refused = None
        world = _world_size()
        if world > 1:
            config["ranks_watched"] = f"rank 0 of {world}"
            refused = MULTI_PROCESS.format(n=world)
        accumulation = getattr(engine, "accumulation_steps", 1)
        if isinstance(accumulation, int) and accumulation > 1:
            config["accumulation_steps"] = accumulation
        self.watch = start_watch(model, optimizer, self.watch_kwargs, config, task=self.task, scaler=scaler,
                                 commands_refused=refused)
        if self.watch is None:
            return
        self._epochs = EpochGate(self.watch)
        evaluator = self.evaluator or find_evaluator(engine)
        if evaluator is not None:
            evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._serve)
            evaluator.add_event_handler(Events.COMPLETED, self._evaluated)
        # Added now, after the handlers attached before run() (a ValidationHandler among them),
        # so the epoch's summary goes out once its validation has run.
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _iteration_completed(self, engine: Engine) -> None:
        if self.watch is not None and self.watch.stop_requested:
            engine.terminate()

    def _serve(self, evaluator: Engine) -> None:
        if self.watch is not None:
            self.watch.serve()  # a long validation keeps the monitor's link alive

    def _evaluated(self, evaluator: Engine) -> None:
        if self._epochs is not None:
            self._epochs.val_done(split_metrics(_val_names(dict(evaluator.state.metrics)))[1])

    def _epoch_completed(self, engine: Engine) -> None:
        watch = self.watch
        if watch is None or self._epochs is None or watch.probe is None:
            return
        train = split_metrics(dict(engine.state.metrics))[0]
        train["loss"] = watch.take_epoch_loss()
        self._epochs.train_done(train)

    def _completed(self, engine: Engine) -> None:
        self.close()

    def close(self, state: str = "finished") -> None:
        """Finish the run (also done when the engine completes or terminates, or at exit)."""
        watch, self.watch = self.watch, None
        if watch is not None:
            if self._epochs is not None:
                self._epochs.flush()
            watch.close(state)
