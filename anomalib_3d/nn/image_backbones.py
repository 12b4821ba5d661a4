"""Image features of the models that read RGB next to organized point clouds.

BTF's recipe (Horwitz & Hoshen, CVPR-W 2023), also used by 3DzAL's RGB branch: a frozen ImageNet
WideResNet-50-2, layers 2 + 3, 3 x 3 average pooling, adaptive pooling to a patch grid; and the same
pooling for per-pixel point features scattered on the organized grid.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_3d.errors import CorruptFileError, MissingWeightsError
from anomalib_3d.nn.weights import cached_checkpoint, hub_checkpoint_dir, load_state_dict_file

__all__ = ["WIDE_RESNET50_URL", "RGBBackbone", "grid_patch_features"]

WIDE_RESNET50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def grid_patch_features(
    features: torch.Tensor,
    grid_index: torch.Tensor,
    grid_shape: tuple[int, int],
    patch_grid: int,
    pool_kernel: int = 3,
) -> torch.Tensor:
    """BTF's organized patch features: scatter per-pixel features on the image grid (zeros where no
    point), average-pool ``pool_kernel`` x ``pool_kernel`` (stride 1), then adaptive-average-pool to
    ``patch_grid`` x ``patch_grid`` patches.

    Args:
        features: ``(n, C)`` features of the valid pixels.
        grid_index: ``(n,) long`` flat pixel index ``row * W + col`` of each.
        grid_shape: ``(H, W)``.
        patch_grid: patches per side (BTF: 28).
        pool_kernel: local averaging window (BTF: 3; 1 = none).

    Returns:
        ``(1, C, patch_grid, patch_grid)``.
    """
    height, width = grid_shape
    dense = features.new_zeros((features.shape[1], height * width))
    dense[:, grid_index] = features.T
    dense = dense.view(1, -1, height, width)
    if pool_kernel > 1:
        dense = F.avg_pool2d(dense, pool_kernel, stride=1, padding=pool_kernel // 2, count_include_pad=True)
    return F.adaptive_avg_pool2d(dense, (patch_grid, patch_grid))


class RGBBackbone(nn.Module):
    """Frozen ImageNet WideResNet-50-2, layers 2 and 3 (BTF's RGB branch, as in PatchCore).

    Args:
        weights: local torchvision ``wide_resnet50_2`` state dict; None looks in the torch hub cache
            (``torch.hub.get_dir()/checkpoints``). Nothing is downloaded.
        pretrained: False builds a randomly initialised network (tests, smoke runs); scores are then
            meaningless for RGB.
        seed: seed of that random initialisation.

    Raises:
        MissingWeightsError: ``pretrained`` and no weights file found.
        CorruptFileError: the file is not a WideResNet-50-2 state dict.
    """

    def __init__(self, weights: str | Path | None = None, pretrained: bool = True, seed: int = 0) -> None:
        super().__init__()
        from torchvision.models import wide_resnet50_2

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            network = wide_resnet50_2(weights=None)
        if pretrained:
            path = Path(weights).expanduser() if weights is not None else cached_checkpoint("wide_resnet50_2-*.pth")
            if path is None or not path.is_file():
                target = path or hub_checkpoint_dir() / Path(WIDE_RESNET50_URL).name
                raise MissingWeightsError(
                    "the RGB branch needs ImageNet WideResNet-50-2 weights, and none are available offline.",
                    path=target,
                    fix=f"download {WIDE_RESNET50_URL} to this path (or pass backbone_weights=<file>), "
                    "or switch the RGB branch off (BTF: feature_mode='fpfh'; ThreeDzAL: rgb_backbone=null)",
                )
            state = load_state_dict_file(path, "WideResNet-50-2 weights", f"re-download {WIDE_RESNET50_URL}")
            try:
                network.load_state_dict(state)
            except Exception as exc:  # noqa: BLE001 - any load problem means the same to the user
                raise CorruptFileError(
                    f"cannot load WideResNet-50-2 weights ({type(exc).__name__}: {exc}).",
                    path=path,
                    fix=f"re-download {WIDE_RESNET50_URL}",
                ) from exc
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool, network.layer1)
        self.layer2 = network.layer2
        self.layer3 = network.layer3
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RGBBackbone:
        """Always in eval mode: frozen batch-norm statistics."""
        del mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, patch_grid: int, pool_kernel: int = 3, image_size: int = 224) -> torch.Tensor:
        """Patch features of RGB ``image (B, 3, H, W)`` in [0, 1]: ``(B, 1536, patch_grid, patch_grid)``."""
        x = F.interpolate(image.float(), size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        mid = self.layer2(self.stem(x))
        deep = self.layer3(mid)
        maps = []
        for fmap in (mid, deep):
            if pool_kernel > 1:
                fmap = F.avg_pool2d(fmap, pool_kernel, stride=1, padding=pool_kernel // 2, count_include_pad=True)
            maps.append(F.adaptive_avg_pool2d(fmap, (patch_grid, patch_grid)))
        return torch.cat(maps, dim=1)
