"""Training under ``torchrun``: one run in the monitor however many processes train it.

When torchrun's environment is present (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) the trainer joins a process group (NCCL on CUDA, gloo on
the CPU) and wraps its model in DistributedDataParallel. Rank 0 alone owns the link, the
run file, the recording and the checkpoints; the other ranks train silently.

What crosses between ranks, and when:

- every step, one ``all_reduce`` of a small fixed-size float64 tensor (:data:`WIRE_SIZE`
  numbers): rank 0 writes the commands it received (op code and arguments as plain numbers), the
  other ranks write zeros, and every rank writes 1 in the stop slot when it was asked to stop
  (Ctrl-C, SIGTERM). Summing is a broadcast of rank 0's commands that also tells every rank
  about a stop asked of any one of them, so commands and stops take effect at the same step
  everywhere;
- every step, one ``all_reduce`` of the stacked loss vector (total and components), since
  every step is published: the monitor sees the loss averaged over ranks. Gradient norms need
  nothing: after DDP's gradient all-reduce they are the same on every rank;
- every :data:`TIMES_EVERY` steps, one ``all_gather`` of each rank's mean step time, which
  rank 0 publishes and checks for a straggler.

A collective that fails (a rank died, or stopped answering for longer than the group's
timeout) raises :class:`RankLost`, which ends the run cleanly on the ranks still alive.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from octa_tui.protocol.commands import COMMAND_ARGS
from octa_tui.protocol.messages import Command

from .control import PAUSE_POLL_S, Controller

TIMEOUT_ENV = "OCTA_TUI_DDP_TIMEOUT_S"  # seconds a collective may wait for a silent rank
RANK_LOG_ENV = "OCTA_TUI_RANK_LOG"  # a folder: each rank writes the lr it trained each step with
TIMES_EVERY_ENV = "OCTA_TUI_RANK_TIMES_EVERY"  # steps between gathers of the ranks' step times
DEFAULT_TIMEOUT_S = 600.0
TIMES_EVERY = 50  # default of OCTA_TUI_RANK_TIMES_EVERY
DETAIL_CHARS = 240  # of the backend's error, in the message of a lost rank
STRAGGLER_FACTOR = 1.5  # a rank slower than this times the median step time is a straggler

# Commands every rank applies, in op-code order (op code = position + 1; 0 is an empty slot).
WIRE_OPS = ("set_lr", "set_loss_weights", "set_pos_weight", "set_clip", "pause", "resume", "checkpoint", "stop")
WIRE_ARGS = {op: tuple(COMMAND_ARGS[op]) for op in WIRE_OPS}
WIRE_SLOTS = 4  # commands carried per step; more wait for the next step
SLOT_WIDTH = 1 + max(len(names) for names in WIRE_ARGS.values())
WIRE_SIZE = 1 + WIRE_SLOTS * SLOT_WIDTH  # [stop, (op, arg, arg) x slots]


class DistributedError(RuntimeError):
    """torchrun's environment is incomplete or malformed; the message names the variable."""


class RankLost(RuntimeError):
    """A collective with the other ranks failed: one died or stopped answering. The run ends."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job: its rank, the number of ranks, its local rank."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv | None:
        """The job torchrun describes in ``environ`` (``os.environ``), or None outside torchrun."""
        env = os.environ if environ is None else environ
        if "RANK" not in env and "WORLD_SIZE" not in env:
            return None
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise DistributedError(f"distributed run: {', '.join(missing)} not set; start it with torchrun "
                                   "(e.g. torchrun --nproc-per-node 2 -m octa_tui.trainer ...)")
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", rank))
        except ValueError:
            raise DistributedError("distributed run: RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"distributed run: RANK {rank} is outside WORLD_SIZE {world}")
        return cls(rank, world, local)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that talks to monitors and writes files."""
        return self.rank == 0


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """How long a collective waits for a rank that does not answer (``OCTA_TUI_DDP_TIMEOUT_S``)."""
    text = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DistributedError(f"{TIMEOUT_ENV}={text!r}: give a number of seconds > 0")
    return value


def times_every(environ: Mapping[str, str] | None = None) -> int:
    """Steps between gathers of the ranks' step times (``OCTA_TUI_RANK_TIMES_EVERY``; 0: never)."""
    text = (os.environ if environ is None else environ).get(TIMES_EVERY_ENV, "")
    if not text:
        return TIMES_EVERY
    if not text.isdigit():
        raise DistributedError(f"{TIMES_EVERY_ENV}={text!r}: give a whole number of steps >= 0 (0: never)")
    return int(text)


def join_group(env: DistEnv, device: torch.device) -> str:
    """Join the job's process group (NCCL for CUDA devices, gloo otherwise); returns the backend."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s()))
    return backend


def leave_group() -> None:
    """Leave the process group (best effort: after a lost rank there may be nobody to tell)."""
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the run is over either way
            pass


@contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective into :class:`RankLost` with a message a person can act on."""
    try:
        yield
    except RankLost:
        raise
    except RuntimeError as exc:
        rank = dist.get_rank() if dist.is_initialized() else "?"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(detail) > DETAIL_CHARS:
            detail = detail[: DETAIL_CHARS - 3] + "..."
        raise RankLost(
            f"rank {rank}: another rank died or stopped answering (its own log says why), so this run ends here; "
            f"the {what} failed: {detail}"
        ) from exc


# --- commands on the wire ---------------------------------------------------------------------


def encode_commands(commands: Sequence[Command], stop: bool = False) -> torch.Tensor:
    """Commands (at most :data:`WIRE_SLOTS`, ops in :data:`WIRE_OPS`) as a float64 tensor."""
    if len(commands) > WIRE_SLOTS:
        raise ValueError(f"at most {WIRE_SLOTS} commands fit one step's wire, got {len(commands)}")
    wire = torch.zeros(WIRE_SIZE, dtype=torch.float64)
    wire[0] = 1.0 if stop else 0.0
    for slot, command in enumerate(commands):
        if command.op not in WIRE_ARGS:
            raise ValueError(f"{command.op}: not a command the ranks apply together; known: {', '.join(WIRE_OPS)}")
        base = 1 + slot * SLOT_WIDTH
        wire[base] = WIRE_OPS.index(command.op) + 1
        for offset, name in enumerate(WIRE_ARGS[command.op]):
            wire[base + 1 + offset] = float(command.args[name])
    return wire


def decode_commands(wire: torch.Tensor) -> tuple[list[Command], bool]:
    """The commands and the stop flag of a summed wire (see :func:`encode_commands`)."""
    values = wire.tolist()
    commands = []
    for slot in range(WIRE_SLOTS):
        base = 1 + slot * SLOT_WIDTH
        code = int(values[base])
        if code == 0:
            continue
        op = WIRE_OPS[code - 1]
        args = {name: values[base + 1 + i] for i, name in enumerate(WIRE_ARGS[op])}
        commands.append(Command(op, args))
    return commands, values[0] > 0


class HeldReply:
    """A command's answer kept until the step it takes effect at has run on every rank."""

    def __init__(self, pending: Any) -> None:
        self.command = pending.command
        self._pending = pending
        self._answer: tuple[str, tuple[Any, ...]] | None = None

    def ok(self, step: int, data: Mapping[str, Any] | None = None) -> None:
        self._answer = ("ok", (step, data))

    def error(self, reason: str, step: int) -> None:
        self._answer = ("error", (reason, step))

    def release(self) -> None:
        """Send the answer (once)."""
        answer, self._answer = self._answer, None
        if answer is not None:
            getattr(self._pending, answer[0])(*answer[1])


class _Unanswered:
    """A command as ranks other than 0 apply it: rank 0 answers the monitor."""

    def __init__(self, command: Command) -> None:
        self.command = command

    def ok(self, step: int, data: Mapping[str, Any] | None = None) -> None:
        pass

    def error(self, reason: str, step: int) -> None:
        pass


class DistributedController(Controller):
    """A :class:`Controller` whose commands and stops take effect at the same step on every rank.

    Rank 0 takes commands from the link; :meth:`poll` (every step, on every rank) carries them
    to all ranks in one collective and every rank applies them. Rank 0's answers are held
    until :meth:`release` (called by the loop after the step has run). While paused, every
    rank waits in :meth:`poll`, syncing every ``PAUSE_POLL_S``, and rank 0 keeps serving the
    link. ``local_stop`` says whether this process was asked to stop (a signal).
    """

    def __init__(self, *args: Any, env: DistEnv, local_stop: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = env
        self._local_stop = local_stop
        self._held: list[HeldReply] = []

    def poll(self) -> None:
        """Sync commands with every rank and apply them; while paused, wait here in lockstep."""
        paused_here = False
        self._sync()
        while self.paused and not self.stop_requested:
            if not paused_here:
                self.probe.flush()
                paused_here = True
            self.release()
            time.sleep(PAUSE_POLL_S)
            self._sync()
        if paused_here:
            self.probe.restart_timer()

    def _sync(self) -> None:
        taken: list[Any] = []
        if self.env.is_main:
            incoming = self._waiting + self.probe.serve("paused" if self.paused else "running", force=self.paused)
            self._waiting = []
            for pending in incoming:
                if pending.command.op not in WIRE_ARGS:
                    self.apply(pending)  # refused with the reason, on rank 0 alone
                elif len(taken) < WIRE_SLOTS:
                    taken.append(pending)
                else:
                    self._waiting.append(pending)
        wire = encode_commands([p.command for p in taken], stop=self._local_stop())
        with collective("command sync"):
            dist.all_reduce(wire)
        commands, stop = decode_commands(wire)
        for index, command in enumerate(commands):
            if self.env.is_main:
                held = HeldReply(taken[index])
                self.apply(held)
                self._held.append(held)
            else:
                self.apply(_Unanswered(command))
        if stop and not self.stop_requested:
            self.stop_requested = True
            self.paused = False

    def release(self) -> None:
        """Send the answers held since the last sync (the step they name has run everywhere)."""
        held, self._held = self._held, []
        for reply in held:
            reply.release()

    def close(self) -> None:
        self.release()
        super().close()


# --- numbers gathered from every rank ------------------------------------------------------------


def mean_losses(total: torch.Tensor, components: Mapping[str, Any], world_size: int
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss total and components averaged over ranks: one ``all_reduce`` of their stack."""
    names = list(components)
    stacked = torch.stack([torch.as_tensor(v, device=total.device).detach().float().reshape(())
                           for v in (total, *components.values())])
    with collective("loss average"):
        dist.all_reduce(stacked)
    stacked /= world_size
    return stacked[0], dict(zip(names, stacked[1:]))


def stragglers(step_s: Sequence[float], factor: float = STRAGGLER_FACTOR) -> list[int]:
    """Ranks whose step time is over ``factor`` times the median of all ranks."""
    finite = [t for t in step_s if math.isfinite(t)]
    if len(finite) < 2:
        return []
    median = statistics.median(finite)
    return [rank for rank, t in enumerate(step_s) if math.isfinite(t) and median > 0 and t > factor * median]


class RankTimes:
    """Each rank's mean step time over the last ``every`` steps, gathered on every rank.

    A rank's step time is its own work up to the gradient exchange: loading the batch, the
    forward pass and the loss. The backward pass is left out because DDP's gradient all-reduce
    makes every rank wait there for the slowest one, which would hide the straggler.
    """

    def __init__(self, env: DistEnv, device: torch.device, every: int | None = None) -> None:
        self.env = env
        self.every = int(every) if every is not None else times_every()
        self._device = device
        self._sum = 0.0
        self._count = 0

    def add(self, seconds: float) -> None:
        """Count one step's work time of this rank."""
        self._sum += seconds
        self._count += 1

    def due(self, step: int) -> bool:
        """Whether the ranks gather their times after ``step`` (the number of steps done)."""
        return self.every > 0 and step > 0 and step % self.every == 0

    def gather(self) -> list[float]:
        """Every rank's mean step time since the last gather, rank order (one ``all_gather``)."""
        mine = torch.tensor([self._sum / self._count if self._count else math.nan], device=self._device)
        parts = [torch.empty_like(mine) for _ in range(self.env.world_size)]
        with collective("step-time gather"):
            dist.all_gather(parts, mine)
        self._sum, self._count = 0.0, 0
        return [float(p.item()) for p in parts]


class RankLog:
    """Per-rank record of each step's lr and this rank's own loss, in ``$OCTA_TUI_RANK_LOG/rank<N>.txt``.

    Lets a test (or a person debugging a job) check that a command took effect on every rank
    at the same step, and what each rank's loss was before the average. The first line is
    ``# rank R pid P``; then ``step lr loss`` per step. (Reading the loss costs the step a
    device sync, so it is read only when this log is on.)
    """

    def __init__(self, folder: str, rank: int) -> None:
        os.makedirs(folder, exist_ok=True)
        self._file = open(os.path.join(folder, f"rank{rank}.txt"), "w", buffering=1, encoding="utf-8")
        self._file.write(f"# rank {rank} pid {os.getpid()}\n")
        self.loss = math.nan  # this rank's loss of the current step, set by the loop

    @classmethod
    def from_environ(cls, rank: int) -> RankLog | None:
        """The log ``OCTA_TUI_RANK_LOG`` asks for, or None."""
        folder = os.environ.get(RANK_LOG_ENV, "")
        return cls(folder, rank) if folder else None

    def write(self, step: int, lr: float) -> None:
        """Note one step: the lr it trained with and this rank's loss."""
        self._file.write(f"{step} {lr!r} {self.loss!r}\n")

    def close(self) -> None:
        self._file.close()
