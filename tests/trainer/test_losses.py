"""Losses: components against hand computations, live weight and pos_weight changes."""

import math

import pytest
import torch

from octa_tui.trainer.losses import DiceBCELoss, HeatmapMSELoss, LossOutput, make_loss


def _hand_bce(logits, targets, pos_weight=1.0):
    total = 0.0
    for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1.0 / (1.0 + math.exp(-x))
        total += -(pos_weight * t * math.log(p) + (1.0 - t) * math.log(1.0 - p))
    return total / logits.numel()


def _hand_dice_loss(logits, targets, smooth=1.0):
    p = [1.0 / (1.0 + math.exp(-x)) for x in logits.flatten().tolist()]
    t = targets.flatten().tolist()
    inter = sum(a * b for a, b in zip(p, t))
    return 1.0 - (2.0 * inter + smooth) / (sum(p) + sum(t) + smooth)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 4, 4) * 2.0
    targets = (torch.rand(2, 1, 4, 4) > 0.7).float()
    return logits, targets


def test_dice_bce_components_match_a_hand_computation(batch):
    # GIVEN the seed's default weights
    logits, targets = batch
    loss = DiceBCELoss()
    # WHEN evaluated
    out = loss(logits, targets)
    # THEN bce and dice are the textbook values and total = 0.3 bce + 0.7 dice
    assert isinstance(out, LossOutput)
    bce, dice = _hand_bce(logits, targets), _hand_dice_loss(logits, targets)
    assert out.components["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out.components["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out.total.item() == pytest.approx(0.3 * bce + 0.7 * dice, rel=1e-5)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in out.components.values())


def test_changing_weights_takes_effect_on_the_next_call_without_rebuilding(batch):
    logits, targets = batch
    loss = DiceBCELoss()
    before = loss(logits, targets)
    # WHEN the control layer assigns new weights between steps
    loss.bce_weight, loss.dice_weight = 0.5, 0.5
    after = loss(logits, targets)
    # THEN the same components are combined with the new weights
    expected = 0.5 * before.components["bce"] + 0.5 * before.components["dice"]
    assert after.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert after.total.item() != pytest.approx(before.total.item(), rel=1e-3)


def test_pos_weight_scales_the_foreground_term_of_bce(batch):
    logits, targets = batch
    loss = DiceBCELoss()
    plain = loss(logits, targets).components["bce"].item()
    # WHEN pos_weight is set (as set_pos_weight would) and then cleared
    loss.pos_weight = 9.0
    weighted = loss(logits, targets).components["bce"].item()
    loss.pos_weight = None
    cleared = loss(logits, targets).components["bce"].item()
    # THEN BCE equals the hand computation with foreground weighted 9x, and returns when cleared
    assert weighted == pytest.approx(_hand_bce(logits, targets, 9.0), rel=1e-5)
    assert weighted > plain
    assert cleared == pytest.approx(plain, rel=1e-6)


def test_pos_weight_is_irrelevant_without_foreground():
    logits = torch.randn(1, 1, 8, 8)
    targets = torch.zeros(1, 1, 8, 8)
    assert DiceBCELoss(pos_weight=50.0)(logits, targets).components["bce"].item() == pytest.approx(
        DiceBCELoss()(logits, targets).components["bce"].item(), rel=1e-6
    )


def test_bce_only_loss_still_reports_dice(batch):
    logits, targets = batch
    out = make_loss("bce")(logits, targets)
    assert out.total.item() == pytest.approx(out.components["bce"].item(), rel=1e-6)
    assert out.components["dice"].item() > 0.0


def test_dice_bce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        DiceBCELoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))


def test_heatmap_mse_is_region_plus_affinity():
    # GIVEN predictions of 0.5 everywhere against targets region=1, affinity=0
    predictions = torch.full((1, 2, 4, 4), 0.5)
    targets = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])[None]
    # WHEN evaluated
    out = HeatmapMSELoss()(predictions, targets)
    # THEN each component is 0.25 and the total their sum
    assert out.components["region"].item() == pytest.approx(0.25)
    assert out.components["affinity"].item() == pytest.approx(0.25)
    assert out.total.item() == pytest.approx(0.5)


def test_flags_tell_the_probe_how_to_read_outputs():
    assert DiceBCELoss.input_is_logits and not HeatmapMSELoss.input_is_logits
    assert HeatmapMSELoss.loss_expects_probabilities


def test_losses_back_propagate(batch):
    logits, targets = batch
    logits.requires_grad_(True)
    DiceBCELoss(pos_weight=3.0)(logits, targets).total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_unknown_loss_name_is_refused():
    with pytest.raises(ValueError, match="dice_bce"):
        make_loss("focal")
