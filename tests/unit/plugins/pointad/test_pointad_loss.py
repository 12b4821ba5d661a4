"""Every term of PointAD's hybrid loss against values computed by hand on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from anomalib_3d_plugins.pointad.loss import (
    HybridLoss,
    HybridLossInputs,
    dice_loss,
    focal_loss,
    global_2d_loss,
    global_3d_loss,
    local_2d_loss,
    local_3d_loss,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dice_by_hand() -> None:
    pred = torch.tensor([[0.8, 0.2, 0.6]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    # 1 - (2 * (0.8 + 0.6) + 1) / (1.6 + 2 + 1)
    assert dice_loss(pred, target).item() == pytest.approx(1 - 3.8 / 4.6)
    # Two groups (rows) are averaged.
    pred2 = torch.tensor([[0.8, 0.2, 0.6], [0.0, 0.0, 0.0]])
    target2 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert dice_loss(pred2, target2).item() == pytest.approx((1 - 3.8 / 4.6 + 0.0) / 2)


def test_grouped_dice_with_mask_by_hand() -> None:
    pred = torch.tensor([0.8, 0.2, 0.6, 0.5, 0.9])
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    group = torch.tensor([0, 0, 0, 1, 1])
    valid = torch.tensor([True, True, True, True, False])
    # group 1 keeps only (0.5, 1): 1 - (2*0.5 + 1) / (0.5 + 1 + 1) = 1 - 2/2.5
    expected = ((1 - 3.8 / 4.6) + (1 - 2 / 2.5)) / 2
    assert dice_loss(pred, target, group, num_groups=2, valid=valid).item() == pytest.approx(expected)


def test_focal_by_hand() -> None:
    probs = torch.tensor([[[0.9, 0.3]], [[0.1, 0.7]]]).permute(1, 0, 2)  # (1, C=2, 2 entries)
    target = torch.tensor([[0, 1]])
    # entry 0: p_t = 0.9; entry 1: p_t = 0.7
    expected = (-(0.1**2) * math.log(0.9) - (0.3**2) * math.log(0.7)) / 2
    assert focal_loss(probs, target).item() == pytest.approx(expected)


def test_global_3d_is_ce_of_the_mean_view_probability() -> None:
    view_probs = torch.tensor([[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [0.4, 0.6]]])
    labels = torch.tensor([1, 0])
    # cloud 0: mean abnormal = 0.3 → -log 0.3; cloud 1: mean normal = 0.3 → -log 0.3
    assert global_3d_loss(view_probs, labels).item() == pytest.approx(-math.log(0.3))


def test_global_2d_is_per_view_ce() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    labels = torch.tensor([[1, 1]])
    ce0 = -math.log(math.exp(0) / (math.exp(2) + math.exp(0)))
    ce1 = -math.log(math.exp(1) / (math.exp(0) + math.exp(1)))
    assert global_2d_loss(logits, labels).item() == pytest.approx((ce0 + ce1) / 2)


def test_local_3d_by_hand() -> None:
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])  # [S_n, S_a] per point
    labels = torch.tensor([1, 0, 0])
    batch = torch.tensor([0, 0, 1])
    # cloud 0: Dice(S_a=[.8,.4], y=[1,0]) = 1 - (1.6+1)/(1.2+1+1); Dice(S_n=[.2,.6], 1-y=[0,1]) = 1 - (1.2+1)/(0.8+1+1)
    # cloud 1: Dice(S_a=[.1], [0]) = 1 - 1/1.1; Dice(S_n=[.9], [1]) = 1 - (1.8+1)/(0.9+1+1)
    abnormal = ((1 - 2.6 / 3.2) + (1 - 1 / 1.1)) / 2
    normal = ((1 - 2.2 / 2.8) + (1 - 2.8 / 2.9)) / 2
    assert local_3d_loss(probs, labels, batch, 2).item() == pytest.approx(abnormal + normal)


def test_local_2d_by_hand() -> None:
    s_a = torch.tensor([[0.7, 0.2], [0.4, 0.1]])
    probs = torch.stack([1 - s_a, s_a]).view(1, 1, 2, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    p_true = [0.7, 0.8, 0.4, 0.9]
    focal = sum(-((1 - p) ** 2) * math.log(p) for p in p_true) / 4
    dice_a = 1 - (2 * (0.7 + 0.4) + 1) / (1.4 + 2 + 1)
    dice_n = 1 - (2 * (0.8 + 0.9) + 1) / (2.6 + 2 + 1)
    assert local_2d_loss(probs, mask).item() == pytest.approx(focal + dice_a + dice_n)


def _inputs() -> HybridLossInputs:
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    s_a = torch.tensor([[0.7, 0.2], [0.4, 0.1]])
    pixel = torch.stack([1 - s_a, s_a]).view(1, 1, 2, 2, 2).expand(2, 1, 2, 2, 2)
    return HybridLossInputs(
        view_logits=torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]]),
        labels=torch.tensor([1, 0]),
        view_labels=torch.tensor([[1], [0]]),
        point_probs=[probs, probs.flip(1)],
        point_labels=torch.tensor([1, 0, 0]),
        batch=torch.tensor([0, 0, 1]),
        pixel_probs=[pixel],
        masks=torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2).expand(2, 1, 2, 2),
    )


def test_hybrid_loss_is_the_sum_of_enabled_terms_and_layers_are_averaged() -> None:
    inputs = _inputs()
    terms = HybridLoss()(inputs)
    assert set(terms) == {"global_3d", "global_2d", "local_3d", "local_2d", "loss"}
    assert terms["loss"].item() == pytest.approx(sum(terms[k].item() for k in HybridLoss.TERMS))
    layers = [local_3d_loss(p, inputs.point_labels, inputs.batch, 2) for p in inputs.point_probs]
    assert terms["local_3d"].item() == pytest.approx(sum(x.item() for x in layers) / 2)
    assert terms["global_3d"].item() == pytest.approx(global_3d_loss(inputs.view_logits.softmax(-1), inputs.labels).item())


@pytest.mark.parametrize("term", HybridLoss.TERMS)
def test_each_term_can_be_switched_off(term: str) -> None:
    flags = {name: name != term for name in HybridLoss.TERMS}
    terms = HybridLoss(**flags)(_inputs())
    assert term not in terms
    assert terms["loss"].item() == pytest.approx(sum(terms[k].item() for k in HybridLoss.TERMS if k != term))


def test_all_terms_off_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        HybridLoss(False, False, False, False)


def test_missing_inputs_are_named() -> None:
    inputs = _inputs()
    inputs.masks = None
    with pytest.raises(ValueError, match="masks"):
        HybridLoss()(inputs)
