"""The ``octa-train`` command line: the headless trainer.

Flags build a :class:`TrainConfig`; bad flags and paths end in one error line and exit
status 2. At start it prints where to attach (telemetry and control endpoints) and where
the session is recorded, and writes a run file so ``octa-tui`` on this machine can list
it. Ctrl-C (or SIGTERM) stops at the next step boundary: final checkpoint, recording
closed, run file removed; a second Ctrl-C aborts at once. (The run file is the probe's: see
``Probe.start``.)
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from dataclasses import replace
from typing import Any, NoReturn

from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.run_store import new_run_folder, release
from octa_tui.protocol.runfiles import ENV_STOP_WITH_PARENT

from .config import (
    DEVICES,
    LOSSES_BY_TASK,
    MODELS_BY_TASK,
    OPTIMIZERS,
    OUTPUT_ACTIVATIONS,
    TASKS,
    ConfigError,
    TrainConfig,
)

EXIT_USAGE = 2
# Settings of this session rather than of the run: a resumed run takes these from the
# command line and everything else (model, data, loss) from its checkpoint.
SESSION_KEYS = ("epochs", "max_steps", "device", "amp", "telemetry", "control", "record", "checkpoint_dir",
                "resume", "preview_every", "runs_dir", "keys", "insecure")


class UsageError(Exception):
    """A flag or path that cannot work: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see octa-train --help)")


def _pos_weight(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'auto', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 or 'auto', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``octa-train`` flags (defaults are :class:`TrainConfig`'s)."""
    d = TrainConfig()
    models = sorted({m for ms in MODELS_BY_TASK.values() for m in ms})
    p = _Parser(prog="octa-train", description="Train a segmentation or heatmap model with a live monitor link.")
    data = p.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="folder with images/ and masks/ paired by file stem")
    source.add_argument("--synthetic", metavar="N", type=int, help="N synthetic images (vessels, or heatmaps)")
    data.add_argument("--soft-masks", action="store_true", help="synthetic masks with many grey levels (seed fault 1a)")
    data.add_argument("--low-foreground", action="store_true", help="synthetic masks with ~1%% foreground (fault 1b)")
    data.add_argument("--contrast", type=float, default=d.contrast,
                      help="synthetic vessel brightness over the background (1: normal; lower is harder)")
    data.add_argument("--binarize-masks", action="store_true",
                      help="threshold masks at 127 before training (the fix for soft masks, seed 000 1a)")
    data.add_argument("--skip-bad-files", action="store_true", help="leave unreadable/unpaired files out (reported)")
    data.add_argument("--image-size", type=int, default=d.image_size, help="square size images are resized to")
    data.add_argument("--no-normalize", action="store_true", help="feed raw 0-255 pixel values")
    p.add_argument("--scenario", metavar="NAME", default="",
                   help="train a built-in fault scenario (data, model, loss, optimizer); "
                        "`octa-tui scenarios --list` describes them")
    model = p.add_argument_group("model and loss")
    model.add_argument("--task", choices=TASKS, default=d.task)
    model.add_argument("--model", choices=models, default=None,
                       help="default: unet (segmentation), craft (heatmap); craft_vgg16: the seed-shaped CRAFT "
                            "(VGG16-layout encoder, image size divisible by 16)")
    model.add_argument("--base-width", type=int, default=d.base_width)
    model.add_argument("--no-batch-norm", action="store_true",
                       help="UNet / CRAFT-like model without BatchNorm (seed 002's unnormalised net)")
    model.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=d.output_activation,
                       help="heatmap model's final activation; none reproduces seed 002's bug")
    model.add_argument("--loss", choices=sorted({n for ns in LOSSES_BY_TASK.values() for n in ns}), default="",
                       help="default: dice_bce (segmentation), mse (heatmap: mean squared error); mse_ohem is "
                            "a CRAFT-style heatmap loss: squared error over the positive pixels and the 3x as many "
                            "hardest negatives, divided by the positive count")
    model.add_argument("--bce-weight", type=float, default=d.bce_weight)
    model.add_argument("--dice-weight", type=float, default=d.dice_weight)
    model.add_argument("--pos-weight", type=_pos_weight, default=None, help="BCE weight of foreground pixels, or auto")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="sgd uses momentum 0.9")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay,
                     help="the optimizer's weight decay (adamw: decoupled; default %(default)s)")
    opt.add_argument("--batch-size", type=int, default=d.batch_size)
    opt.add_argument("--epochs", type=int, default=d.epochs)
    opt.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many steps (0: no limit)")
    opt.add_argument("--lr", type=float, default=d.lr)
    opt.add_argument("--step-size", type=int, default=d.step_size, help="StepLR: epochs between lr decays")
    opt.add_argument("--gamma", type=float, default=d.gamma, help="StepLR: lr factor per decay")
    opt.add_argument("--clip", type=float, default=d.clip, help="gradient norm clip (0: off)")
    opt.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--device", choices=DEVICES, default=d.device)
    opt.add_argument("--threads", type=int, default=0, metavar="N",
                     help="CPU threads torch may use (0: torch's default, one per core)")
    out = p.add_argument_group("output and link")
    out.add_argument("--checkpoint-dir", metavar="DIR",
                     help="default: a private run folder under ~/.local/share/octa-tui/runs (or $OCTA_TUI_RUNS_DIR), "
                          "where the newest 20 runs are kept")
    out.add_argument("--resume", metavar="CKPT", help="continue the run of a checkpoint (file or run folder)")
    out.add_argument("--record", metavar="PATH", help="session recording (.octa); default: in the run folder")
    out.add_argument("--telemetry", default=d.telemetry, help="endpoint to publish on (default %(default)s)")
    out.add_argument("--control", default=d.control, help="endpoint for commands (default %(default)s)")
    out.add_argument("--bind", metavar="tcp://HOST:PORT", default=None,
                     help="telemetry on PORT and control on PORT+1 of HOST; a non-loopback HOST needs --keys "
                          "(or --insecure)")
    out.add_argument("--keys", metavar="DIR", default=None,
                     help="CurveZMQ keys: DIR/trainer.key_secret and DIR/authorized/*.key (the monitors allowed); "
                          "make them with `octa-tui keys generate DIR --name trainer`")
    out.add_argument("--insecure", action="store_true",
                     help="accept a non-loopback endpoint without keys (anyone who can reach it can steer training)")
    out.add_argument("--preview-every", type=int, default=d.preview_every, metavar="N",
                     help="send a prediction preview every N steps (0: never)")
    out.add_argument("--quiet", action="store_true", help="print only the endpoints and the final line")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from parsed flags; with ``--resume``, the checkpoint's run settings."""
    model = args.model or ("craft" if args.task == "heatmap" else "unet")
    config = TrainConfig(
        data_dir=args.data, synthetic=args.synthetic or 0, soft_masks=args.soft_masks,
        low_foreground=args.low_foreground, contrast=args.contrast, binarize_masks=args.binarize_masks,
        skip_bad=args.skip_bad_files, image_size=args.image_size,
        normalize=not args.no_normalize, task=args.task, model=model, base_width=args.base_width, batch_norm=not args.no_batch_norm,
        output_activation=args.output_activation, loss=args.loss, bce_weight=args.bce_weight, dice_weight=args.dice_weight,
        pos_weight=args.pos_weight, optimizer=args.optimizer, weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
        lr=args.lr, step_size=args.step_size, gamma=args.gamma, clip=args.clip, amp=args.amp, seed=args.seed,
        device=args.device, checkpoint_dir=args.checkpoint_dir, record=args.record, resume=args.resume,
        preview_every=args.preview_every, telemetry=args.telemetry, control=args.control,
        keys=args.keys, insecure=args.insecure,
    )
    if args.bind:
        config = replace(config, **_bind_endpoints(args))
    if args.scenario:
        config = _scenario_config(args, config)
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise UsageError(f"--data {config.data_dir}: no such folder (it should hold images/ and masks/)")
    if config.resume:
        from .checkpoint import CheckpointError, load_checkpoint

        try:
            saved = TrainConfig.from_dict(load_checkpoint(config.resume)["config"])
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
        config = replace(saved, **{k: getattr(config, k) for k in SESSION_KEYS})
    _check_link_security(config)
    return config.check()


def _bind_endpoints(args: argparse.Namespace) -> dict[str, str]:
    """``--bind tcp://HOST:PORT``: telemetry on PORT, control on PORT+1 (port 0: both free)."""
    from octa_tui.protocol.transport import parse_endpoint

    defaults = TrainConfig()
    if args.telemetry != defaults.telemetry or args.control != defaults.control:
        raise UsageError("give either --bind or --telemetry/--control, not both")
    try:
        endpoint = parse_endpoint(args.bind, insecure=True)
    except ProtocolError as exc:
        raise UsageError(f"--bind: {exc}") from None
    if not endpoint.startswith("tcp://"):
        raise UsageError(f"--bind takes tcp://HOST:PORT, got {args.bind!r}; use --telemetry/--control for ipc://")
    host, port = endpoint.rsplit(":", 1)
    if int(port) >= 65535:
        raise UsageError(f"--bind port {port}: the control socket needs PORT+1, so use a port below 65535")
    control_port = int(port) + 1 if int(port) else 0
    return {"telemetry": endpoint, "control": f"{host}:{control_port}"}


def _check_link_security(config: TrainConfig) -> None:
    """Loopback and ipc need nothing; any other address needs --keys (loaded now) or --insecure."""
    from octa_tui.protocol.transport import parse_endpoint

    if config.keys and config.insecure:
        raise UsageError("--keys and --insecure contradict each other; keep --keys")
    for key in ("telemetry", "control"):
        try:
            parse_endpoint(getattr(config, key), insecure=bool(config.keys or config.insecure))
        except ProtocolError as exc:
            raise UsageError(f"--{key}: {exc}") from None
    if config.keys:
        from octa_tui.protocol.keys import ServerCurve

        try:
            ServerCurve.from_dir(config.keys)
        except ProtocolError as exc:
            raise UsageError(f"--keys: {exc}") from None


def _scenario_config(args: argparse.Namespace, given: TrainConfig) -> TrainConfig:
    """A fault scenario's configuration; this session's settings (steps, endpoints, seed, ...)
    and ``--binarize-masks`` (the soft-masks fix) still come from the command line."""
    from .scenarios import ScenarioError, scenario_config

    if args.resume or args.data:
        raise UsageError("--scenario builds its own synthetic data and model; leave out --data and --resume")
    keep = {k: getattr(given, k) for k in (*SESSION_KEYS, "seed") if k != "epochs"}
    if args.epochs != TrainConfig().epochs:
        keep["epochs"] = args.epochs
    if args.binarize_masks:
        keep["binarize_masks"] = True
    try:
        return scenario_config(args.scenario, **keep)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None


def _print_start(trainer: Any, out: Any) -> None:
    probe = trainer.probe
    link = probe.link
    summary = probe.schema.model
    print(f"octa-train: {trainer.config.task} run {trainer.run_id}: {summary.name} "
          f"({summary.parameters:,} parameters) on {summary.device}, {trainer.data.source}", file=out)
    print(f"  telemetry  {link.telemetry_endpoint}", file=out)
    print(f"  control    {link.control_endpoint}", file=out)
    print(f"  recording  {trainer.record_path}", file=out)
    print(f"  checkpoints {trainer.folder}", file=out)
    if trainer.dist is not None:
        print(f"  ranks      {trainer.dist.world_size} ({trainer.probe.schema.config.get('backend', '')}); "
              "this is rank 0, the one monitors attach to", file=out)
    if trainer.config.keys:
        print(f"  security   CurveZMQ: only monitors with a key in {trainer.config.keys}/authorized/ may connect",
              file=out)
    elif trainer.config.insecure:
        print("  security   --insecure: unencrypted, anyone who reaches these ports can steer training", file=out)
    print("  attach with `octa-tui` on this machine (it lists running trainers)", file=out, flush=True)


def with_run_folder(config: TrainConfig, environ: Any = os.environ) -> TrainConfig:
    """``config`` with a fresh private run folder in the run store (see
    :mod:`octa_tui.protocol.run_store`) when it names none: no ``--checkpoint-dir``, no
    ``--resume`` (which continues in its own folder), and this is the rank that writes."""
    if config.checkpoint_dir or config.resume or str(environ.get("RANK", "0")) not in ("", "0"):
        return config
    try:
        folder = new_run_folder(config.task)
    except OSError as exc:
        raise UsageError(f"cannot make a run folder ({exc}); give one with --checkpoint-dir DIR") from None
    return replace(config, checkpoint_dir=str(folder))


def set_threads(threads: int) -> None:
    """``--threads N``: how many CPU threads torch uses (0 leaves torch's default)."""
    if threads < 0:
        raise UsageError(f"--threads must be 0 (torch's default) or a positive number, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def run(config: TrainConfig, quiet: bool = False) -> int:
    """Train ``config`` with the console display and the run file; returns the exit status."""
    from .checkpoint import CheckpointError
    from .console import PlainReporter, RichReporter
    from .distributed import DistributedError, RankLost
    from .folder import DataError
    from .loop import Trainer

    given_folder = config.checkpoint_dir
    config = with_run_folder(config)
    made_folder = None if given_folder or not config.checkpoint_dir else config.checkpoint_dir

    reporter = RichReporter(quiet=quiet) if sys.stdout.isatty() and not quiet else PlainReporter(quiet=quiet)
    try:
        trainer = Trainer(config, reporter=reporter)
    except (ValueError, DistributedError) as exc:
        raise UsageError(str(exc)) from None
    if not trainer.is_main:  # under torchrun, rank 0 prints for the run
        trainer.reporter = None
    previous = _install_stop_handlers(trainer)
    finished = threading.Event()
    watch_parent(trainer, done=finished)
    state = "failed"
    try:
        try:
            trainer.setup()
        except (DataError, CheckpointError, ConfigError, ProtocolError, OSError) as exc:
            raise UsageError(str(exc)) from None
        if trainer.is_main:
            _print_start(trainer, sys.stdout)
        try:
            trainer.train()
        except RankLost as exc:
            print(f"octa-train: error: {exc}", file=sys.stderr, flush=True)
            return 1
        state = trainer.result.state
    finally:
        finished.set()
        trainer.cleanup(state)  # closes the probe, which removes the run file
        _restore_handlers(previous)
        if made_folder:
            from pathlib import Path

            release(Path(made_folder))
    if trainer.result.recording and trainer.is_main:
        print(f"octa-train: recording {trainer.result.recording}", flush=True)
        print(f"  replay it: octa-tui replay {_quoted(trainer.result.recording)}", flush=True)
    return 0


def _quoted(path: str) -> str:
    import shlex

    return shlex.quote(str(path))


def _install_stop_handlers(trainer: Any) -> dict[int, Any]:
    def stop(signum: int, frame: Any) -> None:
        if trainer._stop_signal:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        print("\nocta-train: stopping at the next step (Ctrl-C again to abort)", file=sys.stderr, flush=True)
        trainer.stop()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    return previous


PARENT_POLL_S = 0.5


def watch_parent(trainer: Any, environ: Any = os.environ, poll_s: float = PARENT_POLL_S,
                 done: threading.Event | None = None) -> threading.Thread | None:
    """Stop ``trainer`` at its next step once the process named by ``OCTA_TUI_STOP_WITH_PARENT``
    stops being this process's parent: the monitor that started it (``octa-tui demo``) died
    without stopping it. Nothing is watched without the variable (or with a value that is not a
    pid); a daemon thread polls ``os.getppid()``, so a trainer started by hand is never affected.
    The thread ends with the run: when ``done`` is set or the trainer was asked to stop."""
    value = environ.get(ENV_STOP_WITH_PARENT, "")
    if not value.isdigit() or int(value) <= 1:
        return None
    parent = int(value)
    finished = done or threading.Event()

    def watch() -> None:
        while not trainer._stop_signal:
            if os.getppid() != parent:
                print(f"octa-train: the monitor that started this trainer (pid {parent}) is gone; "
                      "stopping at the next step", file=sys.stderr, flush=True)
                trainer.stop()
                return
            if finished.wait(poll_s):
                return

    thread = threading.Thread(target=watch, name="octa-parent-watch", daemon=True)
    thread.start()
    return thread


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``octa-train``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        config = config_from_args(args)
        set_threads(args.threads)
        return run(config, quiet=args.quiet)
    except (UsageError, ConfigError) as exc:
        print(f"octa-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("octa-train: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
