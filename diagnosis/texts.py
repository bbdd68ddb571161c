"""Every sentence a verdict can say, in English and in Chinese.

The seeds' users write their notes in Chinese, so each rule's title, evidence, cause and
instruction exists in both languages with the same placeholders. Measured facts are stated
("Masks are not binary"); rules of thumb are worded as such ("may be", "try", "可能", "试试").
"""

from __future__ import annotations

from .verdict import check_lang

TEXTS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "nonfinite": {
            "title": "Loss or gradients are NaN/Inf",
            "evidence": "{what} not finite at step {step} ({count} of the last {window} steps)",
            "cause": "Training diverged: an update too large (learning rate too high, no clipping) or a "
            "numerical fault (log(0), division by zero, fp16 overflow). Weights updated from a NaN are lost.",
            "instruction": "Pause now, lower the learning rate or enable clipping, and resume from the last "
            "good checkpoint.",
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
            "cause": "Updates are too large for this loss surface: the learning rate is too high and "
            "clipping too loose (seed 002: lr 1e-3 and clip 5.0 gave 16 parameters over 10, max 32.3).",
            "instruction": "Clip gradients at {clip:g} and divide the learning rate by {divisor:g}.",
            "instruction_clipped": "Clipping is already at {clip:g}; divide the learning rate by {divisor:g}.",
        },
        "vanishing_gradients": {
            "title": "Vanishing gradients ({strength})",
            "evidence_floor": "{layer} gradient norm {norm:.2g} < {floor:g}",
            "evidence_ratio": "{direction} gradient norm ratio {ratio:.1f}x ({shallow} {shallow_norm:.3g} vs "
            "{deep} {deep_norm:.3g}; > {slight:g}x is slight)",
            "evidence_window": "medians of the last {window} steps",
            "cause": "Gradients shrink as they pass through the network (saturating activations such as "
            "sigmoid/tanh, no normalisation, no skip connections), so the weakest layers barely learn.",
            "cause_slight": "A 10x-100x spread between shallow and deep layers is common and often harmless "
            "(seed 000 calls it slight); it matters only if the loss also stalls.",
            "cause_small_layer": "An inner layer sits below the floor while the network's ends are balanced: "
            "small layers (normalisation, biases) often do, and Adam still updates them normally. It "
            "matters only if the loss also stalls.",
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
            "evidence": "{what} {loss:.4g} over the last {window} steps vs {baseline:.4g} for the best "
            "constant prediction ({how})",
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
            "title": "Learning rate may be too small (try x{factor:g})",
            "evidence": "loss {now:.4g} is still {fraction:.0%} of its start {start:.4g} and fell {decline:.1%} "
            "over the last {window} steps; {update}",
            "update_ratio": "update size |dw|/|w| {ratio:.2g} < {ratio_max:g}; lr {lr:.2g}",
            "update_lr": "lr {lr:.2g} <= {lr_small:g} (update size not measured)",
            "cause": "A rule of thumb from seed 000: a loss that falls a little and then crawls at a high "
            "level, with tiny updates, usually means the steps are too small.",
            "instruction": "Try lr x{factor:g} ({lr:.2g} -> {new:.2g}) and watch the loss; undo if it turns "
            "unstable.",
        },
        "bce_not_settled": {
            "title": "BCE may not have settled late in training",
            "evidence": "BCE {bce:.3f} > {bce_max:.3g} over the last {window} steps at {when}",
            "when_progress": "{progress:.0%} of the planned steps",
            "when_epoch": "epoch {epoch}",
            "threshold_weighted": " (the 0.3 rule scaled for pos_weight {pos_weight:g})",
            "cause": "A rule of thumb from seed 000: pixel-level classification is still unstable; the run "
            "needs more epochs or larger steps.",
            "instruction": "Try a higher learning rate (x{factor:g}: {lr:.2g} -> {new:.2g}) now, or train for "
            "more epochs.",
            "instruction_no_lr": "Train for more epochs, or raise the learning rate.",
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
            "cause": "更新步长相对损失曲面过大：学习率过高、梯度裁剪过松（种子 002：lr 1e-3、裁剪 5.0 时 16 "
            "个参数梯度 > 10，最大 32.3）。",
            "instruction": "梯度裁剪设为 {clip:g}，学习率除以 {divisor:g}。",
            "instruction_clipped": "梯度裁剪已是 {clip:g}；学习率除以 {divisor:g}。",
        },
        "vanishing_gradients": {
            "title": "梯度消失（{strength}）",
            "evidence_floor": "{layer} 梯度范数 {norm:.2g} < {floor:g}",
            "evidence_ratio": "{direction} 梯度范数比 {ratio:.1f}x（{shallow} {shallow_norm:.3g} 对 {deep} "
            "{deep_norm:.3g}；>{slight:g}x 为轻微消失）",
            "evidence_window": "取最近 {window} 步的中位数",
            "cause": "梯度在网络中逐层衰减（sigmoid/tanh 等饱和激活、缺少归一化或跳跃连接），最弱的层几乎学不到"
            "东西。",
            "cause_slight": "浅层与深层相差 10-100 倍很常见，通常无害（种子 000 称之为轻微消失）；只有 loss "
            "同时停滞时才需要关注。",
            "cause_small_layer": "某个中间层低于下限，但网络首尾两端的梯度是平衡的：归一化层、偏置等小层常常如此，"
            "Adam 仍会正常更新它们。只有 loss 同时停滞时才需要关注。",
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
            "evidence": "最近 {window} 步 {what} 为 {loss:.4g}，而最优常数预测（{how}）为 {baseline:.4g}",
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
            "title": "学习率可能过小（试试 x{factor:g}）",
            "evidence": "loss {now:.4g} 仍为起始值 {start:.4g} 的 {fraction:.0%}，最近 {window} 步只下降了 "
            "{decline:.1%}；{update}",
            "update_ratio": "参数更新幅度 |dw|/|w| {ratio:.2g} < {ratio_max:g}；lr {lr:.2g}",
            "update_lr": "lr {lr:.2g} <= {lr_small:g}（未测量更新幅度）",
            "cause": "种子 000 的经验法则：loss 先小幅下降、随后在高位几乎成平线、参数更新又很小，通常说明学习率"
            "太小。",
            "instruction": "试试学习率 x{factor:g}（{lr:.2g} -> {new:.2g}），观察 loss；若变得不稳定就撤销。",
        },
        "bce_not_settled": {
            "title": "训练后期 BCE 可能仍未稳定",
            "evidence": "{when}时，最近 {window} 步 BCE {bce:.3f} > {bce_max:.3g}",
            "when_progress": "训练进度 {progress:.0%} ",
            "when_epoch": "第 {epoch} 个 epoch ",
            "threshold_weighted": "（0.3 的阈值已按 pos_weight {pos_weight:g} 换算）",
            "cause": "种子 000 的经验法则：像素级分类还不稳定，需要更多 epoch 或更大的学习率。",
            "instruction": "现在试试提高学习率（x{factor:g}：{lr:.2g} -> {new:.2g}），或增加训练 epoch。",
            "instruction_no_lr": "增加训练 epoch，或提高学习率。",
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
