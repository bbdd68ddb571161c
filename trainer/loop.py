"""The built-in training loop: the seeds' two tasks, instrumented by the probe, steered live.

:class:`Trainer` has a fixed lifecycle: :meth:`~Trainer.setup` (data, model, loss,
optimizer, probe and link, dataset report, resume), :meth:`~Trainer.train` (epochs of
steps, validation, checkpoints) and :meth:`~Trainer.cleanup` (final checkpoint, recording
and link closed). Each step: apply pending commands, write the scheduled lr, forward,
loss, backward, measure and clip, optimizer step, publish.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from octa_tui.protocol.messages import new_run_id

from . import checkpoint as ckpt
from .config import TrainConfig
from .control import Controller, LrSchedule
from .distributed import (
    DistEnv,
    DistributedController,
    RankLog,
    RankLost,
    RankTimes,
    collective,
    join_group,
    leave_group,
    mean_losses,
    stragglers,
)
from .losses import make_loss
from .models import MODELS, describe_model
from .probe import Probe
from .run_data import RunData, load_data


class Reporter(Protocol):
    """What the loop tells a console display (see :mod:`octa_tui.trainer.console`)."""

    def started(self, trainer: Trainer) -> None: ...

    def step(self, trainer: Trainer) -> None: ...

    def epoch(self, trainer: Trainer, train: dict[str, float], val: dict[str, float]) -> None: ...

    def message(self, text: str) -> None: ...

    def finished(self, trainer: Trainer, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """How a run ended: steps and epochs done, last/best validation metrics, files written."""

    state: str = "finished"  # finished | stopped | failed
    steps: int = 0
    epochs: int = 0
    train_loss: list[float] = field(default_factory=list)  # per epoch
    val: list[dict[str, float]] = field(default_factory=list)  # per epoch
    best_path: str = ""
    last_path: str = ""
    recording: str = ""


class EpochMeans:
    """Means of the loss channels over an epoch, from the published step vectors (host side)."""

    def __init__(self, probe: Probe) -> None:
        self._names = [f"loss/{name}" for name in probe.schema.loss]
        self._index = np.array([probe.schema.index(k) for k in self._names])
        self.reset()

    def reset(self) -> None:
        self._sum = np.zeros(len(self._names))
        self._count = 0

    def __call__(self, step: int, epoch: int, values: np.ndarray) -> None:
        self._sum += values[self._index]
        self._count += 1

    def means(self) -> dict[str, float]:
        """``{"loss": ..., "loss_<component>": ...}`` over the steps seen since the last reset."""
        count = max(self._count, 1)
        out = {}
        for name, total in zip(self._names, self._sum):
            short = name.split("/", 1)[1]
            out["loss" if short == "total" else f"loss_{short}"] = float(total / count) if self._count else math.nan
        return out


class TrainDice:
    """The Dice score of the thresholded training predictions over an epoch, summed on the device.

    The same score :meth:`Trainer.validate` gives the validation set (logits > 0 against
    targets > 0.5, pixels pooled over the epoch), so a monitor can set training and validation
    side by side (a validation that collapses while training segments). Nothing is read back
    to the host until :meth:`value`, at the end of the epoch.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._intersection: torch.Tensor | float = 0.0
        self._total: torch.Tensor | float = 0.0
        self._steps = 0

    @torch.no_grad()
    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = outputs.detach().float() > 0  # logits > 0 <=> probability > 0.5
        truth = targets.detach() > 0.5
        self._intersection = self._intersection + (predicted & truth).sum()
        self._total = self._total + predicted.sum() + truth.sum()
        self._steps += 1

    def value(self) -> dict[str, float]:
        """``{"dice": ...}`` over the steps added since the last reset; empty when there were none."""
        if not self._steps:
            return {}
        return {"dice": float((2 * self._intersection + 1e-6) / (self._total + 1e-6))}


class OutputTap:
    """Keeps the last tensors entering and leaving ``model.out_activation`` (raw and activated)."""

    def __init__(self, model: nn.Module, loss_takes_logits: bool) -> None:
        self.raw: torch.Tensor | None = None
        self.activated: torch.Tensor | None = None
        self._logits = loss_takes_logits
        module = getattr(model, "out_activation", None)
        self._handle = module.register_forward_hook(self._hook) if isinstance(module, nn.Module) else None

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.raw = inputs[0].detach()
        # What the loss compares with the target; a loss that takes logits applies the sigmoid
        # itself, and so does the probe (None here: no sigmoid computed for nothing).
        self.activated = None if self._logits else output.detach()

    def take(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(raw, activated) of the last forward pass (``outputs`` when the model has no tap);
        activated is None when it is the sigmoid of raw (a loss that takes logits)."""
        if self.raw is None:
            return outputs, None if self._logits else outputs
        raw, act = self.raw, self.activated
        self.raw = self.activated = None
        return raw, act

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without it is an error.

    Under torchrun (``local_rank`` given) a CUDA device is the local rank's GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def build_model(config: TrainConfig) -> nn.Module:
    """The model ``config.model`` names, at ``config.base_width``."""
    if config.model in ("craft", "craft_vgg16"):
        return MODELS[config.model](base_width=config.base_width, output_activation=config.output_activation,
                               batch_norm=config.batch_norm)
    if config.model == "plain_sigmoid":
        return MODELS["plain_sigmoid"](width=config.base_width)
    if config.model == "unet":
        return MODELS["unet"](base_width=config.base_width, batch_norm=config.batch_norm)
    return MODELS[config.model](base_width=config.base_width)


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (the seeds' optimizer), SGD with momentum 0.9 for ``--optimizer sgd``, or AdamW
    (decoupled weight decay) for ``--optimizer adamw``; each with ``config.weight_decay``."""
    decay = config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=decay)


def run_folder(config: TrainConfig, run_id: str) -> Path:
    """Where a run's checkpoints (and, by default, its recordings) go."""
    if config.checkpoint_dir:
        return Path(config.checkpoint_dir)
    if config.resume:
        return ckpt.resolve_checkpoint(config.resume).parent
    return Path(config.runs_dir) / f"{config.task}-{run_id}"


class Trainer:
    """One training run of :class:`TrainConfig`, observable and steerable while it runs.

    ``reporter`` receives progress for a console; ``stop()`` (e.g. from a signal handler)
    ends the run cleanly at the next step boundary.

    Under torchrun (see :mod:`.distributed`) the model trains wrapped in
    DistributedDataParallel on this rank's share of the data; rank 0 alone has the link, the
    run file, the recording and the checkpoints, and commands and stops take effect at the
    same step on every rank.
    """

    def __init__(self, config: TrainConfig, reporter: Reporter | None = None) -> None:
        self.config = config.check()
        self.reporter = reporter
        self.dist = DistEnv.from_environ()
        self.device = pick_device(config.device, self.dist.local_rank if self.dist else None)
        self.run_id = ""
        self.folder: Path | None = None
        self.record_path: str | None = None
        self.data: RunData | None = None
        self.model: nn.Module | None = None
        self.criterion: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: LrSchedule | None = None
        self.probe: Probe | None = None
        self.controller: Controller | None = None
        self.result = TrainResult()
        self.best_metric = -math.inf
        self.batch_in_epoch = 0
        self._resume_state: dict[str, Any] | None = None
        self._tap: OutputTap | None = None
        self._means: EpochMeans | None = None
        self._train_dice = TrainDice()
        self._scaler: Any = None
        self._stop_signal = False
        self._set_up = False
        self._ddp: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun
        self._times: RankTimes | None = None
        self._rank_log: RankLog | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """setup, train, cleanup; the run is closed whatever happens."""
        state = "failed"
        try:
            self.setup()
            self.train()
            state = self.result.state
        finally:
            self.cleanup(state)
        return self.result

    @property
    def is_main(self) -> bool:
        """Whether this process talks to monitors and writes files (always, outside torchrun)."""
        return self.dist is None or self.dist.is_main

    def stop(self) -> None:
        """Ask the run to stop at the next step boundary (safe from a signal handler, and while paused).

        Under torchrun the request travels with the next command sync, so every rank stops
        at the same step.
        """
        self._stop_signal = True
        if self.controller is not None and self.dist is None:
            self.controller.stop_requested = True

    def setup(self) -> None:
        """Data, model, loss, optimizer, probe, link and control; resume state applied."""
        config = self.config
        if config.resume:
            self._resume_state = ckpt.load_checkpoint(config.resume)
        state = self._resume_state
        self.run_id = state["run_id"] if state else new_run_id()
        torch.manual_seed(config.seed)
        backend = join_group(self.dist, self.device) if self.dist else ""
        self.data = load_data(config, pin_memory=self.device.type == "cuda")
        self.model = build_model(config).to(self.device)
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.data.rank, self.data.world_size = self.dist.rank, self.dist.world_size
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=device_ids)
            self._times = RankTimes(self.dist, self.device)
            self._rank_log = RankLog.from_environ(self.dist.rank)
        pos_weight = self.data.pos_weight if config.pos_weight == "auto" else config.pos_weight
        self.criterion = make_loss(config.loss_name, config.bce_weight, config.dice_weight, pos_weight)
        self.optimizer = make_optimizer(config, self.model)
        self.schedule = LrSchedule((config.lr,), config.step_size, config.gamma)
        if self._amp_dtype() == torch.float16:
            self._scaler = torch.amp.GradScaler("cuda")
        self.folder = run_folder(config, self.run_id)
        probe_args: dict[str, Any] = dict(
            task=config.task,
            loss_components=("bce", "dice") if config.task == "segmentation" else ("region", "affinity"),
            optimizer=self.optimizer,
            criterion=self.criterion,
            loss_expects_probabilities=bool(getattr(self.criterion, "loss_expects_probabilities", True)),
            config=self._schema_config(backend),
            model_name=type(self.model).__name__,
            run_id=self.run_id,
            start_step=int(state["step"]) if state else 0,
            start_epoch=int(state["epoch"]) if state else 0,
            preview_every=config.preview_every,
            scaler=self._scaler,
        )
        if config.telemetry is None or config.control is None or not self.is_main:
            self.probe = Probe(self.model, **probe_args)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.record_path = config.record or str(self.folder / f"{stamp}.octa")
            Path(self.record_path).parent.mkdir(parents=True, exist_ok=True)
            link_options: dict[str, Any] = {}
            if config.keys or config.insecure:
                # Beyond loopback: CurveZMQ keys or the explicit opt-out, said in the schema so
                # a monitor can warn.
                from octa_tui.protocol.keys import ServerCurve

                curve = ServerCurve.from_dir(config.keys) if config.keys else None
                link_options = {"insecure": config.insecure, "curve": curve}
                probe_args["config"] = {**probe_args.get("config", {}), "link": "curve" if curve else "insecure"}
            self.probe = Probe.start(self.model, telemetry=config.telemetry, control=config.control,
                                     record=self.record_path, link_options=link_options, **probe_args)
            self.result.recording = self.record_path
        self._set_up = True
        control_args: dict[str, Any] = dict(save_checkpoint=self.save_last if self.is_main else None,
                                            clip=config.clip)
        if self.dist is not None:
            self.controller = DistributedController(self.probe, self.optimizer, self.schedule, self.criterion,
                                                    env=self.dist, local_stop=lambda: self._stop_signal,
                                                    **control_args)
        else:
            self.controller = Controller(self.probe, self.optimizer, self.schedule, self.criterion, **control_args)
        if state:
            self._restore(state)
        self._tap = OutputTap(self.model, bool(getattr(self.criterion, "input_is_logits", False)))
        self._means = EpochMeans(self.probe)
        self.probe.on_values.append(self._means)
        if self.data.report is not None and self.is_main:
            self.probe.publish(self.data.report(self.run_id))
        action = f"resumed at step {self.probe.step}, epoch {self.probe.epoch}" if state else "started"
        self.probe.event("run_started", f"{config.task} run {action}: {describe_model(self.model).splitlines()[0]}",
                         resumed=bool(state), device=str(self.device))
        if self.reporter is not None:
            self.reporter.started(self)

    def _schema_config(self, backend: str = "") -> dict[str, Any]:
        config, data = self.config, self.data
        assert data is not None
        ranks = {"world_size": self.dist.world_size, "backend": backend} if self.dist else {}
        return {**ranks,
            "train_images": data.train_size,
            "val_images": data.val_size,
            "batch_size": config.batch_size,
            "steps_per_epoch": data.steps_per_epoch(config.batch_size),
            "epochs": config.epochs,
            "max_steps": config.max_steps,
            "image_size": config.image_size,
            "loss": config.loss_name,
            "output_activation": config.output_activation if config.task == "heatmap" else "sigmoid",
            "base_width": config.base_width,
            "scenario": config.scenario,
            "seed": config.seed,
            "model": config.model,
            "lr": config.lr,
            "optimizer": config.optimizer,
            "weight_decay": config.weight_decay,
            "data": data.source,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.model is not None and self.optimizer is not None and self.schedule is not None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        settings = state.get("settings", {})
        if self.controller is not None:
            self.controller.lr_scale.scale = float(settings.get("lr_scale", 1.0))
            self.controller.clip = float(settings.get("clip", self.config.clip))
        for name in ("bce_weight", "dice_weight", "pos_weight"):
            if name in settings and hasattr(self.criterion, name):
                setattr(self.criterion, name, settings[name])
        self.best_metric = float(state.get("best_metric", -math.inf))
        self.batch_in_epoch = int(state.get("batch", 0))

    # --- training ---------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Run epochs until the configured count, ``max_steps``, ``stop`` or Ctrl-C."""
        assert self._set_up and self.probe is not None and self.data is not None
        config, probe = self.config, self.probe
        self.result.state = "finished"
        try:
            while probe.epoch < config.epochs:
                finished_epoch = self._train_epoch()
                if not finished_epoch:
                    self.result.state = "stopped" if self._stopping() else "finished"
                    break
                self._end_epoch()
        except RankLost as exc:
            self.result.state = "failed"
            probe.event("warning", str(exc), source="distributed")
            raise
        finally:
            self.result.steps = probe.step
        return self.result

    def _stopping(self) -> bool:
        if self.dist is not None:  # only the stop every rank agreed on at the last command sync
            return self.controller is not None and self.controller.stop_requested
        return self._stop_signal or (self.controller is not None and self.controller.stop_requested)

    def _out_of_steps(self) -> bool:
        assert self.probe is not None
        return self.config.max_steps > 0 and self.probe.step >= self.config.max_steps

    def _train_epoch(self) -> bool:
        """One epoch of steps; False when the run must end before the epoch is complete."""
        assert self.data is not None and self.model is not None and self.probe is not None
        self.model.train()
        assert self._means is not None
        if self.batch_in_epoch == 0:
            self._means.reset()
            self._train_dice.reset()
        for images, targets in self.data.train_batches(self.config.batch_size, self.probe.epoch,
                                                       self.config.seed, skip=self.batch_in_epoch):
            assert self.controller is not None
            self.controller.poll()
            if self._stopping() or self._out_of_steps():
                return False
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            if self.dist is None:
                self._train_step(images, targets)
            else:
                with collective("training step"):  # DDP exchanges buffers and gradients in it
                    self._train_step(images, targets)
            self.batch_in_epoch += 1
            if self.dist is not None:
                self._after_distributed_step()
            if self.reporter is not None:
                self.reporter.step(self)
        self.batch_in_epoch = 0
        return True

    def _after_distributed_step(self) -> None:
        """Answer the commands of the step just run; every so often gather the ranks' step times."""
        assert isinstance(self.controller, DistributedController) and self.probe is not None
        self.controller.release()
        step = self.probe.step
        if self._rank_log is not None and self.optimizer is not None:
            self._rank_log.write(step - 1, self.controller.lr_scale.first_used())
        if self._times is None or not self._times.due(step):
            return
        times = self._times.gather()
        if not self.is_main:
            return
        text = ", ".join(f"rank {r} {t * 1000:.1f} ms" for r, t in enumerate(times))
        slow = stragglers(times)
        self.probe.event("rank_times", f"step time per rank: {text}", step_s=times, stragglers=slow)
        for rank in slow:
            self.probe.event("warning", f"rank {rank} is a straggler: {times[rank] * 1000:.1f} ms per step, over "
                             "1.5x the ranks' median; every rank waits for it at each gradient exchange",
                             source="distributed", rank=rank, step_s=times)

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        model, probe, optimizer = self.model, self.probe, self.optimizer
        assert model is not None and probe is not None and optimizer is not None
        assert self.schedule is not None and self.controller is not None and self._tap is not None
        self.schedule.apply(optimizer, probe.epoch)  # the controller scales it around the step
        started = time.perf_counter()
        with self._amp():
            outputs = (self._ddp or model)(images)
        loss = self.criterion(outputs, targets)
        if self.config.task == "segmentation":
            self._train_dice.add(outputs, targets)
        if self._times is not None:
            self._times.add(time.perf_counter() - started)
        optimizer.zero_grad(set_to_none=True)
        scaler = self._scaler
        if scaler is None:
            loss.total.backward()
            probe.clip_(self.controller.clip)
            optimizer.step()
        else:  # float16 autocast: unscale before measuring, so the probe sees true gradients
            scaler.scale(loss.total).backward()
            scaler.unscale_(optimizer)
            probe.clip_(self.controller.clip)
            scaler.step(optimizer)
            scaler.update()
        raw, activated = self._tap.take(outputs)
        total, components = loss.total, loss.components
        if self.dist is not None:  # every step is published: the monitor sees the mean over ranks
            if self._rank_log is not None:
                self._rank_log.loss = float(total.detach())
            total, components = mean_losses(total, components, self.dist.world_size)
        probe.end_step(loss=total, components=components, outputs=raw, activated=activated,
                       activation="sigmoid" if activated is None else None)
        if probe.preview_due and self.is_main:
            self._send_preview()

    def _amp_dtype(self) -> torch.dtype | None:
        """bfloat16 where the GPU has it (no loss scaling, no sync), else float16; None without AMP."""
        if not (self.config.amp and self.device.type == "cuda"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _amp(self) -> Any:
        dtype = self._amp_dtype()
        if dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=dtype)

    @torch.no_grad()
    def _send_preview(self) -> None:
        assert self.model is not None and self.probe is not None and self.data is not None and self._tap is not None
        image, target = self.data.preview_sample()
        self.model.eval()
        try:
            with self._amp():
                outputs = self.model(image[None].to(self.device))
            raw, activated = self._tap.take(outputs)
            if activated is None:
                activated = torch.sigmoid(raw)
        finally:
            self.model.train()
        self.probe.preview(image, target, activated[0].float())
        self.probe.restart_timer()

    def _end_epoch(self) -> None:
        probe = self.probe
        assert probe is not None and self._means is not None
        probe.flush()
        train = {**self._means.means(), **self._train_dice.value()}
        val = self.validate() if self.is_main else {}  # the other ranks wait at the next command sync
        summary_epoch = probe.epoch
        probe.end_epoch(train, val)
        self.result.epochs = probe.epoch
        self.result.train_loss.append(train["loss"])
        self.result.val.append(val)
        if not self.is_main:
            return
        metric = val.get("dice", -val.get("loss", math.inf))
        if metric > self.best_metric:
            self.best_metric = metric
            best = self._save(ckpt.BEST, f"best so far at epoch {summary_epoch}")
            if best is not None:
                self.result.best_path = str(best)
        last = self._save(ckpt.LAST, f"end of epoch {summary_epoch}")
        if last is not None:
            self.result.last_path = str(last)
        if self.reporter is not None:
            self.reporter.epoch(self, train, val)
        probe.restart_timer()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation ``loss``, ``loss_<component>`` and, for segmentation, ``dice``: the Dice score
        of the thresholded predictions over the whole validation set."""
        model, data, probe = self.model, self.data, self.probe
        assert model is not None and data is not None and probe is not None
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        intersection = torch.zeros((), device=self.device)
        total = torch.zeros((), device=self.device)
        batches = 0
        try:
            for images, targets in data.val_batches(self.config.batch_size):
                if self.controller is not None:
                    self.controller.heartbeat()  # a long validation still heartbeats
                images, targets = images.to(self.device), targets.to(self.device)
                with self._amp():
                    outputs = model(images)
                loss = self.criterion(outputs, targets)
                sums["loss"] = sums.get("loss", 0) + loss.total.detach().float()
                for name, value in loss.components.items():
                    sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0) + value.detach().float()
                if self.config.task == "segmentation":
                    predicted = outputs.float() > 0  # logits > 0 <=> probability > 0.5
                    truth = targets > 0.5
                    intersection += (predicted & truth).sum()
                    total += predicted.sum() + truth.sum()
                batches += 1
        finally:
            model.train()
        if batches == 0:
            return {}
        val = {name: float(value) / batches for name, value in sums.items()}
        if self.config.task == "segmentation":
            val["dice"] = float((2 * intersection + 1e-6) / (total + 1e-6))
        return val

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything ``--resume`` needs to continue this run where it stands now."""
        assert self.model is not None and self.optimizer is not None and self.probe is not None
        assert self.schedule is not None and self.controller is not None
        settings: dict[str, Any] = {"lr_scale": self.controller.lr_scale.scale, "clip": self.controller.clip}
        for name in ("bce_weight", "dice_weight", "pos_weight"):
            if hasattr(self.criterion, name):
                settings[name] = getattr(self.criterion, name)
        return {
            "run_id": self.run_id,
            "step": self.probe.step,
            "epoch": self.probe.epoch,
            "batch": self.batch_in_epoch,
            "best_metric": self.best_metric,
            "settings": settings,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "saved_at": time.time(),
        }

    def _save(self, name: str, why: str) -> Path | None:
        """Write one checkpoint; a write that fails (a full disk) is a warning event, never an exception.

        The previous checkpoint of that name stays intact (the write goes to a temporary file
        that is renamed only when complete). Returns the path written, or None.
        """
        assert self.folder is not None and self.probe is not None
        outcome = ckpt.try_save_checkpoint(self.folder / name, self.checkpoint_state())
        if not outcome.ok:
            message = f"checkpoint {name} not written ({why}): {outcome.message}; training goes on"
            print(f"octa-train: warning: {message}", file=sys.stderr, flush=True)
            self.probe.event("warning", message, source="checkpoint", path=str(outcome.path), step=self.probe.step)
            return None
        path = outcome.path
        self.probe.event("checkpoint_saved", f"checkpoint {path.name} written ({why})", path=str(path),
                         step=self.probe.step)
        return path

    def save_last(self) -> str:
        """Write ``last.pt`` now (the ``checkpoint`` command); returns its path.

        Raises :class:`~octa_tui.trainer.checkpoint.CheckpointWriteError` when it cannot be
        written, so the command's reply says why (the loop itself goes on).
        """
        path = self._save(ckpt.LAST, "on request")
        if path is None:
            raise ckpt.CheckpointWriteError(f"{ckpt.LAST} could not be written; the previous one is intact")
        self.result.last_path = str(path)
        return str(path)

    def cleanup(self, state: str = "finished") -> None:
        """Final checkpoint, the run's last events, recording and link closed. Safe to call twice."""
        if self._tap is not None:
            self._tap.remove()
            self._tap = None
        if self.controller is not None:
            self.controller.close()
        probe = self.probe
        if probe is None:
            if self.dist is not None:
                leave_group()
            return
        self.probe = None
        try:
            if (self._set_up and self.controller is not None and probe.step > 0 and state != "failed"
                    and self.is_main):
                self.probe = probe
                last = self._save(ckpt.LAST, f"run {state}")
                if last is not None:
                    self.result.last_path = str(last)
                self.probe = None
            probe.event("run_finished", f"run {state} at step {probe.step}", state=state)
        finally:
            probe.close(state)
            self.result.steps = probe.step
            if self._rank_log is not None:
                self._rank_log.close()
                self._rank_log = None
            if self.dist is not None:
                leave_group()
            if self.reporter is not None:
                self.reporter.finished(self, self.result)
