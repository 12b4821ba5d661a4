"""PointAD's frozen CLIP: loading and its errors, V-V attention, multi-layer tokens, text tower."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from anomalib_3d.data.errors import MissingWeightsError
from anomalib_3d_plugins.pointad.clip_backbone import (
    BUILTIN_CONFIGS,
    FrozenCLIP,
    default_feature_layers,
    load_open_clip,
)

torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("pointad-tiny-vit", None)


@pytest.fixture(scope="module")
def images(tiny: FrozenCLIP) -> torch.Tensor:
    return tiny.normalize(torch.rand(2, 3, *tiny.image_size, generator=torch.Generator().manual_seed(1)))


def test_default_layers_are_the_quarters() -> None:
    assert default_feature_layers(24) == (6, 12, 18, 24)
    assert default_feature_layers(12) == (3, 6, 9, 12)
    assert default_feature_layers(4) == (1, 2, 3, 4)
    assert default_feature_layers(1) == (1,)


def test_global_feature_is_clip_image_embedding(tiny: FrozenCLIP, images: torch.Tensor) -> None:
    """The V-V stream runs beside CLIP's own: the class-token embedding must not change."""
    features = tiny.encode_image(images)
    reference = tiny.clip.encode_image(images)
    torch.testing.assert_close(features.global_features, reference, atol=1e-5, rtol=1e-5)


def test_patch_tokens_without_vv_match_open_clip_intermediates(images: torch.Tensor, tiny: FrozenCLIP) -> None:
    plain = FrozenCLIP("pointad-tiny-vit", None, vv_attention=False, feature_layers=[2, 4], clip=tiny.clip)
    tokens = plain.encode_image(images).patch_tokens
    visual = tiny.clip.visual
    out = visual.forward_intermediates(images, indices=[1, 3], normalize_intermediates=True, output_fmt="NLC",
                                       intermediates_only=True)["image_intermediates"]
    for mine, theirs in zip(tokens, out, strict=True):
        torch.testing.assert_close(mine, theirs @ visual.proj, atol=1e-5, rtol=1e-5)


def _naive_vv_tokens(model: FrozenCLIP, images: torch.Tensor, start: int, layer: int) -> torch.Tensor:
    """Independent reference: per-head loops, explicit softmax(v v^T / sqrt(d)) v, no fused ops."""
    visual = model.clip.visual
    x = visual._embeds(images)  # noqa: SLF001
    vv = None
    for index, block in enumerate(visual.transformer.resblocks, start=1):
        if index >= start:
            h = block.ln_1(x)
            width = h.shape[-1]
            heads = block.attn.num_heads
            d = width // heads
            w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
            v = h @ w[2 * width :].T + b[2 * width :]
            outs = []
            for head in range(heads):
                vh = v[..., head * d : (head + 1) * d]
                attn = torch.softmax(vh @ vh.transpose(-1, -2) / math.sqrt(d), dim=-1)
                outs.append(attn @ vh)
            merged = torch.cat(outs, dim=-1) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
            vv = (x if vv is None else vv) + merged
        x = block(x)
        if index == layer:
            return visual.ln_post(vv[:, 1:]) @ visual.proj
    raise AssertionError


def test_value_value_tokens_match_naive_reference(tiny: FrozenCLIP, images: torch.Tensor) -> None:
    model = FrozenCLIP("pointad-tiny-vit", None, feature_layers=[3, 4], vv_start_layer=2, clip=tiny.clip)
    tokens = model.encode_image(images).patch_tokens
    for layer, mine in zip((3, 4), tokens, strict=True):
        torch.testing.assert_close(mine, _naive_vv_tokens(model, images, 2, layer), atol=1e-5, rtol=1e-4)
    # And they differ from CLIP's ordinary tokens (the V-V stream is really used).
    plain = FrozenCLIP("pointad-tiny-vit", None, vv_attention=False, feature_layers=[3], clip=tiny.clip)
    assert not torch.allclose(tokens[0], plain.encode_image(images).patch_tokens[0], atol=1e-3)


def test_backbone_is_frozen(tiny: FrozenCLIP) -> None:
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.clip.training


def test_feature_shapes_follow_the_config(tiny: FrozenCLIP, images: torch.Tensor) -> None:
    features = tiny.encode_image(images)
    assert tiny.grid_size == (7, 7)
    assert features.global_features.shape == (2, 64)
    assert [t.shape for t in features.patch_tokens] == [torch.Size([2, 49, 64])] * 4
    with pytest.raises(ValueError, match="prepare_images"):
        tiny.encode_image(torch.zeros(1, 3, 50, 50))


def test_text_tower_on_embeddings_equals_encode_text(tiny: FrozenCLIP) -> None:
    ids = open_clip.tokenize(["a photo of a damaged object.", "object."])
    mine = tiny.encode_text_embeddings(tiny.embed_tokens(ids), ids)
    torch.testing.assert_close(mine, tiny.clip.encode_text(ids), atol=1e-5, rtol=1e-5)


def test_deep_prompts_replace_tokens_inside_blocks(tiny: FrozenCLIP) -> None:
    ids = open_clip.tokenize(["x x x x object."])
    emb = tiny.embed_tokens(ids)
    deep = [torch.randn(2, tiny.text_width)]
    mine = tiny.encode_text_embeddings(emb, ids, deep)
    # Reference: run block 0, overwrite tokens 1..2, run the rest with open_clip's blocks.
    text = tiny.text
    x = emb + text.positional_embedding
    mask = text.attn_mask
    for index, block in enumerate(text.blocks):
        if index == 1:
            x = x.clone()
            x[:, 1:3] = deep[0]
        x = block(x, attn_mask=mask)
    x = text.ln_final(x)
    reference = x[torch.arange(1), ids.argmax(-1)] @ text.text_projection
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mine, tiny.clip.encode_text(ids), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# loading
def test_missing_download_raises_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (HF_HUB_OFFLINE=1-style) download failures become MissingWeightsError."""
    import open_clip.factory

    def offline(*args: object, **kwargs: object) -> str:
        msg = "We have no connection or you passed local_files_only, so force_download is not an accepted option."
        raise OSError(msg)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(MissingWeightsError) as info:
        load_open_clip("ViT-L-14-336", "openai")
    text = str(info.value)
    assert "ViT-L-14-336" in text and "'openai'" in text
    assert "vit_large_patch14_clip_336.openai" in text or "openaipublic" in text  # where it comes from
    assert "local path" in text or "pretrained='/path" in text


def test_hf_hub_offline_raises_named_error(tmp_path: object) -> None:
    """The real failure of an offline machine (fresh interpreter, empty cache, HF_HUB_OFFLINE=1)."""
    import os
    import subprocess
    import sys

    code = (
        "from anomalib_3d_plugins.pointad.clip_backbone import load_open_clip\n"
        "from anomalib_3d.data.errors import MissingWeightsError\n"
        "try:\n    load_open_clip('ViT-B-32', 'openai')\n"
        "except MissingWeightsError as e:\n    print('MISSING', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "MISSING" in out.stdout, out.stderr[-2000:]
    assert "ViT-B-32" in out.stdout and "openai" in out.stdout


def test_missing_local_checkpoint_names_the_path(tmp_path: object) -> None:
    missing = f"{tmp_path}/nope/ViT-L-14-336px.pt"
    with pytest.raises(MissingWeightsError, match="nope"):
        load_open_clip("ViT-L-14-336", missing)
    with pytest.raises(MissingWeightsError, match="nope"):
        load_open_clip("pointad-tiny-vit", missing)


def test_unknown_names_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        load_open_clip("ViT-B-32", "not-a-tag")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_open_clip("ViT-Q-99", None)


def test_local_checkpoint_is_loaded(tmp_path: object) -> None:
    torch.manual_seed(3)
    source = load_open_clip("pointad-tiny-vit", None)
    path = f"{tmp_path}/tiny.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(4)
    loaded = load_open_clip(BUILTIN_CONFIGS["pointad-tiny-vit"], path)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_openai_tags_use_quick_gelu() -> None:
    from anomalib_3d_plugins.pointad.clip_backbone import _quick_gelu_for

    assert _quick_gelu_for("ViT-L-14-336", "openai")
    assert _quick_gelu_for("ViT-L-14-336", "/weights/ViT-L-14-336px.pt")
    assert not _quick_gelu_for("ViT-B-16", "laion2b_s34b_b88k")
    assert not _quick_gelu_for("ViT-B-16", None)


def test_prepare_images_resizes_and_normalizes(tiny: FrozenCLIP) -> None:
    rgb = torch.full((1, 3, 40, 60), 0.5)
    out = tiny.prepare_images(rgb)
    assert out.shape == (1, 3, *tiny.image_size)
    mean, std = torch.tensor(open_clip.OPENAI_DATASET_MEAN), torch.tensor(open_clip.OPENAI_DATASET_STD)
    torch.testing.assert_close(out[0, :, 5, 5], (0.5 - mean) / std)


def test_vv_start_layer_does_not_follow_the_feature_layers(tiny: FrozenCLIP, images: torch.Tensor) -> None:
    """feature_layers=[24] (the authors' MVTec runs) keeps V-V from block 6 of 24 (DPAM_layer = 20)."""
    from anomalib_3d_plugins.pointad.clip_backbone import default_vv_start_layer

    assert [default_vv_start_layer(d) for d in (24, 12, 4, 1)] == [6, 3, 1, 1]
    last_only = FrozenCLIP("pointad-tiny-vit", None, feature_layers=[4], clip=tiny.clip)
    assert last_only.vv_start_layer == 1  # 4 blocks: a quarter is block 1, not the feature layer 4
    explicit = FrozenCLIP("pointad-tiny-vit", None, feature_layers=[4], vv_start_layer=1, clip=tiny.clip)
    late = FrozenCLIP("pointad-tiny-vit", None, feature_layers=[4], vv_start_layer=4, clip=tiny.clip)
    tokens = last_only.encode_image(images).patch_tokens[0]
    torch.testing.assert_close(tokens, explicit.encode_image(images).patch_tokens[0], atol=0, rtol=0)
    torch.testing.assert_close(tokens, _naive_vv_tokens(last_only, images, 1, 4), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(tokens, late.encode_image(images).patch_tokens[0], atol=1e-3)
