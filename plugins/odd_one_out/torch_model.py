"""Odd-One-Out in plain PyTorch (Bhunia et al., "Odd-One-Out: Anomaly Detection by Comparing with
Neighbors", CVPR 2025) — the network parts; the anomalib module (training stages, losses, outputs) is
``lightning_model.OddOneOut``. ``README.md`` lists the switches and the measured results.

Data flow of one forward::

    views (B, M, 3, H, W) ──2D encoder──► stride-4 maps (B, M, C, H/4, W/4)
        ──back-projection (anomalib_3d.render.volume)──► feature volume (B, C, 16, 96, 96)
        ──3D encoder-decoder (4 scales)──► F (B, d, ...) ──1x1x1 MLP heads──► density σ (softplus, 2 layers),
                                                          RGB (sigmoid, 2 layers), β (4 layers)
        ├─ render (training): emission-absorption rendering of RGB/β into the other M views
        └─ boxes (ground truth or proposals) ──crop_boxes──► per-object volumes z_n (K, d + d_β + 1, 8, 8, 8)
              ──cross-instance attention ×L (sparse top-k over the *other* instances' voxels,
                correspondences from β; dense / none as ablations)──► readout MLP ──► object logit

Every component is a constructor switch (``attention="sparse" | "dense" | "none"``, ``topk``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from anomalib_3d.render.volume import VoxelGrid, VolumeRender, backproject_features, crop_boxes, render_volume

from .backbones import SmallEncoder2D, build_encoder
from .settings import OddOneOutSettings

AttentionMode = Literal["sparse", "dense", "none"]
ReadoutMode = Literal["conv", "mean"]

__all__ = [
    "CrossInstanceAttention",
    "CrossInstanceBlock",
    "ObjectReadout",
    "OddOneOutModel",
    "PointwiseMLP3D",
    "OddOneOutOutput",
    "SmallEncoder2D",
    "VolumeNet3D",
    "cross_instance_attention",
]


# ----------------------------------------------------------------------------------------------
# cross-instance attention (paper Sec. 3.3-3.4, Eq. 5-7)


def cross_instance_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    match: Tensor,
    object_batch: Tensor,
    topk: int | None = 20,
) -> Tensor:
    """Each voxel of each object attends to voxels of the *other* objects of its scene.

    For voxel ``i`` of object ``n`` and every other object ``m`` of the same scene, the
    correspondences ``c_nm[i]`` are the ``topk`` voxels ``j`` of ``m`` maximising
    ``match_n[i] . match_m[j]`` (Eq. 5; ``topk=None``: every voxel, i.e. dense attention). The
    output is ``sum_{m != n} sum_{j in c_nm[i]} softmax(q_n[i] . k_m[j] / sqrt(d_h)) v_m[j]``, the
    softmax running jointly over all ``(m, j)`` (Eq. 7), per head. An object alone in its scene
    has nothing to compare with: its output is 0.

    Args:
        query, key, value: ``(K, T, h, d_h)`` per object, token (voxel), head.
        match: ``(K, T, d_m)`` correspondence features (the projected features β).
        object_batch: ``(K,)`` long scene of each object (sorted).
        topk: correspondences per other object, or ``None`` for all ``T`` (dense).

    Returns:
        ``(K, T, h, d_h)``.
    """
    num_objects, tokens, heads, head_dim = query.shape
    out = query.new_zeros(query.shape)
    if num_objects == 0:
        return out
    k = tokens if topk is None else min(int(topk), tokens)
    scale = 1.0 / math.sqrt(head_dim)
    counts = torch.bincount(object_batch, minlength=int(object_batch.max()) + 1).tolist()
    start = 0
    for count in counts:
        if count < 2:
            start += count
            continue
        idx = slice(start, start + count)
        q, kk, v, beta = query[idx], key[idx], value[idx], match[idx]
        start += count
        logits, gathered_index = [], []
        # Correspondences and logits object pair by object pair: peak memory (count, T, T), not (count, T, count, T).
        for shift in range(1, count):
            partner = [(n + shift) % count for n in range(count)]  # each object's shift-th other object
            similarity = torch.einsum("ntd,nsd->nts", beta, beta[partner])  # (count, T, T)
            if k < tokens:
                chosen = similarity.topk(k, dim=-1).indices  # (count, T, k)
            else:
                chosen = torch.arange(tokens, device=query.device).expand(count, tokens, tokens)
            keys = kk[partner]  # (count, T, h, d_h): the partner's keys
            picked = keys.gather(1, chosen.reshape(count, -1, 1, 1).expand(-1, -1, heads, head_dim))
            picked = picked.view(count, tokens, k, heads, head_dim)
            logits.append(torch.einsum("nthd,ntkhd->nthk", q, picked) * scale)
            gathered_index.append(chosen)
        weights = torch.softmax(torch.cat(logits, dim=-1), dim=-1)  # (count, T, h, (count-1) k)
        mixed = q.new_zeros(count, tokens, heads, head_dim)
        for position, shift in enumerate(range(1, count)):
            partner = [(n + shift) % count for n in range(count)]
            chosen = gathered_index[position]
            values = v[partner].gather(1, chosen.reshape(count, -1, 1, 1).expand(-1, -1, heads, head_dim))
            values = values.view(count, tokens, k, heads, head_dim)
            w = weights[..., position * k : (position + 1) * k]  # (count, T, h, k)
            mixed = mixed + torch.einsum("nthk,ntkhd->nthd", w, values)
        out[idx] = mixed
    return out


class CrossInstanceAttention(nn.Module):
    """Multi-head cross-instance attention with shared ``W_Q, W_K, W_V`` (Eq. 6).

    Args:
        dim: token width.
        heads: attention heads (8 in the paper).
        mode: ``"sparse"`` (top-k correspondences, the paper), ``"dense"`` (all voxels of the
            other instances) or ``"none"`` (no cross-instance exchange; the output is 0).
        topk: correspondences per other instance (20 in the paper).
    """

    def __init__(self, dim: int, heads: int = 8, mode: AttentionMode = "sparse", topk: int = 20) -> None:
        super().__init__()
        if mode not in ("sparse", "dense", "none"):
            msg = f"attention mode must be 'sparse', 'dense' or 'none', got {mode!r}."
            raise ValueError(msg)
        if dim % heads:
            msg = f"dim={dim} must be divisible by heads={heads}."
            raise ValueError(msg)
        self.dim, self.heads, self.mode, self.topk = dim, heads, mode, int(topk)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, match: Tensor, object_batch: Tensor) -> Tensor:
        """``tokens (K, T, dim)``, ``match (K, T, d_m)``, ``object_batch (K,)`` -> ``(K, T, dim)``."""
        if self.mode == "none":
            return torch.zeros_like(tokens)
        num, length, _ = tokens.shape
        q, k, v = self.to_qkv(tokens).view(num, length, 3, self.heads, self.dim // self.heads).unbind(2)
        topk = None if self.mode == "dense" else self.topk
        mixed = cross_instance_attention(q, k, v, match, object_batch, topk)
        return self.out(mixed.reshape(num, length, self.dim))


class CrossInstanceBlock(nn.Module):
    """Pre-norm transformer block: cross-instance attention + MLP, both residual."""

    def __init__(self, dim: int, heads: int = 8, mode: AttentionMode = "sparse", topk: int = 20) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = CrossInstanceAttention(dim, heads, mode, topk)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: Tensor, match: Tensor, object_batch: Tensor) -> Tensor:
        tokens = tokens + self.attention(self.norm_attention(tokens), match, object_batch)
        return tokens + self.mlp(self.norm_mlp(tokens))


class ObjectReadout(nn.Module):
    """Object logit from its attended crop (paper Sec. 3.4): strided 3D convolutions down to one
    cell (1/8 of an 8^3 crop), flattened, then a 2-layer MLP; ``mode="mean"`` averages the tokens
    instead (an ablation: a local defect is diluted by the average).

    ``tokens (K, T = s^3, dim) -> (K,)``.
    """

    def __init__(self, dim: int, crop_size: int, mode: ReadoutMode = "conv") -> None:
        super().__init__()
        if mode not in ("conv", "mean"):
            msg = f"readout must be 'conv' or 'mean', got {mode!r}."
            raise ValueError(msg)
        self.mode, self.crop_size = mode, int(crop_size)
        layers: list[nn.Module] = []
        size = self.crop_size
        while mode == "conv" and size > 1:
            layers += [nn.Conv3d(dim, dim, 3, stride=2, padding=1), nn.GroupNorm(1, dim), nn.GELU()]
            size = (size + 1) // 2
        self.down = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        if self.mode == "mean":
            pooled = tokens.mean(dim=1)
        else:
            size = self.crop_size
            volume = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], size, size, size)
            pooled = self.down(volume).flatten(1)
        return self.mlp(self.norm(pooled)).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# 3D backbones (the 2D encoders, the small CPU one and the paper's ResNet-50 + FPN, are in backbones.py)


class PointwiseMLP3D(nn.Module):
    """A per-voxel MLP: ``layers`` 1 x 1 x 1 convolutions with LeakyReLU between them (paper Sec. 3.2:
    "a two-layered 1 x 1 x 1 convolution block" for colour and density, a four-layered one for the
    projector β; the official code's heads are per-voxel MLPs of width 128).

    ``(B, C_in, Z, Y, X) -> (B, C_out, Z, Y, X)``; ``layers=1`` is a single linear map.
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int = 2, hidden: int = 128) -> None:
        super().__init__()
        if int(layers) < 1:
            msg = f"a head needs at least one layer, got layers={layers!r}."
            raise ValueError(msg)
        widths = [in_channels] + [int(hidden)] * (int(layers) - 1) + [out_channels]
        modules: list[nn.Module] = []
        for index, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if index:
                modules.append(nn.LeakyReLU(inplace=True))
            modules.append(nn.Conv3d(cin, cout, 1))
        self.net = nn.Sequential(*modules)

    @property
    def depth(self) -> int:
        """Number of 1 x 1 x 1 convolutions."""
        return sum(isinstance(m, nn.Conv3d) for m in self.net)

    def forward(self, volume: Tensor) -> Tensor:
        return self.net(volume)


class VolumeNet3D(nn.Module):
    """A 3D encoder-decoder with skip connections (U-Net style).

    ``scales`` resolutions (full, 1/2, 1/4, ...; each stride-2 step rounds up): the paper's 3D backbone
    is "a four-scale encoder-decoder 3D CNN" (Atlas, Murez et al. 2020), i.e. ``scales=4``; fewer scales
    give the same network without its coarsest levels (a prefix of the same module names). Channels:
    ``width`` at full resolution, ``2 * width`` below. Decoder level ``i`` takes the
    upsampled level below concatenated with encoder level ``i`` and returns encoder level ``i - 1``'s width
    (``out_channels`` at full resolution).

    ``(B, C_in, Z, Y, X) -> (B, C_out, Z, Y, X)``; any grid size (the skips are resized to match).
    """

    def __init__(self, in_channels: int, out_channels: int = 32, width: int = 32, scales: int = 4) -> None:
        super().__init__()
        if int(scales) < 2:
            msg = f"scales must be >= 2 (one downsampling at least), got {scales!r}."
            raise ValueError(msg)
        if width % 4 or out_channels % 4:
            msg = f"width ({width}) and out_channels ({out_channels}) must be multiples of 4 (GroupNorm with 4 groups)."
            raise ValueError(msg)
        self.scales = int(scales)

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(4, cout),
                                 nn.ReLU(inplace=True))

        channels = [width] + [2 * width] * (self.scales - 1)
        # Registered as enc0, enc1, ..., then dec{scales-2}, ..., dec0 (creation order fixes the seeded init,
        # and a network of fewer scales is a prefix of the same names).
        for level in range(self.scales):
            cin = in_channels if level == 0 else channels[level - 1]
            setattr(self, f"enc{level}", block(cin, channels[level], stride=1 if level == 0 else 2))
        below = channels[-1]
        for level in range(self.scales - 2, -1, -1):
            cout = out_channels if level == 0 else channels[level - 1]
            setattr(self, f"dec{level}", block(below + channels[level], cout))
            below = cout

    def forward(self, volume: Tensor) -> Tensor:
        skips = []
        x = volume
        for level in range(self.scales):
            x = getattr(self, f"enc{level}")(x)
            skips.append(x)
        for level in range(self.scales - 2, -1, -1):
            skip = skips[level]
            up = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = getattr(self, f"dec{level}")(torch.cat([up, skip], 1))
        return x


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class OddOneOutOutput:
    """What :class:`OddOneOutModel` returns.

    Attributes:
        object_logits: ``(ΣK,)`` one logit per box (higher = more anomalous).
        density: ``(B, 1, Z, Y, X)`` non-negative density (1/metre).
        rgb: ``(B, 3, Z, Y, X)``; projection: ``(B, d_β, Z, Y, X)`` the distilled features β.
        render: :class:`~anomalib_3d.render.volume.VolumeRender` of ``[rgb, β]`` into the render
            cameras (``features[:, :, :3]`` RGB, ``[:, :, 3:]`` β), or ``None``.
    """

    object_logits: Tensor
    density: Tensor
    rgb: Tensor
    projection: Tensor
    render: VolumeRender | None


class OddOneOutModel(nn.Module):
    """The Odd-One-Out network (CPU-sized defaults).

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.odd_one_out.settings.OddOneOutSettings`:
            the voxel grid, the 2D encoder, the 3D backbone, the heads and the attention); ``None`` =
            the defaults.
        **changes: switches applied on top of ``settings`` by name (``OddOneOutModel(feature_dim=8)``).

    Eq. 5's correspondences are the top-k dot products of β itself, the projector that the
    distillation trains (``match = β`` of the crops; no extra projection).
    """

    def __init__(self, settings: OddOneOutSettings | None = None, **changes: object) -> None:
        super().__init__()
        settings = settings or OddOneOutSettings()
        if changes:
            settings = settings.replace(**changes)
        self.settings = settings

        self.grid = VoxelGrid(settings.grid_shape, settings.voxel_size, settings.grid_center)
        self.crop_size = settings.crop_size
        self.crop_margin = settings.crop_margin
        feature_dim, projection_dim = settings.feature_dim, settings.projection_dim
        self.encoder = build_encoder(settings.encoder, feature_dim, settings.encoder_weights)
        # +1 input channel: the fraction of views that saw the voxel (0 outside every frustum), which
        # tells the network an unseen voxel from a seen one with zero features.
        self.volume_net = VolumeNet3D(feature_dim + 1, feature_dim, scales=settings.unet_scales)
        self.density_head = PointwiseMLP3D(feature_dim, 1, settings.head_layers, settings.head_hidden)
        self.rgb_head = PointwiseMLP3D(feature_dim, 3, settings.head_layers, settings.head_hidden)
        self.projection_head = PointwiseMLP3D(feature_dim, projection_dim, settings.projection_layers,
                                              settings.head_hidden)
        crop_channels = feature_dim + projection_dim + 1
        self.embed = nn.Linear(crop_channels, settings.token_dim)
        self.position = nn.Parameter(torch.zeros(1, self.crop_size**3, settings.token_dim))
        self.blocks = nn.ModuleList(
            CrossInstanceBlock(settings.token_dim, settings.heads, settings.attention, settings.topk)
            for _ in range(settings.num_blocks)
        )
        self.readout = ObjectReadout(settings.token_dim, self.crop_size, settings.readout)
        self.feature_stop_gradient = settings.feature_stop_gradient

    def build_volume(self, images: Tensor, intrinsics: Tensor, world_to_camera: Tensor) -> tuple[Tensor, ...]:
        """Views ``(B, M, 3, H, W)`` -> ``features, density, rgb, projection`` volumes."""
        batch, views, _, height, width = images.shape
        maps = self.encoder(images.flatten(0, 1))
        maps = maps.view(batch, views, *maps.shape[1:])
        volume, count = backproject_features(maps, intrinsics, world_to_camera, (height, width), self.grid)
        features = self.volume_net(torch.cat([volume, count / views], dim=1))
        density = F.softplus(self.density_head(features))
        rgb = torch.sigmoid(self.rgb_head(features))
        projection = self.projection_head(features)
        return features, density, rgb, projection

    def crop_tokens(self, features: Tensor, density: Tensor, projection: Tensor, boxes: Tensor,
                    object_batch: Tensor) -> tuple[Tensor, Tensor]:
        """Per-object crops as tokens ``(ΣK, T, d + d_β + 1)`` and their β part ``(ΣK, T, d_β)`` (Eq. 5's
        correspondence features); ``T = crop_size ** 3`` cells, x fastest."""
        volume = torch.cat([features, projection, density], dim=1)
        size = (self.crop_size,) * 3
        crops = crop_boxes(volume, boxes, self.grid, object_batch, size=size, margin=self.crop_margin)
        tokens = crops.flatten(2).transpose(1, 2)  # (K, T, C)
        beta = tokens[..., features.shape[1] : features.shape[1] + projection.shape[1]]
        return tokens, beta

    def classify(self, features: Tensor, density: Tensor, projection: Tensor, boxes: Tensor, object_batch: Tensor) -> Tensor:
        """Per-object logits ``(ΣK,)`` from the volumes and the boxes ``(ΣK, 2, 3)``."""
        tokens, match = self.crop_tokens(features, density, projection, boxes, object_batch)
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x, match, object_batch)
        return self.readout(x)

    def forward(
        self,
        images: Tensor,
        intrinsics: Tensor,
        world_to_camera: Tensor,
        boxes: Tensor,
        object_batch: Tensor,
        render_intrinsics: Tensor | None = None,
        render_world_to_camera: Tensor | None = None,
        render_size: Sequence[int] = (32, 32),
        num_samples: int = 64,
    ) -> OddOneOutOutput:
        """Build the volume from the source views, score every box, optionally render.

        Args:
            images: ``(B, M, 3, H, W)`` source views; intrinsics ``(B, M, 3, 3)`` (for ``H x W``);
                world_to_camera ``(B, M, 4, 4)``.
            boxes: ``(ΣK, 2, 3)`` world boxes; object_batch ``(ΣK,)``.
            render_intrinsics, render_world_to_camera: cameras to render into (``K`` for
                ``render_size``), or ``None`` to skip rendering.
        """
        features, density, rgb, projection = self.build_volume(images, intrinsics, world_to_camera)
        logits = self.classify(features, density, projection, boxes, object_batch)
        render = None
        if render_intrinsics is not None and render_world_to_camera is not None:
            render = render_volume(density, torch.cat([rgb, projection], dim=1), render_intrinsics,
                                   render_world_to_camera, render_size, self.grid, num_samples=num_samples,
                                   stratified=self.training,
                                   stop_gradient_channels=projection.shape[1] if self.feature_stop_gradient else 0)
        return OddOneOutOutput(object_logits=logits, density=density, rgb=rgb, projection=projection, render=render)
