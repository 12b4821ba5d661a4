"""BTF building blocks: cloud normalisation, hand-crafted point features, patch pooling on organized
grids and on raw clouds, score maps back to points, and the frozen RGB backbone.

The cloud normalisation and point features are shared with the other classical baselines
(``PatchCore3D``, ``Reg3DAD``), which import them from here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_3d.data.errors import CorruptFileError, MissingWeightsError
from anomalib_3d.ops import fpfh, knn

__all__ = [
    "FEATURE_MODES",
    "WIDE_RESNET50_URL",
    "RGBBackbone",
    "gaussian_blur",
    "grid_patch_features",
    "knn_pool",
    "normalize_clouds",
    "patch_scores_to_points",
    "point_features",
]

FEATURE_MODES = ("raw", "fpfh", "rgb_fpfh")
WIDE_RESNET50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_clouds(
    points: torch.Tensor,
    batch: torch.Tensor,
    mode: Literal["bbox", "rms", "none"] = "bbox",
) -> torch.Tensor:
    """Put every cloud in a common frame so features and radii mean the same on every part.

    Args:
        points: ``(N, 3)``.
        batch: ``(N,) long`` sorted cloud ids.
        mode: ``"bbox"``: bounding-box centre at 0, bounding-box diagonal 1 (robust to density and
            to missing regions, but it depends on the pose); ``"rms"``: centroid at 0, RMS distance to
            it 1/2 (pose-invariant: use it before rigid registration); ``"none"``: unchanged.

    Returns:
        ``(N, 3)`` float points.
    """
    points = points.float()
    if mode == "none":
        return points
    num_clouds = int(batch.max()) + 1 if batch.numel() else 0
    if mode == "rms":
        counts = torch.bincount(batch, minlength=num_clouds).clamp_min(1).to(points.dtype)
        center = points.new_zeros((num_clouds, 3)).index_add_(0, batch, points) / counts.unsqueeze(1)
        centered = points - center[batch]
        mean_sq = points.new_zeros(num_clouds).index_add_(0, batch, centered.pow(2).sum(dim=1)) / counts
        return centered / (2 * mean_sq.sqrt().clamp_min(1e-12))[batch].unsqueeze(1)
    if mode != "bbox":
        msg = f"normalization must be 'bbox', 'rms' or 'none', got {mode!r}."
        raise ValueError(msg)
    index = batch.unsqueeze(1).expand(-1, 3)
    low = points.new_full((num_clouds, 3), math.inf).scatter_reduce(0, index, points, "amin")
    high = points.new_full((num_clouds, 3), -math.inf).scatter_reduce(0, index, points, "amax")
    center = (low + high) / 2
    diagonal = (high - low).norm(dim=1).clamp_min(1e-12)
    return (points - center[batch]) / diagonal[batch].unsqueeze(1)


def point_features(
    points: torch.Tensor,
    batch: torch.Tensor,
    mode: Literal["raw", "fpfh"],
    *,
    fpfh_radius: float = 0.08,
    fpfh_max_nn: int = 100,
    normal_k: int = 30,
) -> torch.Tensor:
    """Per-point hand-crafted features of (normalised) clouds.

    Args:
        points: ``(N, 3)`` normalised points.
        batch: ``(N,) long`` sorted cloud ids.
        mode: ``"raw"`` (the coordinates, 3-D) or ``"fpfh"`` (33-D FPFH, Rusu et al. 2009, with
            normals from ``normal_k`` nearest neighbours oriented away from the cloud centre).
        fpfh_radius, fpfh_max_nn: FPFH neighbourhood (Open3D hybrid search).
        normal_k: neighbourhood of the normal estimate.

    Returns:
        ``(N, C)`` float features.
    """
    if mode == "raw":
        return points.float()
    if mode == "fpfh":
        return fpfh(points.float(), radius=fpfh_radius, max_nn=fpfh_max_nn, batch=batch, normal_k=normal_k).float()
    msg = f"point feature mode must be 'raw' or 'fpfh', got {mode!r}."
    raise ValueError(msg)


def knn_pool(points: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """Average every point's features over its ``k`` nearest neighbours (itself included).

    The unorganized counterpart of BTF's 3 x 3 average pooling on the image grid.

    Args:
        points: ``(N, 3)``; features: ``(N, C)``; batch: ``(N,) long``; k: neighbourhood size
            (clipped to the smallest cloud).

    Returns:
        ``(N, C)`` pooled features.
    """
    if k <= 1:
        return features
    smallest = int(torch.bincount(batch).min())
    index, _ = knn(points, points, min(k, smallest), batch, batch)
    return features[index].mean(dim=1)


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


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``image (B, C, H, W)`` (kernel radius 3 sigma, reflect padding)."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    if radius < 1:
        return image
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(image, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


def patch_scores_to_points(
    patch_scores: torch.Tensor,
    grid_index: torch.Tensor,
    grid_shape: tuple[int, int],
    sigma: float,
) -> torch.Tensor:
    """BTF's score map: bilinear upsampling of the patch scores to the full grid, Gaussian blur,
    read out at every point's pixel.

    Args:
        patch_scores: ``(P, P)``.
        grid_index: ``(n,) long`` pixel of each point.
        grid_shape: ``(H, W)`` of the full-resolution grid.
        sigma: blur width in full-resolution pixels (0: none).

    Returns:
        ``(n,)`` per-point scores.
    """
    score_map = F.interpolate(patch_scores[None, None], size=tuple(grid_shape), mode="bilinear", align_corners=False)
    score_map = gaussian_blur(score_map, sigma)
    return score_map.reshape(-1)[grid_index]


def _cached_wide_resnet() -> Path | None:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(checkpoints.glob("wide_resnet50_2-*.pth")) if checkpoints.is_dir() else []
    return found[0] if found else None


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
            path = Path(weights).expanduser() if weights is not None else _cached_wide_resnet()
            if path is None or not path.is_file():
                target = path or Path(torch.hub.get_dir()) / "checkpoints" / Path(WIDE_RESNET50_URL).name
                raise MissingWeightsError(
                    "BTF's rgb_fpfh mode needs ImageNet WideResNet-50-2 weights, and none are available offline.",
                    path=target,
                    fix=f"download {WIDE_RESNET50_URL} to this path (or pass backbone_weights=<file>), "
                    "or use feature_mode='fpfh'",
                )
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
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
