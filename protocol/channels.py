"""Well-known channel names shared by the trainer, the diagnosis engine and the monitor.

A run's step vector is laid out in schema order; every channel has a ``group/name`` key.
Groups: ``loss`` (components, ``loss/total`` first), ``grad`` (one norm per layer, shallow
to deep; NaN for a layer none of whose parameters received a gradient), ``gradstat`` (summaries of all gradients), ``out`` (output statistics), ``opt``
(settings in force) and ``time`` (throughput and memory). A probe may add channels to
any group; these names are the ones the diagnosis rules look for.
"""

LOSS_TOTAL = "loss/total"
LOSS_BCE = "loss/bce"
LOSS_DICE = "loss/dice"  # the Dice *loss* term, 1 - Dice score
LOSS_MSE = "loss/mse"

GRAD_TOTAL_NORM = "gradstat/total_norm"
GRAD_N_OVER_BOUND = "gradstat/n_over_bound"  # parameters whose gradient norm exceeds the bound
GRAD_MAX_PARAM_NORM = "gradstat/max_param_norm"
GRAD_NONFINITE = "gradstat/nonfinite"  # 1.0 when any gradient holds NaN/Inf (never on an AMP-skipped step)
# 1.0 when a GradScaler skipped this step's optimizer.step (inf/NaN in the fp16 gradients): the
# step's grad/* and gradient summaries are NaN (nothing was applied). Present only under a scaler.
GRAD_AMP_SKIPPED = "gradstat/amp_skipped"

OUT_RAW_MIN = "out/raw_min"  # before the activation (logits)
OUT_RAW_MAX = "out/raw_max"
OUT_RAW_MEAN = "out/raw_mean"
OUT_ACT_MIN = "out/act_min"  # what the loss sees (after the activation, if any)
OUT_ACT_MAX = "out/act_max"
OUT_ACT_MEAN = "out/act_mean"
OUT_FRAC_OUTSIDE_01 = "out/frac_outside_01"

OPT_LR = "opt/lr"
OPT_BCE_WEIGHT = "opt/bce_weight"
OPT_DICE_WEIGHT = "opt/dice_weight"
OPT_POS_WEIGHT = "opt/pos_weight"  # 1.0 when none is set
OPT_CLIP = "opt/clip"  # 0.0 when clipping is off
OPT_UPDATE_RATIO = "opt/update_ratio"  # |delta w| / |w| of the last step, when measured
OPT_AMP_SCALE = "opt/amp_scale"  # the GradScaler's scale in force for the step (only under a scaler)

TIME_STEP_S = "time/step_s"
TIME_SAMPLES_PER_S = "time/samples_per_s"
TIME_MEMORY_MB = "time/memory_mb"

GROUPS = ("loss", "grad", "gradstat", "out", "opt", "time")


def channel(group: str, name: str) -> str:
    """The ``group/name`` key of a channel."""
    return f"{group}/{name}"
