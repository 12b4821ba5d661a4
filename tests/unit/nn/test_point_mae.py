"""anomalib_3d.nn: Point-MAE patching, network and checkpoint loading; the image-feature re-export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_3d.errors import CorruptFileError, MissingWeightsError
from anomalib_3d.nn import PatchTokenizer, PointMAE, TransformerStack, group_into_patches, prepare_clouds
from anomalib_3d.ops import group_patches

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"embed_dim": 32, "tokenizer_width": 16, "encoder_depth": 3, "decoder_depth": 2, "num_heads": 2,
         "drop_path_rate": 0.0, "group_size": 8}


def clouds(*sizes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    points = torch.cat([torch.randn(n, 3, generator=g) * (i + 2) + 10 * i for i, n in enumerate(sizes)])
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return points, batch


def network(seed: int = 0) -> PointMAE:
    torch.manual_seed(seed)
    return PointMAE(**SIZES).eval()


# --------------------------------------------------------------------------------------------
# patching
# --------------------------------------------------------------------------------------------
def test_prepare_clouds_puts_each_cloud_in_the_unit_sphere() -> None:
    points, batch = clouds(500, 90)
    prepared = prepare_clouds(points, batch, 128)
    assert prepared.points.shape == (128 + 90, 3)
    assert torch.equal(prepared.batch, batch[prepared.source_index])
    for b in range(2):
        raw = points[batch == b].numpy().astype(np.float64)
        centred = raw - raw.mean(0)
        expected = centred / np.linalg.norm(centred, axis=1).max()
        rows = prepared.source_index[prepared.batch == b] - int((batch < b).sum())
        np.testing.assert_allclose(prepared.points[prepared.batch == b].numpy(), expected[rows.numpy()], atol=1e-5)
    # The small cloud is used whole, in order.
    torch.testing.assert_close(prepared.source_index[prepared.batch == 1], torch.arange(500, 590))


def test_prepare_clouds_draws_are_seeded_or_stochastic() -> None:
    points, batch = clouds(400)
    fps = prepare_clouds(points, batch, 64)
    assert torch.equal(fps.source_index, prepare_clouds(points, batch, 64).source_index)
    assert fps.source_index[0] == 0  # deterministic FPS starts at the first point
    seeded = [prepare_clouds(points, batch, 64, subsample="random", seed=s).source_index for s in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    drawn = [
        prepare_clouds(points, batch, 64, stochastic=True, generator=torch.Generator().manual_seed(s)).source_index
        for s in (3, 4)
    ]
    assert not torch.equal(drawn[0], drawn[1])


@pytest.mark.parametrize("sampler", ["fps", "gps", "random", "voxel"])
def test_group_into_patches_is_group_patches_with_the_sampler_options(sampler: str) -> None:
    prepared = prepare_clouds(*clouds(300, 260), 256)
    patches = group_into_patches(prepared, 16, 8, sampler=sampler, seed=5, k=8, threshold=0.3, salient_density=2.0)
    options: dict[str, object] = {"fps": {"random_start": False}, "gps": {"k": 8, "threshold": 0.3,
                                                                          "salient_density": 2.0}}.get(sampler, {})
    generator = torch.Generator().manual_seed(5) if sampler in ("fps", "random") else None
    expected = group_patches(prepared.points, 16, 8, prepared.batch, sampler=sampler, generator=generator, **options)
    assert torch.equal(patches.group_index, expected.group_index)
    assert patches.neighborhoods.shape == (2, 16, 8, 3)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------
def test_tokenizer_ignores_point_order_within_a_patch() -> None:
    torch.manual_seed(0)
    tokenizer = PatchTokenizer(16, width=8).eval()
    patches = torch.randn(2, 3, 10, 3)
    shuffled = patches[:, :, torch.randperm(10)]
    assert tokenizer(patches).shape == (2, 3, 16)
    torch.testing.assert_close(tokenizer(patches), tokenizer(shuffled))
    with pytest.raises(ValueError, match="even"):
        PatchTokenizer(16, width=7)


def test_seed_fixes_the_network() -> None:
    first, again, other = network(0).state_dict(), network(0).state_dict(), network(1).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["encoder.blocks.0.attn.qkv.weight"], other["encoder.blocks.0.attn.qkv.weight"])
    assert torch.all(first["encoder.blocks.0.attn.proj.bias"] == 0)
    assert float(first["encoder.blocks.0.attn.qkv.weight"].std()) == pytest.approx(0.02, abs=0.002)


def test_encoder_outputs_stop_after_the_asked_blocks() -> None:
    model = network()
    neighborhoods, centers = torch.randn(2, 6, 8, 3) * 0.1, torch.randn(2, 6, 3)
    full = model.encoder_outputs(neighborhoods, centers)
    assert len(full) == 1 + SIZES["encoder_depth"]
    torch.testing.assert_close(full[0], model.tokenizer(neighborhoods))
    partial = model.encoder_outputs(neighborhoods, centers, 2)
    assert len(partial) == 3
    for a, b in zip(partial, full, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(model.encoder_outputs(neighborhoods, centers, 0)) == 1
    torch.testing.assert_close(model.encode(neighborhoods, centers), model.encoder_norm(full[-1]))
    stack = TransformerStack(8, 3, 2)
    assert len(stack(torch.randn(1, 4, 8), torch.zeros(1, 4, 8), num_blocks=1)) == 1


def test_reconstruction_sees_only_the_visible_patches() -> None:
    model = network()
    neighborhoods, centers = torch.randn(2, 6, 8, 3) * 0.1, torch.randn(2, 6, 3)
    masked = torch.tensor([[1, 4], [0, 5]])
    predicted = model.reconstruct(neighborhoods, centers, masked)
    assert predicted.shape == (2, 2, SIZES["group_size"], 3)
    changed = neighborhoods.clone()
    changed[0, [1, 4]] += 1.0
    changed[1, [0, 5]] -= 1.0
    torch.testing.assert_close(model.reconstruct(changed, centers, masked), predicted)
    changed[0, 2] += 1.0  # a visible patch: the prediction moves
    assert not torch.allclose(model.reconstruct(changed, centers, masked), predicted)


# --------------------------------------------------------------------------------------------
# Point-MAE checkpoints
# --------------------------------------------------------------------------------------------
def test_point_mae_checkpoint_loads_and_bad_files_fail_by_name(tmp_path) -> None:  # noqa: ANN001
    source = network(7)
    renamed = {"MAE_encoder.encoder." + k.removeprefix("tokenizer."): v for k, v in source.state_dict().items()
               if k.startswith("tokenizer.")}
    renamed.update({"MAE_encoder.blocks.blocks." + k.removeprefix("encoder.blocks."): v
                    for k, v in source.state_dict().items() if k.startswith("encoder.blocks.")})
    renamed.update({"MAE_encoder.pos_embed." + k.removeprefix("encoder_pos_embed."): v
                    for k, v in source.state_dict().items() if k.startswith("encoder_pos_embed.")})
    path = tmp_path / "pretrain.pth"
    torch.save({"model": renamed}, path)
    model = network(0)
    loaded, skipped = model.load_point_mae(path)
    encoder_keys = {k for k in source.state_dict() if k.startswith(("tokenizer.", "encoder.b", "encoder_pos"))}
    assert not skipped and set(loaded) == encoder_keys
    neighborhoods, centers = torch.randn(1, 6, 8, 3) * 0.1, torch.randn(1, 6, 3)
    torch.testing.assert_close(model.encoder_outputs(neighborhoods, centers)[-1],
                               source.encoder_outputs(neighborhoods, centers)[-1])

    with pytest.raises(MissingWeightsError, match="Point-MAE"):
        model.load_point_mae(tmp_path / "missing.pth")
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"base_model": {"classifier.weight": torch.zeros(2, 2)}}, unrelated)
    with pytest.raises(CorruptFileError, match="no tensor"):
        model.load_point_mae(unrelated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="Point-MAE checkpoint"):
        model.load_point_mae(garbage)
