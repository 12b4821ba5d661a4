"""Odd-One-Out backbones: ResNet-50 + FPN encoder and DINOv2 ViT-S/14 teacher (random init, offline).

Weights files are written here from randomly initialised networks, in torchvision's and in the
official DINOv2 key format, and must load back to identical outputs; an empty torch hub cache must
raise MissingWeightsError naming the URL and the destination; the PCA is checked against numpy's SVD.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib_3d_plugins.odd_one_out.backbones import (
    DINOV2_VITS14_URL,
    DinoV2Teacher,
    ResNetFPNEncoder,
    build_encoder,
    build_teacher,
)
from anomalib_3d_plugins.odd_one_out.torch_model import SmallEncoder2D
from torch import nn

from anomalib_3d.data.errors import CorruptFileError, MissingWeightsError


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache; returns its ``checkpoints`` folder (not created)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def dino_source() -> DinoV2Teacher:
    torch.manual_seed(0)
    return DinoV2Teacher(weights=None)


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _official_dinov2_state(teacher: DinoV2Teacher, chunks: int = 0) -> dict[str, torch.Tensor]:
    """The facebookresearch ``dinov2_vits14_pretrain.pth`` layout of ``teacher``'s weights.

    For ViT-S/14 the official names are timm's (``blocks.i.attn.qkv``, ``blocks.i.ls1.gamma``,
    ``blocks.i.mlp.fc1``, ``pos_embed`` with the class token, 37 x 37 grid) plus ``mask_token``;
    ``chunks > 0`` writes the training layout ``blocks.<chunk>.<i>.`` (``block_chunks``).
    """
    official = {}
    per_chunk = math.ceil(12 / chunks) if chunks else 0
    for timm_name, value in teacher.vit.state_dict().items():
        name = timm_name
        if chunks and name.startswith("blocks."):
            index = int(name.split(".")[1])
            name = f"blocks.{index // per_chunk}.{name[len('blocks.'):]}"
        official[name] = value.clone()
    official["mask_token"] = torch.zeros(1, 384)
    assert official["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    return official


# ----------------------------------------------------------------------------------------------
# ResNet-50 + FPN


@pytest.mark.parametrize(("height", "width"), [(64, 64), (66, 50)])
def test_resnet_fpn_shape_matches_small_encoder(height: int, width: int) -> None:
    torch.manual_seed(0)
    encoder = ResNetFPNEncoder(out_channels=8, weights=None, norm="group")
    images = _images(2, height, width)
    out = encoder(images)
    reference = SmallEncoder2D(8)(images)
    assert out.shape == reference.shape == (2, 8, math.ceil(height / 4), math.ceil(width / 4))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert encoder.trunk.layer2[0].conv1.weight.grad is not None
    assert encoder.heads[3][0][0].weight.grad is not None  # the stride-32 level reaches the output


def test_resnet_fpn_frozen_stages_keep_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    encoder = ResNetFPNEncoder(out_channels=8, weights=None, frozen_stages=2)
    encoder.train()
    assert not encoder.trunk.bn1.training
    assert not encoder.trunk.layer1[0].bn1.training
    assert encoder.trunk.layer2[0].bn1.training
    assert encoder.heads[0][0][1].training
    assert not any(p.requires_grad for p in encoder.trunk.layer1.parameters())
    assert not encoder.trunk.conv1.weight.requires_grad
    assert all(p.requires_grad for p in encoder.trunk.layer2.parameters())
    stats = encoder.trunk.layer1[0].bn1.running_mean.clone()
    encoder(_images(2, 32, 32))
    assert torch.equal(stats, encoder.trunk.layer1[0].bn1.running_mean)


def test_resnet_weights_file_loads_to_identical_outputs(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(1)
    source = ResNetFPNEncoder(out_channels=8, weights=None).eval()
    # a torchvision resnet50 state dict: the trunk of ``source`` plus the classifier
    state = {**source.trunk.state_dict(), **{f"fc.{k}": v for k, v in resnet50(weights=None).fc.state_dict().items()}}
    path = tmp_path / "resnet50-random.pth"
    torch.save(state, path)

    torch.manual_seed(1)  # same FPN / head initialisation as ``source``
    loaded = ResNetFPNEncoder(out_channels=8, weights=path).eval()
    images = _images(2, 64, 64)
    torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)

    torch.manual_seed(2)
    other = ResNetFPNEncoder(out_channels=8, weights=path)
    for name, value in source.trunk.state_dict().items():
        assert torch.equal(other.trunk.state_dict()[name], value), name
    assert not torch.equal(other.heads[0][0][0].weight, source.heads[0][0][0].weight)

    del state["layer3.0.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(CorruptFileError, match=r"layer3\.0\.conv2\.weight"):
        ResNetFPNEncoder(out_channels=8, weights=path)


def test_resnet_imagenet_weights_missing_then_found(empty_hub: Path) -> None:
    from torchvision.models import ResNet50_Weights

    with pytest.raises(MissingWeightsError) as info:
        ResNetFPNEncoder(out_channels=8, weights="imagenet")
    message = str(info.value)
    expected = empty_hub / Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    assert ResNet50_Weights.IMAGENET1K_V1.url in message
    assert str(expected) in message
    assert "weights=None" in message
    with pytest.raises(MissingWeightsError, match=r"nowhere\.pth"):
        ResNetFPNEncoder(out_channels=8, weights=empty_hub / "nowhere.pth")

    torch.manual_seed(3)
    trunk_state = ResNetFPNEncoder(out_channels=8, weights=None).trunk.state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(trunk_state, empty_hub / Path(ResNet50_Weights.IMAGENET1K_V2.url).name)
    encoder = build_encoder("resnet50_fpn", 8)  # "default" = the ImageNet weights from the cache
    assert isinstance(encoder, ResNetFPNEncoder)
    assert torch.equal(encoder.trunk.layer4[2].conv3.weight, trunk_state["layer4.2.conv3.weight"])


# ----------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14


@pytest.mark.parametrize(
    ("size", "image_size", "grid"),
    [((56, 56), None, (4, 4)), ((64, 90), None, (5, 6)), ((20, 30), None, (1, 2)), ((64, 64), (28, 42), (2, 3))],
)
def test_dinov2_output_grid(
    dino_source: DinoV2Teacher, size: tuple[int, int], image_size: tuple[int, int] | None, grid: tuple[int, int]
) -> None:
    teacher = dino_source
    teacher.image_size = image_size
    try:
        out = teacher(_images(2, *size))
    finally:
        teacher.image_size = None
    assert out.shape == (2, 384, *grid)
    assert torch.isfinite(out).all()


def test_dinov2_forward_matches_timm_at_native_resolution(dino_source: DinoV2Teacher) -> None:
    """At 518 x 518 no position embedding is resampled: our token path must equal timm's own."""
    teacher = copy.deepcopy(dino_source)
    teacher.vit.blocks = teacher.vit.blocks[:2]  # both paths run the same blocks; two keep it fast
    images = _images(1, 518, 518)
    ours = teacher.patch_tokens(images)
    with torch.no_grad():
        normalised = (images - teacher.mean) / teacher.std
        reference = teacher.vit.forward_features(normalised)[:, 1:]
    torch.testing.assert_close(ours.flatten(2).transpose(1, 2), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["official", "official_chunked", "timm", "timm_safetensors"])
def test_dinov2_weights_file_loads_to_identical_outputs(dino_source: DinoV2Teacher, tmp_path: Path, layout: str) -> None:
    if layout.startswith("official"):
        state = _official_dinov2_state(dino_source, chunks=4 if layout.endswith("chunked") else 0)
        path = tmp_path / "dinov2_vits14_pretrain.pth"
        torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}} if "chunked" in layout else state, path)
    elif layout == "timm":
        path = tmp_path / "vit_small_patch14_dinov2.pth"
        torch.save(dino_source.vit.state_dict(), path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in dino_source.vit.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random init, overwritten by the file
    loaded = DinoV2Teacher(weights=path)
    images = _images(2, 64, 90)
    torch.testing.assert_close(loaded(images), dino_source(images), rtol=0, atol=0)


def test_dinov2_hub_weights_missing_then_found(dino_source: DinoV2Teacher, empty_hub: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        build_teacher("dinov2_vits14", 384)
    message = str(info.value)
    assert DINOV2_VITS14_URL in message
    assert str(empty_hub / "dinov2_vits14_pretrain.pth") in message
    assert "weights=None" in message

    empty_hub.mkdir(parents=True)
    torch.save(_official_dinov2_state(dino_source), empty_hub / "dinov2_vits14_pretrain.pth")
    teacher = DinoV2Teacher(weights="hub")
    images = _images(1, 56, 56)
    torch.testing.assert_close(teacher(images), dino_source(images), rtol=0, atol=0)

    broken = _official_dinov2_state(dino_source)
    broken["blocks.3.attn.qkv.weight"] = broken["blocks.3.attn.qkv.weight"][:10]
    torch.save(broken, empty_hub / "broken.pth")
    with pytest.raises(CorruptFileError, match="DINOv2"):
        DinoV2Teacher(weights=empty_hub / "broken.pth")


@pytest.mark.parametrize("name", ["random", "dinov2_vits14"])
def test_teachers_are_frozen_and_stay_in_eval(name: str) -> None:
    teacher = build_teacher(name, 384 if name == "dinov2_vits14" else 8, weights=None)
    parent = nn.ModuleDict({"teacher": teacher, "student": nn.Linear(2, 2)})
    parent.train()
    assert parent["student"].training
    assert not any(module.training for module in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    out = teacher(_images(1, 56, 56))
    assert not out.requires_grad


def test_dinov2_pca_is_ordered_and_decorrelating(dino_source: DinoV2Teacher) -> None:
    teacher = DinoV2Teacher(weights=None, output_dim=8)
    teacher.vit.load_state_dict(dino_source.vit.state_dict())
    images = _images(8, 56, 56, seed=5)
    assert teacher.needs_fit
    with pytest.raises(RuntimeError, match="fit_pca"):
        teacher(images)
    variance = teacher.fit_pca(images, batch_size=3)
    assert not teacher.needs_fit

    tokens = dino_source(images).permute(0, 2, 3, 1).reshape(-1, 384).double().numpy()
    centred = tokens - tokens.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    expected_variance = singular[:8] ** 2 / (len(tokens) - 1)

    projected = teacher(images).permute(0, 2, 3, 1).reshape(-1, 8).double().numpy()
    covariance = np.cov(projected, rowvar=False)
    np.testing.assert_allclose(projected.mean(axis=0), 0, atol=1e-4 * np.sqrt(expected_variance[0]))
    np.testing.assert_allclose(np.diag(covariance), expected_variance, rtol=1e-3)
    np.testing.assert_allclose(variance.double().numpy(), expected_variance, rtol=1e-3)
    off_diagonal = covariance - np.diag(np.diag(covariance))
    assert np.abs(off_diagonal).max() < 1e-4 * expected_variance[0]
    assert np.all(np.diff(np.diag(covariance)) < 0)
    alignment = np.abs(components[:8] @ teacher.pca_basis.double().numpy())
    np.testing.assert_allclose(np.diag(alignment), 1, atol=1e-3)

    # batches given one by one give the same projection, and the PCA travels in the state dict
    again = DinoV2Teacher(weights=None, output_dim=8)
    again.vit.load_state_dict(dino_source.vit.state_dict())
    again.fit_pca(iter([images[:5], images[5:]]))
    torch.testing.assert_close(again.pca_basis, teacher.pca_basis, rtol=1e-4, atol=1e-5)
    restored = DinoV2Teacher(weights=None, output_dim=8)
    restored.load_state_dict(teacher.state_dict())
    assert not restored.needs_fit
    torch.testing.assert_close(restored(images), teacher(images), rtol=0, atol=0)


def test_factories_reject_unknown_names_and_weights() -> None:
    with pytest.raises(ValueError, match="resnet50_fpn"):
        build_encoder("resnet18", 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dinov2_vits14"):
        build_teacher("clip", 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_encoder("small", 8, weights="imagenet")
    assert type(build_encoder("small", 8)) is SmallEncoder2D
    with pytest.raises(ValueError, match="output_dim"):
        DinoV2Teacher(weights=None, output_dim=500)
