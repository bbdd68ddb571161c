"""Every sentence a verdict can say, in English and in Chinese.

The seeds' users write their notes in Chinese, so each rule's title, evidence, cause and
instruction exists in both languages with the same placeholders. Measured facts are stated
("Masks are not binary"); rules of thumb are worded as such ("may be", "try", "可能", "试试").
"""

from __future__ import annotations

import os

from .verdict import LANGS, check_lang

LANG_ENV = "OCTA_TUI_LANG"
_language: list[str] = []  # the language set with set_language(); empty: read the environment


def set_language(lang: str | None) -> str:
    """Choose the language of every verdict, severity and matrix row from now on ("en" | "zh").

    ``None`` goes back to the environment variable ``OCTA_TUI_LANG`` (default "en"). The CLI's
    ``--lang`` calls this; an unknown language raises ValueError naming the choices.
    """
    _language.clear()
    if lang is not None:
        _language.append(check_lang(lang))
    return get_language()


def get_language() -> str:
    """The language in force: the one set with :func:`set_language`, else ``$OCTA_TUI_LANG``, else "en".

    An unsupported value in the environment falls back to "en" (it must not stop a monitor from
    starting); :func:`set_language` refuses it with the choices.
    """
    if _language:
        return _language[0]
    value = os.environ.get(LANG_ENV, "").strip().lower()
    if value.startswith("zh"):
        return "zh"
    return value if value in LANGS else "en"

TEXTS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "nonfinite": {
            "title": "Loss or gradients are NaN/Inf",
            "evidence": "{what} not finite at step {step} ({count} of the last {window} steps)",
            "cause": "Training diverged: an update too large (learning rate too high, no clipping) or a "
            "numerical fault (log(0), division by zero, fp16 overflow). Weights updated from a NaN are lost.",
            "instruction": "Pause now, lower the learning rate or enable clipping, and resume from the last "
            "good checkpoint.",
            "cause_fp16": "The run trains in float16 (a GradScaler): a non-finite loss there is most often a float16 "
            "overflow (values above 65504 in the activations or the loss), not a learning rate problem.",
            "instruction_fp16": "Pause now; train in bfloat16 where the GPU has it, or compute the loss in float32 "
            "outside autocast, and resume from the last good checkpoint.",
        },
        "missing_sigmoid": {
            "title": "Outputs outside [0, 1] reach a loss that expects probabilities",
            "evidence": "outputs fed to the {loss} loss span [{lo:.4g}, {hi:.4g}] over the last {window} steps",
            "evidence_frac": "outputs fed to the {loss} loss span [{lo:.4g}, {hi:.4g}] over the last {window} "
            "steps; {frac:.0%} of them lie outside [0, 1]",
            "cause": "The model's last layer has no sigmoid, so the {loss} loss compares raw values with "
            "[0, 1] targets: the loss is inflated and its gradients point the wrong way (seed 002: outputs "
            "[-8.489, 1.476], MSE 2.39).",
            "instruction": "Add a sigmoid after the last layer (or use a loss that takes logits, such as "
            "BCEWithLogits) and restart.",
        },
        "gradient_explosion": {
            "title": "Gradient explosion",
            "evidence": "{count} parameters with gradient norm > {bound:g} (max {max:.3g}) at step {step}; "
            "{steps} of the last {window} steps exceeded the bound",
            "evidence_nocount": "largest parameter gradient norm {max:.3g} > {bound:g} at step {step}; "
            "{steps} of the last {window} steps exceeded the bound",
            "cause": "An explosion is a symptom: something makes the gradients huge, such as outputs outside the "
            "range the loss expects (a missing sigmoid), unnormalised inputs (0-255), or a learning rate too high "
            "(seed 002: no sigmoid, lr 1e-3, clip 5.0 gave 16 parameters over 10, max 32.3). Clipping and a lower "
            "lr contain it; fixing the cause ends it.",
            "instruction": "Clip gradients at {clip:g} and divide the learning rate by {divisor:g}.",
            "instruction_clipped": "Clipping is already at {clip:g}; divide the learning rate by {divisor:g}.",
        },
        "vanishing_gradients": {
            "title": "Vanishing gradients",
            "evidence": "{name} gradient norm ratio {ratio} (first weight layer {first} {first_norm:.3g} vs last "
            "{last} {last_norm:.3g}; medians of the last {window} steps)",
            "evidence_earlier": ", {ratio} over the same number of steps before",
            "evidence_floor": "{layer} gradient norm {norm:.2g} < {floor:g}",
            "cause": "Gradients shrink by orders of magnitude on their way back to the input (saturating "
            "activations such as sigmoid/tanh, no normalisation, no skip connections), so the first layers do "
            "not learn.",
            "instruction": "Change the architecture or activations (ReLU-family activations, batch "
            "normalisation, residual/skip connections) and restart.",
        },
        "masks_not_binary": {
            "title": "Masks are not binary",
            "evidence": "masks hold {count} distinct values (expected {expected}), e.g. {values}",
            "cause": "The masks are grayscale (anti-aliased, or resized with interpolation), so the targets "
            "are soft and BCE/Dice chase blurred edges.",
            "instruction": "Binarise the masks before loading (value > 127 -> 255, else 0) and restart.",
        },
        "class_imbalance": {
            "title": "Severe class imbalance",
            "evidence": "mean foreground ratio {ratio:.2%} < {min:.0%}; pos_weight in force {pos_weight:g}",
            "cause": "Background dominates the pixels, so BCE is minimised by predicting background "
            "everywhere.",
            "instruction": "Weight the foreground in BCE: pos_weight = background / foreground = {suggested:.3g}.",
            "instruction_empty": "The masks hold no foreground at all: check the mask files and their pairing "
            "with the images.",
        },
        "no_better_than_constant": {
            "title": "No better than a constant prediction",
            "evidence": "{what} {loss:.4g} +-{se:.2g} (mean of the last {window} steps) vs {baseline:.4g} for the "
            "best constant prediction ({how})",
            "how_constant": "predicting {constant:.3g} everywhere",
            "how_mean": "predicting each target channel's mean",
            "cause": "The model has learned nothing a constant output could not do: inputs and targets may "
            "be mispaired, the output activation may not match the loss, or the learning rate is off.",
            "instruction": "Compare a prediction preview with its target; check the data pairing and the "
            "output activation.",
        },
        "plateau": {
            "title": "Loss plateau",
            "title_converged": "Loss has flattened (converged)",
            "evidence_epochs": "last {n} epoch losses [{values}]: variance {variance:.2g} < {variance_max:g} "
            "and {n}-epoch improvement {improvement:.2g} < {improvement_max:g} (trend {trend:.2g}, noise "
            "+-{noise:.2g})",
            "evidence_steps": "steps {first}-{last} in {n} blocks of {block}: block-mean variance "
            "{variance:.2g} < {variance_max:g} and improvement {improvement:.2g} < {improvement_max:g} "
            "(trend {trend:.2g}, noise +-{noise:.2g})",
            "cause": "The loss has stopped improving at level {level:.4g}: a hyperparameter or the data "
            "holds it there (see the other verdicts and the diagnosis matrix).",
            "cause_converged": "The loss is flat at level {level:.4g} while {why}: this looks like "
            "convergence, not a stall.",
            "why_dice": "validation Dice is {dice:.2f}",
            "why_baseline": "it is far below the constant-prediction baseline {baseline:.4g}",
            "instruction": "Check the data first, then the learning rate, then the loss weights (seed 000's "
            "order of priority).",
            "instruction_converged": "Lower the learning rate to refine, or stop here.",
        },
        "loss_weights_unbalanced": {
            "title": "Loss weights may be unbalanced (try 0.5/0.5)",
            "evidence": "Dice term {dice:.3f} > {dice_max:g} while BCE {bce:.3f} <= {bce_max:g}; loss on a "
            "plateau; validation Dice {val_dice:.2f} < {val_dice_max:g}; gradients healthy; weights in force "
            "BCE {bce_weight:g} / Dice {dice_weight:g}",
            "cause": "A rule of thumb from seed 000: with the Dice term weighted {dice_weight:g}, the model "
            "may be stuck on shape while pixel classification is done. Thin structures keep the Dice term "
            "high even in good runs, so this is a trial, not a finding.",
            "instruction": "Try BCE {bce_to:g} / Dice {dice_to:g}, watch whether the loss and validation Dice "
            "move, and undo if they do not.",
        },
        "lr_too_small": {
            "title": "Learning rate may be too small (try {new:.2g})",
            "evidence": "loss {now:.4g} is still {fraction:.0%} of its start {start:.4g} and fell {decline:.1%} "
            "over the last {window} steps; {update}",
            "update_ratio": "update size |dw|/|w| {ratio:.2g} < {ratio_max:g}; lr {lr:.2g}",
            "update_lr": "lr {lr:.2g} <= {lr_small:g} (update size not measured)",
            "cause": "A rule of thumb from seed 000: a loss that falls a little and then crawls at a high "
            "level, with tiny updates, usually means the steps are too small.",
            "instruction": "Try lr {lr:.2g} -> {new:.2g} (x{factor:.3g}): {sized} Watch the loss; undo if it turns "
            "unstable.",
            "sized": "the lr that brings the measured update size to the healthy ~{target:g}.",
            "sized_seed": "seed 000's x{factor:g} (the update size is not measured).",
        },
        "bce_not_settled": {
            "title": "BCE may not have settled late in training",
            "evidence": "BCE {bce:.3f} +-{se:.2g} (mean of the last {window} steps) > {bce_max:.3g} at {when}",
            "when_progress": "{progress:.0%} of the planned steps",
            "when_epoch": "epoch {epoch}",
            "threshold_weighted": " (the 0.3 rule scaled for pos_weight {pos_weight:g})",
            "cause": "A rule of thumb from seed 000: pixel-level classification is still unstable; the run "
            "needs more epochs or larger steps.",
            "instruction": "Try a higher learning rate (x{factor:g}: {lr:.2g} -> {new:.2g}) now, or train for "
            "more epochs.",
            "instruction_no_lr": "Train for more epochs, or raise the learning rate.",
        },
        "squashed_outputs": {
            "title": "Outputs squashed into a narrow band: a sigmoid applied twice",
            "evidence": "the logits the loss receives never leave [{raw_lo:.3g}, {raw_hi:.3g}] (inside [0, 1]) and "
            "what the loss compares with the masks stays in [{act_lo:.3g}, {act_hi:.3g}] over the last {window} steps "
            "(a sigmoid of a probability cannot leave [0.5, {top:.3f}])",
            "cause": "The model already ends in a sigmoid and the loss (BCEWithLogits, or a Dice that applies a "
            "sigmoid) applies another: predictions can never go below 0.5 or above 0.73, so background is never "
            "predicted and the loss cannot fall.",
            "instruction": "Remove the model's final sigmoid (the loss applies it), or use a loss that takes "
            "probabilities (BCELoss), and restart.",
        },
        "bce_at_ln2": {
            "title": "The logits never go below 0 (BCE held near ln 2 = 0.693)",
            "evidence": "the lowest logit over the last {window} steps is {raw_lo:.3g} (highest {raw_hi:.3g}): no pixel "
            "is ever predicted below probability 0.5; {what} {bce:.4f} (ln 2 = {ln2:.4f})",
            "cause": "A ReLU (or another non-negative activation) sits after the last layer while the loss applies "
            "a sigmoid (BCEWithLogits): background needs negative logits, the ReLU cuts them to 0, so every "
            "background pixel costs ln 2.",
            "instruction": "Remove the final ReLU so the head returns raw logits, and restart.",
        },
        "constant_loss": {
            "title": "A loss term is constant or exactly 0: it gives no gradient",
            "title_output": "The model's output is one value everywhere and gets no gradient",
            "evidence_zero": "{what} is exactly 0 on each of the last {window} steps",
            "evidence_constant": "{what} is {value:.6g} on each of the last {window} steps",
            "evidence_output": "every output value is {value:.6g} (min = max) and the gradient norm is 0 on each of "
            "the last {window} steps",
            "cause": "A term that never changes contributes nothing to learning: typically a cross-entropy or softmax "
            "over a single channel (always 0 or 1), a term multiplied by 0, or a term computed on detached values.",
            "cause_output": "The output does not depend on the weights: a softmax over a single channel is always 1 "
            "(use a sigmoid for one class), or the output is detached or overwritten.",
            "instruction": "For one foreground class use a sigmoid (BCEWithLogits) instead of softmax/cross-entropy "
            "over one channel, or output 2 channels for softmax; check the term is computed on the model's "
            "output; restart.",
        },
        "amp_overflow": {
            "title": "Mixed precision (float16) overflows: the loss scaler skips steps",
            "evidence": "the GradScaler skipped {skipped} of the last {rows} optimizer steps ({fraction:.0%}) "
            "because gradients overflowed float16; loss scale now {scale:.3g}",
            "cause": "In float16 the largest number is 65504: activations, the loss or the scaled gradients overflow, "
            "so the scaler keeps skipping updates (occasional skips are normal; most steps are not).",
            "instruction": "Train in bfloat16 where the GPU has it (no scaler needed), compute the loss in float32 "
            "outside autocast, or start the scaler lower (GradScaler(init_scale=1024)); normalise the inputs.",
        },
        "lr_too_high": {
            "title": "Learning rate may be too high: the loss oscillates without going down",
            "evidence": "update size |dw|/|w| {ratio:.2g} > {ratio_max:g} at lr {lr:.2g}; over the last {window} steps "
            "the loss shows no downward trend (trend {trend:.2g}, noise +-{noise:.2g}) and swings by {swing:.0%} of "
            "its level",
            "cause": "A rule of thumb: steps this large jump across the minimum instead of descending into it; the "
            "loss bounces at a high level without exploding.",
            "instruction": "Try lr {new:.2g} (from {lr:.2g}): the lr that brings the measured update size to the "
            "healthy ~{target:g}.",
            "title_dead": "Learning rate too high at the start: the network died and no longer learns",
            "evidence_dead": "the first {first} steps moved the weights by |dw|/|w| {early:.2g} per step (> {ratio_max:g}) "
            "at lr {early_lr:.2g}; since then the gradient norm is {grad:.2g} and the updates have fallen to "
            "{now:.2g}; the loss has not moved over the last {window} steps",
            "cause_dead": "Steps this large in the first iterations pushed the units into a state where no gradient "
            "passes (saturated sigmoids, dead ReLUs): nothing reaches the weights any more, whatever the lr.",
            "instruction_dead": "Restart with a lower lr, about {new:.2g} (the lr that would have kept the first "
            "updates near the healthy ~{target:g}), or a warm-up; lowering the lr now cannot revive the network.",
        },
        "unused_parameters": {
            "title": "Some layers never receive a gradient",
            "evidence": "{count} layer(s) got no gradient on any recent step: {layers}",
            "cause": "Their parameters are not used in the forward pass (an unused branch or head), or are used "
            "on detached tensors. The optimizer still keeps state for them; DistributedDataParallel needs "
            "find_unused_parameters=True.",
            "instruction": "Remove the unused modules, or freeze them (requires_grad=False) if that is intended.",
        },
        "val_collapse": {
            "title": "Validation collapses while training goes on",
            "evidence_dice": "validation Dice fell from its best {best:.2f} (epoch {best_epoch}) to {now:.2f}, more "
            "than {drop:g} below it for the last {epochs} epochs",
            "evidence_background": "at epoch {epoch} training Dice is {train:.2f} but validation Dice {val:.3f}: "
            "validation predicts (almost) all background",
            "evidence_loss": "validation loss rose from its best {best:.4g} (epoch {best_epoch}) to {now:.4g} over the "
            "last {epochs} epochs while training loss kept falling ({train:.4g})",
            "cause": "The model fits the training images but stops generalising (memorising a small data set), or "
            "evaluation differs from training (BatchNorm statistics from tiny batches, different preprocessing, "
            "model.eval() switching behaviour).",
            "instruction": "Keep the best checkpoint (epoch {best_epoch}); stop here or regularise (augmentation, a "
            "smaller model, weight decay); if validation predicts all background, compare train- and eval-mode "
            "outputs on the same batch.",
        },
        "links": {
            "likely_cause": " Likely cause in this run: {title}.",
        },
        "model_too_large": {
            "title": "Model may be too large for the data",
            "evidence": "{params} parameters for {images} training images (< {min_images}); {gap}",
            "gap_loss": "validation loss {val:.4g} vs training {train:.4g} (gap {gap:.3g} >= {gap_max:g})",
            "gap_dice": "training Dice {train:.2f} vs validation {val:.2f} (gap {gap:.2f} >= {gap_max:g})",
            "gap_none": "no train/validation gap measured yet",
            "cause": "A rule of thumb from seed 000: with fewer than {min_images} images a model this large "
            "memorises the training set instead of learning the structure (seed: 31M-parameter "
            "UNet_Transformer).",
            "instruction": "Use a smaller model for < {min_images} images (UNet instead of UNet_Transformer, "
            "or a smaller base width) and restart.",
        },
    },
    "zh": {
        "nonfinite": {
            "title": "Loss 或梯度出现 NaN/Inf",
            "evidence": "第 {step} 步 {what} 为非有限值（最近 {window} 步中有 {count} 步）",
            "cause": "训练已发散：更新步长过大（学习率过高、未做梯度裁剪）或数值错误（log(0)、除零、fp16 "
            "溢出）。被 NaN 更新过的权重已经无法使用。",
            "instruction": "立即暂停，降低学习率或开启梯度裁剪，从最近一个正常的检查点恢复。",
            "cause_fp16": "本次训练使用 float16（GradScaler）：此时损失非有限值多半是 float16 溢出（激活或损失超过 "
            "65504），而不是学习率问题。",
            "instruction_fp16": "立即暂停；GPU 支持时改用 bfloat16，或在 autocast 之外用 float32 计算损失，然后从"
            "最近一个正常的检查点恢复。",
        },
        "missing_sigmoid": {
            "title": "损失函数期望概率，但输出超出 [0, 1]",
            "evidence": "最近 {window} 步送入 {loss} 损失的输出范围为 [{lo:.4g}, {hi:.4g}]",
            "evidence_frac": "最近 {window} 步送入 {loss} 损失的输出范围为 [{lo:.4g}, {hi:.4g}]，其中 "
            "{frac:.0%} 在 [0, 1] 之外",
            "cause": "模型最后一层缺少 Sigmoid 激活函数，{loss} 损失把任意实数与 [0, 1] 的目标比较：损失虚高、"
            "梯度方向错误（种子 002：输出 [-8.489, 1.476]，MSE 2.39）。",
            "instruction": "在最后一层之后添加 nn.Sigmoid()（或改用接收 logits 的损失，如 "
            "BCEWithLogits），然后重新训练。",
        },
        "gradient_explosion": {
            "title": "梯度爆炸",
            "evidence": "第 {step} 步有 {count} 个参数的梯度范数 > {bound:g}（最大 {max:.3g}）；最近 {window} "
            "步中有 {steps} 步超限",
            "evidence_nocount": "第 {step} 步最大参数梯度范数 {max:.3g} > {bound:g}；最近 {window} 步中有 "
            "{steps} 步超限",
            "cause": "梯度爆炸是症状：有东西让梯度变得巨大，例如输出超出损失期望的范围（缺少 sigmoid）、输入未"
            "归一化（0-255）或学习率过高（种子 002：无 sigmoid、lr 1e-3、裁剪 5.0 时 16 个参数梯度 > 10，最大 "
            "32.3）。梯度裁剪和降低 lr 能压住它，修正原因才能根除。",
            "instruction": "梯度裁剪设为 {clip:g}，学习率除以 {divisor:g}。",
            "instruction_clipped": "梯度裁剪已是 {clip:g}；学习率除以 {divisor:g}。",
        },
        "vanishing_gradients": {
            "title": "梯度消失",
            "evidence": "{name} 梯度范数比 {ratio}（第一个权重层 {first} {first_norm:.3g}，最后一个 {last} "
            "{last_norm:.3g}；取最近 {window} 步的中位数）",
            "evidence_earlier": "，之前同样步数内为 {ratio}",
            "evidence_floor": "{layer} 梯度范数 {norm:.2g} < {floor:g}",
            "cause": "梯度在传回输入的路上衰减了几个数量级（sigmoid/tanh 等饱和激活、缺少归一化或跳跃连接），"
            "前面的层学不到东西。",
            "instruction": "修改模型架构或激活函数（ReLU 类激活、BatchNorm、残差/跳跃连接），然后重新训练。",
        },
        "masks_not_binary": {
            "title": "掩码不是二值图像",
            "evidence": "掩码包含 {count} 个唯一值（期望 {expected} 个），例如 {values}",
            "cause": "掩码是灰度图（抗锯齿，或用插值缩放过），目标成了软标签，BCE/Dice 在拟合模糊的边缘。",
            "instruction": "加载前先二值化掩码（>127 设为 255，否则为 0），然后重新训练。",
        },
        "class_imbalance": {
            "title": "严重类别不平衡",
            "evidence": "平均前景比例仅 {ratio:.2%}（< {min:.0%}）；当前 pos_weight 为 {pos_weight:g}",
            "cause": "背景像素占绝大多数，BCE 只要处处预测背景就能变小。",
            "instruction": "在 BCE 中给前景加权：pos_weight = 背景/前景 = {suggested:.3g}。",
            "instruction_empty": "掩码中完全没有前景：检查掩码文件及其与图像的配对。",
        },
        "no_better_than_constant": {
            "title": "不比常数预测更好",
            "evidence": "最近 {window} 步 {what} 均值为 {loss:.4g} ±{se:.2g}，而最优常数预测（{how}）为 {baseline:.4g}",
            "how_constant": "处处预测 {constant:.3g}",
            "how_mean": "预测每个目标通道的均值",
            "cause": "模型没有学到常数输出以外的任何东西：可能输入与标签没有配对、输出激活与损失不匹配，或学习率"
            "不合适。",
            "instruction": "对照预测预览与其标签；检查数据配对与输出激活。",
        },
        "plateau": {
            "title": "Loss 进入平台期",
            "title_converged": "Loss 已趋平（收敛）",
            "evidence_epochs": "过去 {n} 个 epoch loss [{values}]：方差 {variance:.2g} < {variance_max:g}，且 "
            "{n}-epoch 改进 {improvement:.2g} < {improvement_max:g}（趋势 {trend:.2g}，噪声 ±{noise:.2g}）",
            "evidence_steps": "第 {first}-{last} 步分 {n} 段、每段 {block} 步：段均值方差 {variance:.2g} < "
            "{variance_max:g}，且改进 {improvement:.2g} < {improvement_max:g}（趋势 {trend:.2g}，噪声 "
            "±{noise:.2g}）",
            "cause": "Loss 停在 {level:.4g} 不再下降：超参或数据把它卡住了（参见其他诊断和诊断矩阵）。",
            "cause_converged": "Loss 在 {level:.4g} 趋平，而{why}：这更像是收敛，而不是停滞。",
            "why_dice": "验证 Dice 为 {dice:.2f}",
            "why_baseline": "它远低于常数预测基准 {baseline:.4g}",
            "instruction": "按种子 000 的优先级：先检查数据，再调学习率，最后调 Loss 权重。",
            "instruction_converged": "可降低学习率继续微调，或在此停止。",
        },
        "loss_weights_unbalanced": {
            "title": "Loss 权重可能不当（试试 0.5/0.5）",
            "evidence": "Dice 项 {dice:.3f} > {dice_max:g}，而 BCE {bce:.3f} <= {bce_max:g}；loss 处于平台期；"
            "验证 Dice {val_dice:.2f} < {val_dice_max:g}；梯度正常；当前权重 BCE {bce_weight:g} / Dice "
            "{dice_weight:g}",
            "cause": "种子 000 的经验法则：Dice 权重为 {dice_weight:g} 时，模型可能卡在形状约束上，而像素分类已经"
            "完成。细小结构即使训练良好 Dice 项也偏高，所以这只是一次尝试，不是定论。",
            "instruction": "试试 BCE {bce_to:g} / Dice {dice_to:g}，观察 loss 和验证 Dice 是否变化；没有改善就"
            "撤销。",
        },
        "lr_too_small": {
            "title": "学习率可能过小（试试 {new:.2g}）",
            "evidence": "loss {now:.4g} 仍为起始值 {start:.4g} 的 {fraction:.0%}，最近 {window} 步只下降了 "
            "{decline:.1%}；{update}",
            "update_ratio": "参数更新幅度 |dw|/|w| {ratio:.2g} < {ratio_max:g}；lr {lr:.2g}",
            "update_lr": "lr {lr:.2g} <= {lr_small:g}（未测量更新幅度）",
            "cause": "种子 000 的经验法则：loss 先小幅下降、随后在高位几乎成平线、参数更新又很小，通常说明学习率"
            "太小。",
            "instruction": "试试学习率 {lr:.2g} -> {new:.2g}（x{factor:.3g}）：{sized}观察 loss；若变得不稳定就撤销。",
            "sized": "这个学习率能让测得的更新幅度回到健康的 ~{target:g}。",
            "sized_seed": "种子 000 的 x{factor:g}（未测量更新幅度）。",
        },
        "bce_not_settled": {
            "title": "训练后期 BCE 可能仍未稳定",
            "evidence": "{when}时，最近 {window} 步 BCE 均值 {bce:.3f} ±{se:.2g} > {bce_max:.3g}",
            "when_progress": "训练进度 {progress:.0%} ",
            "when_epoch": "第 {epoch} 个 epoch ",
            "threshold_weighted": "（0.3 的阈值已按 pos_weight {pos_weight:g} 换算）",
            "cause": "种子 000 的经验法则：像素级分类还不稳定，需要更多 epoch 或更大的学习率。",
            "instruction": "现在试试提高学习率（x{factor:g}：{lr:.2g} -> {new:.2g}），或增加训练 epoch。",
            "instruction_no_lr": "增加训练 epoch，或提高学习率。",
        },
        "squashed_outputs": {
            "title": "输出被压缩在狭窄区间：Sigmoid 被应用了两次",
            "evidence": "最近 {window} 步送入损失的 logits 始终在 [{raw_lo:.3g}, {raw_hi:.3g}]（位于 [0, 1] 之内），"
            "与掩码比较的值始终在 [{act_lo:.3g}, {act_hi:.3g}]（概率再取 sigmoid 不会超出 [0.5, {top:.3f}]）",
            "cause": "模型最后已经有 Sigmoid，损失（BCEWithLogits，或内部做 sigmoid 的 Dice）又做了一次：预测永远"
            "不会低于 0.5 或高于 0.73，背景永远预测不出来，loss 无法下降。",
            "instruction": "去掉模型最后的 Sigmoid（损失会自己做），或改用接收概率的损失（BCELoss），然后重新训练。",
        },
        "bce_at_ln2": {
            "title": "logits 从不小于 0（BCE 停在 ln 2 = 0.693 附近）",
            "evidence": "最近 {window} 步最小 logit 为 {raw_lo:.3g}（最大 {raw_hi:.3g}）：没有任何像素被预测为概率"
            "低于 0.5；{what} {bce:.4f}（ln 2 = {ln2:.4f}）",
            "cause": "最后一层之后有 ReLU（或其他非负激活），而损失会做 sigmoid（BCEWithLogits）：背景需要负的 "
            "logits，ReLU 把它们截成 0，于是每个背景像素都付出 ln 2 的损失。",
            "instruction": "去掉最后的 ReLU，让输出头直接返回 logits，然后重新训练。",
        },
        "constant_loss": {
            "title": "某个损失项恒定或恰好为 0：它不产生梯度",
            "title_output": "模型输出处处相同且没有梯度",
            "evidence_zero": "最近 {window} 步中 {what} 每一步都恰好为 0",
            "evidence_constant": "最近 {window} 步中 {what} 每一步都是 {value:.6g}",
            "evidence_output": "最近 {window} 步所有输出值都是 {value:.6g}（最小 = 最大），梯度范数为 0",
            "cause": "不变的损失项对学习毫无贡献：常见于单通道上的交叉熵或 softmax（恒为 0 或 1）、乘了 0 的项，"
            "或在 detach 过的值上计算的项。",
            "cause_output": "输出与权重无关：单通道 softmax 恒为 1（单类别请用 sigmoid），或输出被 detach/覆盖。",
            "instruction": "单个前景类别请用 sigmoid（BCEWithLogits），不要对单通道做 softmax/交叉熵；或输出 2 个"
            "通道再做 softmax；确认损失项是在模型输出上计算的；然后重新训练。",
        },
        "amp_overflow": {
            "title": "混合精度（float16）溢出：损失缩放器在跳过更新",
            "evidence": "最近 {rows} 次优化步中 GradScaler 因梯度溢出 float16 跳过了 {skipped} 次（{fraction:.0%}）；"
            "当前缩放系数 {scale:.3g}",
            "cause": "float16 最大只能表示 65504：激活、损失或放大后的梯度溢出，缩放器不断跳过更新（偶尔跳过是"
            "正常的，大部分都跳过就不正常）。",
            "instruction": "GPU 支持时改用 bfloat16（不需要缩放器），在 autocast 之外用 float32 计算损失，或降低"
            "初始缩放（GradScaler(init_scale=1024)）；对输入做归一化。",
        },
        "lr_too_high": {
            "title": "学习率可能过大：loss 来回振荡而不下降",
            "evidence": "lr {lr:.2g} 时参数更新幅度 |dw|/|w| {ratio:.2g} > {ratio_max:g}；最近 {window} 步 loss "
            "没有下降趋势（趋势 {trend:.2g}，噪声 ±{noise:.2g}），波动达其水平的 {swing:.0%}",
            "cause": "经验法则：步子这么大会越过极小值而不是下降进去；loss 在高位来回跳动但不爆炸。",
            "instruction": "试试 lr {new:.2g}（原为 {lr:.2g}）：这个学习率能让测得的更新幅度回到健康的 ~{target:g}。",
            "title_dead": "开始时学习率过大：网络已“死亡”，不再学习",
            "evidence_dead": "前 {first} 步在 lr {early_lr:.2g} 下每步更新幅度 |dw|/|w| 达 {early:.2g}（> {ratio_max:g}）；"
            "此后梯度范数为 {grad:.2g}，更新幅度降到 {now:.2g}；最近 {window} 步 loss 没有变化",
            "cause_dead": "最初几步的步子太大，把神经元推到了梯度无法通过的状态（sigmoid 饱和、ReLU 死亡）："
            "无论学习率多大，都不再有梯度到达权重。",
            "instruction_dead": "用更小的学习率重新开始，约 {new:.2g}（能让最初的更新幅度保持在健康的 ~{target:g} 附近），"
            "或加入预热（warm-up）；现在降低学习率已无法让网络恢复。",
        },
        "unused_parameters": {
            "title": "有些层从未收到梯度",
            "evidence": "{count} 个层在最近的每一步都没有梯度：{layers}",
            "cause": "它们的参数没有参与前向计算（未使用的分支或输出头），或参与的是 detach 过的张量。优化器"
            "仍为它们保存状态；DistributedDataParallel 需要 find_unused_parameters=True。",
            "instruction": "删除未使用的模块，或在有意为之时冻结它们（requires_grad=False）。",
        },
        "val_collapse": {
            "title": "训练继续，验证却在崩溃",
            "evidence_dice": "验证 Dice 从最佳 {best:.2f}（第 {best_epoch} 个 epoch）降到 {now:.2f}，最近 {epochs} "
            "个 epoch 都比最佳低 {drop:g} 以上",
            "evidence_background": "第 {epoch} 个 epoch 训练 Dice 为 {train:.2f}，验证 Dice 只有 {val:.3f}：验证时"
            "（几乎）全部预测为背景",
            "evidence_loss": "最近 {epochs} 个 epoch 验证 loss 从最佳 {best:.4g}（第 {best_epoch} 个 epoch）升到 "
            "{now:.4g}，而训练 loss 仍在下降（{train:.4g}）",
            "cause": "模型拟合了训练图像却不再泛化（在小数据集上死记硬背），或评估与训练不一致（小批量下的 "
            "BatchNorm 统计、不同的预处理、model.eval() 改变了行为）。",
            "instruction": "保留最佳检查点（第 {best_epoch} 个 epoch）；在此停止或加正则（数据增强、更小的模型、"
            "权重衰减）；若验证全部预测为背景，在同一批数据上比较 train 与 eval 模式的输出。",
        },
        "links": {
            "likely_cause": "本次运行中可能的原因：{title}。",
        },
        "model_too_large": {
            "title": "模型可能过大",
            "evidence": "{params} 个参数，仅 {images} 张训练图像（< {min_images}）；{gap}",
            "gap_loss": "验证 loss {val:.4g}，训练 loss {train:.4g}（差距 {gap:.3g} >= {gap_max:g}）",
            "gap_dice": "训练 Dice {train:.2f}，验证 Dice {val:.2f}（差距 {gap:.2f} >= {gap_max:g}）",
            "gap_none": "尚未测到训练/验证差距",
            "cause": "种子 000 的经验法则：数据集少于 {min_images} 张图像时，这么大的模型会记住训练集而不是学会"
            "结构（种子：3100 万参数的 UNet_Transformer）。",
            "instruction": "数据集少于 {min_images} 张时改用更小的模型（UNet 而不是 UNet_Transformer，或更小的 "
            "base width），然后重新训练。",
        },
    },
}

# Words that fill a placeholder and so need a translation of their own.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "slight": "slight",
        "moderate": "moderate",
        "strong": "strong",
        "shallow/deep": "shallow/deep",
        "deep/shallow": "deep/shallow",
        "loss": "loss",
        "; ": "; ",
    },
    "zh": {
        "slight": "轻微",
        "moderate": "中度",
        "strong": "严重",
        "shallow/deep": "浅层/深层",
        "deep/shallow": "深层/浅层",
        "loss": "loss",
        "; ": "；",
    },
}


def say(lang: str, code: str, key: str, **values: object) -> str:
    """One sentence of rule ``code`` in ``lang``, with its placeholders filled."""
    return TEXTS[check_lang(lang)][code][key].format(**values)


def word(lang: str, name: str) -> str:
    """A placeholder word (a strength, a direction) in ``lang``."""
    return WORDS[check_lang(lang)][name]
