"""The converter of the authors' released prompt checkpoints (``{"prompt_learner": {...}}``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from anomalib_3d.data.errors import CorruptFileError
from anomalib_3d_plugins.pointad.checkpoint import load_official_prompts
from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.prompts import PromptLearner

WIDTH = 64  # the tiny ViT's text width (768 for ViT-L)


@pytest.fixture(scope="module")
def backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("pointad-tiny-vit", None)


def official_state(width: int = WIDTH, prompt_length: int = 12, deep: int = 2, deep_length: int = 4) -> dict:
    """A state dict in the layout of the authors' AnomalyCLIP_PromptLearner, distinct values everywhere."""
    gen = torch.Generator().manual_seed(11)
    state = {
        "ctx_pos": torch.randn(1, 1, prompt_length, width, generator=gen),
        "ctx_neg": torch.randn(1, 1, prompt_length, width, generator=gen),
        "token_prefix_pos": torch.randn(1, 1, 1, width, generator=gen),
        "token_suffix_pos": torch.randn(1, 1, 77 - 1 - prompt_length, width, generator=gen),
        "token_prefix_neg": torch.randn(1, 1, 1, width, generator=gen),
        "token_suffix_neg": torch.randn(1, 1, 77 - 1 - prompt_length, width, generator=gen),
        "tokenized_prompts": torch.zeros(2, 77, dtype=torch.long),
    }
    for i in range(deep):
        state[f"compound_prompts_text.{i}"] = torch.randn(deep_length, width, generator=gen)
        state[f"compound_prompt_projections.{i}.weight"] = torch.randn(4, width, generator=gen)
    return {"prompt_learner": state}


def test_values_land_in_the_right_parameters(backbone: FrozenCLIP, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    learner = PromptLearner(backbone, deep_prompt_depth=3)  # 2 deep prompt sets (depth 9 -> 8 for ViT-L)
    checkpoint = official_state()
    path = tmp_path / "epoch_15.pth"
    torch.save(checkpoint, path)
    with caplog.at_level(logging.INFO):
        report = load_official_prompts(learner, path)
    state = checkpoint["prompt_learner"]
    assert torch.equal(learner.normal_context, state["ctx_pos"][0, 0])  # ctx_pos: "[V..] object."
    assert torch.equal(learner.abnormal_context, state["ctx_neg"][0, 0])  # ctx_neg: "[W..] damaged object."
    assert torch.equal(learner.deep[0], state["compound_prompts_text.0"])
    assert torch.equal(learner.deep[1], state["compound_prompts_text.1"])
    assert report["dropped"] == sorted(k for k in state if k.startswith(("token_", "tokenized", "compound_prompt_proj")))
    assert "dropped 7 key(s)" in caplog.text and "token_prefix_pos" in caplog.text


def test_text_features_change_to_the_loaded_prompts(backbone: FrozenCLIP) -> None:
    learner = PromptLearner(backbone, deep_prompt_depth=3)
    before = learner(backbone)
    load_official_prompts(learner, official_state())
    other = PromptLearner(backbone, deep_prompt_depth=3)
    load_official_prompts(other, official_state())
    assert not torch.allclose(before, learner(backbone))
    torch.testing.assert_close(learner(backbone), other(backbone))  # fully determined by the file


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 32}, r"'ctx_pos' has shape \(1, 1, 12, 32\).*prompt_length=12, text width=64"),
        ({"prompt_length": 8}, r"'ctx_pos' has shape \(1, 1, 8, 64\)"),
        ({"deep": 3}, r"3 deep text prompts.*this model 2.*deep_prompt_depth=4"),
        ({"deep_length": 6}, r"'compound_prompts_text.0' has shape \(6, 64\).*deep_prompt_length=6"),
    ],
)
def test_wrong_shapes_raise_a_clear_error(backbone: FrozenCLIP, kwargs: dict, message: str) -> None:
    learner = PromptLearner(backbone, deep_prompt_depth=3)
    before = learner.normal_context.detach().clone()
    with pytest.raises(CorruptFileError, match=message):
        load_official_prompts(learner, official_state(**kwargs))
    assert torch.equal(learner.normal_context, before)  # nothing half-loaded


def test_not_a_prompt_checkpoint(backbone: FrozenCLIP, tmp_path: Path) -> None:
    learner = PromptLearner(backbone, deep_prompt_depth=3)
    with pytest.raises(CorruptFileError, match="not found"):
        load_official_prompts(learner, tmp_path / "missing.pth")
    with pytest.raises(CorruptFileError, match="ctx_pos"):
        load_official_prompts(learner, {"state_dict": {}})


def test_lightning_module_loads_the_checkpoint(tmp_path: Path) -> None:
    from anomalib_3d_plugins.pointad.lightning_model import PointAD

    path = tmp_path / "epoch_15.pth"
    torch.save(official_state(deep=2), path)
    module = PointAD(backbone="pointad-tiny-vit", pretrained=None, deep_prompt_depth=3, prompt_checkpoint=str(path),
                     evaluator=False, visualizer=False)
    expected = torch.load(path)["prompt_learner"]["ctx_neg"][0, 0]
    assert torch.equal(module.model.prompt_learner.abnormal_context, expected)
