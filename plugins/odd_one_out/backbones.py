"""The two pretrained backbones of Odd-One-Out (Bhunia et al., CVPR 2025, Sec. 4.2), loadable offline.

* :class:`ResNetFPNEncoder`, the 2D encoder: a torchvision ResNet-50 (layers 1-4) with a
  ``torchvision.ops.FeaturePyramidNetwork``, merged into one stride-4 map the way the official code
  does (Panoptic-FPN style: per level ``max(1, log2(stride) - 2)`` blocks of conv 3x3 + norm + ReLU,
  each followed by a 2x upsampling while coarser than stride 4, then the levels are summed).
* :class:`DinoV2Teacher`, the frozen distillation teacher: DINOv2 ViT-S/14 built with timm, with the
  optional fixed PCA of the paper (384 -> 128 channels).

Nothing is downloaded: weights come from a local file or the torch hub cache
(``torch.hub.get_dir()/checkpoints``); when neither exists a
:class:`~anomalib_3d.data.errors.MissingWeightsError` says which file to download and where to put it.
``weights=None`` gives randomly initialised networks (tests, smoke runs).

:func:`build_encoder` / :func:`build_teacher` choose between these and the CPU stand-ins
(:class:`SmallEncoder2D`, a frozen random small CNN).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalib_3d.data.errors import CorruptFileError, MissingWeightsError
from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.nn.weights import cached_checkpoint, hub_checkpoint_dir, load_state_dict_file


__all__ = [
    "DINOV2_VITS14_URL",
    "ENCODERS",
    "TEACHERS",
    "DinoV2Teacher",
    "FrozenSmallEncoder2D",
    "ResNetFPNEncoder",
    "SmallEncoder2D",
    "build_encoder",
    "build_teacher",
]

ENCODERS = ("small", "resnet50_fpn")
TEACHERS = ("random", "dinov2_vits14", "contrastive", "canonical")
DINOV2_VITS14_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DINOV2_PATCH = 14
_DINOV2_DIM = 384
_DINOV2_PRETRAIN_SIZE = 518  # the checkpoint's pos_embed covers 37 x 37 patches


def _load_error(exc: Exception) -> str:
    """``load_state_dict``'s multi-line error as one line (it names the offending keys)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= 400 else text[:400] + " ..."


def _weights_file(weights: str | Path, network: str, fix: str) -> Path:
    """The local weights file ``weights`` names (``~`` expanded); ``MissingWeightsError`` naming
    ``network`` and the ``fix`` when there is no such file."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"no {network} weights at this path.", path=path, fix=fix)
    return path


def _not_a_state_dict(network: str, detail: str, path: Path, fix: str) -> CorruptFileError:
    """The error for a weights file that is not ``network``'s state dict (``detail``: why not)."""
    return CorruptFileError(f"not a {network} state dict ({detail}).", path=path, fix=fix)


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    msg = f"norm must be 'batch' or 'group', got {kind!r}."
    raise ValueError(msg)


# ----------------------------------------------------------------------------------------------
# ResNet-50 + FPN


class _ResNet50Trunk(nn.Module):
    """torchvision's ResNet-50 without ``avgpool`` / ``fc``; parameter names are torchvision's."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stages(self) -> list[nn.Module]:
        """Stage 0 = stem, stages 1-4 = ``layer1..layer4`` (detectron2's ``FREEZE_AT`` numbering)."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` -> ``C2..C5`` (strides 4, 8, 16, 32; 256, 512, 1024, 2048 channels)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


def _resnet50_imagenet_files() -> list[tuple[str, str]]:
    """``(file name, url)`` of torchvision's ImageNet ResNet-50 weights, V1 first."""
    from torchvision.models import ResNet50_Weights

    return [(Path(w.url).name, w.url) for w in (ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2)]


def _cached_resnet50() -> Path | None:
    # Older torchvision releases used other hashes: any resnet50-*.pth after the known names.
    return cached_checkpoint(*(name for name, _ in _resnet50_imagenet_files()), "resnet50-*.pth")


class ResNetFPNEncoder(nn.Module):
    """The paper's 2D encoder: ResNet-50 + FPN merged into one stride-4 map.

    ``(N, 3, H, W)`` RGB in [0, 1] (ImageNet normalisation is applied inside) ->
    ``(N, out_channels, ceil(H / 4), ceil(W / 4))``. Every stride-2 layer of the ResNet gives
    ``ceil(size / 2)``, so P2 is ``ceil(H / 4)`` like
    :class:`SmallEncoder2D` (equal to ``H // 4`` when
    ``H`` is a multiple of 4); the coarser levels are upsampled to the exact size of the next finer
    level (not by a fixed factor 2), so any ``H, W`` works, multiples of 32 or not.

    Args:
        out_channels: channels of the merged map (paper / official code: 32).
        weights: ``"imagenet"``: torchvision's ImageNet ResNet-50 from the torch hub cache
            (``resnet50-0676ba61.pth`` (V1) or ``resnet50-11ad3fa6.pth`` (V2)); a local path to a
            torchvision ``resnet50`` state dict (``fc.*`` keys are ignored, every trunk key must
            match); ``None``: random init. The FPN and the merge head are always randomly
            initialised (they are trained, as in the paper).
        fpn_channels: FPN width (detectron2 / official: 256).
        norm: ``"batch"`` (official: BatchNorm in the FPN and the merge head) or ``"group"``
            (GroupNorm, for the tiny batches of CPU runs).
        frozen_stages: ResNet stages kept frozen (no gradient, BatchNorm in eval mode): 0 none,
            1 the stem, 2 stem + ``layer1`` (official: detectron2 ``FREEZE_AT=2``), up to 5.

    Raises:
        MissingWeightsError: ``"imagenet"`` and no cached file, or a local path that does not exist.
        CorruptFileError: the file is not a torchvision ResNet-50 state dict.
    """

    levels = ("p2", "p3", "p4", "p5")

    def __init__(
        self,
        out_channels: int = 32,
        weights: str | Path | None = "imagenet",
        fpn_channels: int = 256,
        norm: Literal["batch", "group"] = "batch",
        frozen_stages: int = 2,
    ) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        if not 0 <= frozen_stages <= 5:
            msg = f"frozen_stages must be in 0..5, got {frozen_stages}."
            raise ValueError(msg)
        _norm_layer(norm, fpn_channels)  # validates ``norm`` before anything is built
        self.trunk = _ResNet50Trunk()
        if weights is not None:
            self.load_trunk(weights)
        self.fpn = FeaturePyramidNetwork([256, 512, 1024, 2048], fpn_channels,
                                         norm_layer=lambda channels: _norm_layer(norm, channels))
        self.heads = nn.ModuleList()
        for level in range(len(self.levels)):  # level k has stride 4 * 2**k: max(1, k) conv blocks
            blocks = []
            for step in range(max(1, level)):
                conv = nn.Conv2d(fpn_channels if step == 0 else out_channels, out_channels, 3, padding=1, bias=False)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                blocks.append(nn.Sequential(conv, _norm_layer(norm, out_channels), nn.ReLU(inplace=True)))
            self.heads.append(nn.ModuleList(blocks))
        self.frozen_stages = int(frozen_stages)
        for stage in self.trunk.stages()[: self.frozen_stages]:
            stage.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train()

    def load_trunk(self, weights: str | Path) -> Path:
        """Load ImageNet ResNet-50 weights into the trunk (``"imagenet"``: the hub cache; else a path).

        Returns:
            the file that was loaded.
        """
        files = _resnet50_imagenet_files()
        fix_download = (
            f"download {files[0][1]} (or {files[1][1]}) into {hub_checkpoint_dir()}, or pass a local torchvision "
            "resnet50 state dict (encoder_weights=<file>); encoder_weights=None gives a random-init encoder"
        )
        if isinstance(weights, str) and weights == "imagenet":
            path = _cached_resnet50()
            if path is None:
                raise MissingWeightsError(
                    "the ResNet-50 + FPN encoder needs torchvision's ImageNet ResNet-50 weights, and none are in "
                    "the torch hub cache (nothing is downloaded).",
                    path=hub_checkpoint_dir() / files[0][0],
                    fix=fix_download,
                )
        else:
            path = _weights_file(weights, "ResNet-50", fix_download)
        fix_corrupt = f"give a torchvision resnet50 state dict, e.g. {files[0][1]}"
        state = load_state_dict_file(path, "ResNet-50 weights", fix_corrupt)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not part of the trunk
        try:
            self.trunk.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise _not_a_state_dict("torchvision ResNet-50", _load_error(exc), path, fix_corrupt) from exc
        return path

    def train(self, mode: bool = True) -> ResNetFPNEncoder:
        """As ``nn.Module.train``, but the frozen stages keep their BatchNorm statistics (eval mode)."""
        super().train(mode)
        for stage in self.trunk.stages()[: self.frozen_stages]:
            stage.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, out_channels, ceil(H / 4), ceil(W / 4))``."""
        pyramid = self.fpn(OrderedDict(zip(self.levels, self.trunk((images - self.mean) / self.std), strict=True)))
        sizes = [pyramid[name].shape[-2:] for name in self.levels]
        merged = None
        for level, (name, head) in enumerate(zip(self.levels, self.heads, strict=True)):
            x = pyramid[name]
            for step, block in enumerate(head):
                x = block(x)
                if level - step > 0:  # one level finer after every block, until stride 4
                    x = F.interpolate(x, size=sizes[level - step - 1], mode="bilinear", align_corners=False)
            merged = x if merged is None else merged + x
        return merged


# ----------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14 teacher


def _official_to_timm_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Unwrap the containers DINOv2 checkpoints come in; flatten ``block_chunks``.

    Handles ``{"model" | "state_dict" | "teacher": {...}}``, ``backbone.`` / ``module.`` prefixes
    (training checkpoints) and chunked blocks ``blocks.<chunk>.<i>.`` (``block_chunks > 0``). The
    remaining conversion (``mask_token``, SwiGLU names, ``pos_embed`` size) is timm's own
    ``checkpoint_filter_fn``.
    """
    for key in ("teacher", "model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    out = {}
    for key, value in state.items():
        name = key.removeprefix("module.").removeprefix("backbone.")
        out[re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", name)] = value
    return out


class DinoV2Teacher(nn.Module):
    """Frozen DINOv2 ViT-S/14 patch features (the paper's distillation target).

    ``(N, 3, H, W)`` RGB in [0, 1] -> ``(N, C, h, w)`` with ``C = 384`` (or ``output_dim`` after the
    PCA) and ``(h, w)`` the patch grid: the images are resized (bilinear) to ``image_size`` if given,
    otherwise to the nearest multiple of 14 per side (``h = floor(H / 14 + 0.5)``, at least 1), then
    ImageNet-normalised. The features are the final-norm patch tokens (DINOv2's
    ``x_norm_patchtokens``). Position embeddings are resampled like DINOv2's own
    ``interpolate_pos_encoding`` (bicubic, scale factor ``(h + 0.1) / 37``, no antialiasing), so the
    features equal those of ``torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")``.

    Always frozen and in eval mode (``train()`` is a no-op), forward under ``no_grad``.

    Args:
        weights: ``"hub"``: ``torch.hub.get_dir()/checkpoints/dinov2_vits14_pretrain.pth`` (where
            ``torch.hub`` puts :data:`DINOV2_VITS14_URL`); a local file in the official
            facebookresearch format (``dinov2_vits14_pretrain.pth``) or timm's format (``.pth`` or
            ``.safetensors``); ``None``: random init (tests only).
        output_dim: ``None`` keeps the 384 channels; otherwise a fixed PCA to ``output_dim``
            channels, fitted once with :meth:`fit_pca` (paper: 128; the official code keeps 384).
        image_size: resize every input to this ``(H, W)`` (multiples of 14) instead; the official
            code uses ``14 x`` the render size (448 x 448 for 32 x 32 renders).
        normalize: ImageNet-normalise the input (DINOv2's training preprocessing). ``False``
            reproduces the official Odd-One-Out code, which feeds [0, 1] images.

    Raises:
        MissingWeightsError: ``"hub"`` and no cached file, or a local path that does not exist.
        CorruptFileError: the file is not a DINOv2 ViT-S/14 state dict.
    """

    def __init__(
        self,
        weights: str | Path | None = "hub",
        output_dim: int | None = None,
        image_size: int | Sequence[int] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        import timm

        if output_dim is not None and not 1 <= output_dim <= _DINOV2_DIM:
            msg = f"output_dim must be in 1..{_DINOV2_DIM} or None, got {output_dim}."
            raise ValueError(msg)
        if image_size is not None:
            image_size = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(s) for s in image_size)
            if len(image_size) != 2 or any(s < _DINOV2_PATCH or s % _DINOV2_PATCH for s in image_size):
                msg = f"image_size must be (H, W) multiples of {_DINOV2_PATCH}, got {image_size}."
                raise ValueError(msg)
        self.image_size = image_size
        self.normalize = bool(normalize)
        self.output_dim = output_dim
        self.vit = timm.create_model(
            "vit_small_patch14_dinov2", pretrained=False, num_classes=0,
            img_size=_DINOV2_PRETRAIN_SIZE, dynamic_img_size=True,
        )
        if weights is not None:
            self.load_weights(weights)
        if output_dim is not None:
            self.register_buffer("pca_mean", torch.zeros(_DINOV2_DIM))
            self.register_buffer("pca_basis", torch.zeros(_DINOV2_DIM, output_dim))
            self.register_buffer("pca_variance", torch.zeros(output_dim))
            self.register_buffer("pca_fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    # -- weights ------------------------------------------------------------------------------
    def load_weights(self, weights: str | Path) -> Path:
        """Load DINOv2 ViT-S/14 weights (``"hub"``: the torch hub cache; else a local file).

        Returns:
            the file that was loaded.
        """
        from timm.models.vision_transformer import checkpoint_filter_fn

        destination = hub_checkpoint_dir() / Path(DINOV2_VITS14_URL).name
        fix_download = (
            f"download {DINOV2_VITS14_URL} to {destination}, or pass a local DINOv2 ViT-S/14 checkpoint "
            "(teacher_weights=<file>); teacher_weights=None gives a random-init teacher (tests only)"
        )
        if isinstance(weights, str) and weights == "hub":
            path = destination
            if not path.is_file():
                raise MissingWeightsError(
                    "the DINOv2 ViT-S/14 teacher needs its pretrained weights, and they are not in the torch hub "
                    "cache (nothing is downloaded).",
                    path=path, fix=fix_download,
                )
        else:
            path = _weights_file(weights, "DINOv2 ViT-S/14", fix_download)
        fix_corrupt = f"give dinov2_vits14_pretrain.pth ({DINOV2_VITS14_URL}) or a timm vit_small_patch14_dinov2 state dict"
        state = load_state_dict_file(path, "DINOv2 weights", fix_corrupt)
        try:
            state = checkpoint_filter_fn(_official_to_timm_names(state), self.vit)
            self.vit.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {_load_error(exc)}"
            raise _not_a_state_dict("DINOv2 ViT-S/14", detail, path, fix_corrupt) from exc
        return path

    def train(self, mode: bool = True) -> DinoV2Teacher:
        """Always in eval mode: the teacher is frozen."""
        del mode
        return super().train(False)

    # -- features -----------------------------------------------------------------------------
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an ``H x W`` input."""
        if self.image_size is not None:
            return self.image_size[0] // _DINOV2_PATCH, self.image_size[1] // _DINOV2_PATCH
        return tuple(max(1, math.floor(s / _DINOV2_PATCH + 0.5)) for s in (height, width))

    def _position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """``(1, 1 + h w, 384)``: DINOv2's ``interpolate_pos_encoding`` (offset 0.1, no antialias)."""
        pos = self.vit.pos_embed
        prefix, patches = pos[:, :1], pos[:, 1:]
        side = math.isqrt(patches.shape[1])
        if (grid_h, grid_w) == (side, side):
            return pos
        grid = patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic",
                             align_corners=False, antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(pos.dtype)
        return torch.cat([prefix, grid], dim=1)

    @torch.no_grad()
    def patch_tokens(self, images: Tensor) -> Tensor:
        """The 384-channel DINOv2 map (before the PCA): ``(N, 3, H, W)`` -> ``(N, 384, h, w)``."""
        grid_h, grid_w = self.grid_size(*images.shape[-2:])
        size = (grid_h * _DINOV2_PATCH, grid_w * _DINOV2_PATCH)
        x = images.float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.normalize:
            x = (x - self.mean) / self.std
        x = self.vit.patch_embed(x)  # (N, h, w, 384): dynamic_img_size gives NHWC
        x = x.reshape(x.shape[0], grid_h * grid_w, -1)
        x = torch.cat([self.vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._position_embedding(grid_h, grid_w)
        x = self.vit.norm_pre(self.vit.patch_drop(self.vit.pos_drop(x)))
        x = self.vit.norm(self.vit.blocks(x))
        tokens = x[:, self.vit.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)

    @property
    def needs_fit(self) -> bool:
        """True while the PCA projection is requested but not fitted yet."""
        return self.output_dim is not None and not bool(self.pca_fitted)

    @torch.no_grad()
    def fit_pca(self, images: Tensor | Iterable[Tensor], batch_size: int = 16) -> Tensor:
        """Fit the fixed PCA projection on the patch tokens of ``images``.

        The mean and covariance (float64) are accumulated batch by batch and summed over
        distributed ranks, so every rank gets the same projection. The basis holds the top
        ``output_dim`` eigenvectors of the covariance, by decreasing variance; each is signed so
        that its largest-magnitude entry is positive (deterministic).

        Args:
            images: ``(N, 3, H, W)`` in [0, 1], or an iterable of such batches (e.g. the training
                views of a few scenes, flattened); moved to the teacher's device.
            batch_size: images per forward when ``images`` is one tensor.

        Returns:
            ``(output_dim,)`` the variance of each output channel over the fitting tokens.
        """
        if self.output_dim is None:
            msg = "fit_pca needs output_dim; this teacher keeps all 384 channels."
            raise RuntimeError(msg)
        batches = images.split(batch_size) if isinstance(images, Tensor) else images
        device = self.pca_mean.device
        count = torch.zeros(1, dtype=torch.float64, device=device)
        total = torch.zeros(_DINOV2_DIM, dtype=torch.float64, device=device)
        outer = torch.zeros(_DINOV2_DIM, _DINOV2_DIM, dtype=torch.float64, device=device)
        for batch in batches:
            tokens = self.patch_tokens(batch.to(device)).flatten(2).transpose(1, 2).reshape(-1, _DINOV2_DIM).double()
            count += tokens.shape[0]
            total += tokens.sum(0)
            outer += tokens.T @ tokens
        count, total, outer = (all_gather_cat(t.unsqueeze(0)).sum(0) for t in (count, total, outer))
        n = float(count.item())
        if n < 2:
            msg = "fit_pca needs at least two patch tokens (give more or larger images)."
            raise ValueError(msg)
        mean = total / n
        covariance = (outer - n * torch.outer(mean, mean)) / (n - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        order = torch.arange(_DINOV2_DIM - 1, _DINOV2_DIM - 1 - self.output_dim, -1, device=device)
        basis = eigenvectors[:, order]
        pivot = basis.abs().argmax(dim=0)
        basis = basis * torch.sign(basis[pivot, torch.arange(self.output_dim, device=device)])
        self.pca_mean.copy_(mean.to(self.pca_mean.dtype))
        self.pca_basis.copy_(basis.to(self.pca_basis.dtype))
        self.pca_variance.copy_(eigenvalues[order].clamp_min(0).to(self.pca_variance.dtype))
        self.pca_fitted.fill_(True)
        return self.pca_variance.clone()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, 384 or output_dim, h, w)`` (see the class docstring)."""
        tokens = self.patch_tokens(images)
        if self.output_dim is None:
            return tokens
        if not bool(self.pca_fitted):
            msg = (f"DinoV2Teacher(output_dim={self.output_dim}) has no PCA yet: call teacher.fit_pca(images) on "
                   "training images first (or load a checkpoint that holds it).")
            raise RuntimeError(msg)
        centred = tokens - self.pca_mean.view(1, -1, 1, 1)
        return torch.einsum("nchw,ck->nkhw", centred, self.pca_basis)


# ----------------------------------------------------------------------------------------------
# factories


class SmallEncoder2D(nn.Module):
    """A small stride-4 CNN (CPU preset standing in for ResNet-50 + FPN): ``(N, 3, H, W) -> (N, C, H/4, W/4)``."""

    def __init__(self, out_channels: int = 32, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GroupNorm(4, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(4, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1),
        )
        # ImageNet statistics, as a pretrained backbone would expect.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)


class FrozenSmallEncoder2D(SmallEncoder2D):
    """A randomly initialised, frozen :class:`SmallEncoder2D` (``teacher: random``): a teacher with
    nothing to teach beyond local colour and edges, kept as the floor of the teacher comparison."""

    def __init__(self, out_channels: int = 32, width: int = 32) -> None:
        super().__init__(out_channels, width)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenSmallEncoder2D:
        """Always in eval mode: the teacher is frozen."""
        del mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return super().forward(images)


def _no_weights(kind: str, name: str, weights: str | Path | None) -> None:
    if weights not in (None, "default"):
        msg = f"the {kind} {name!r} has no pretrained weights; got weights={weights!r} (use None)."
        raise ValueError(msg)


def build_encoder(
    name: Literal["small", "resnet50_fpn"],
    out_channels: int,
    weights: str | Path | None = "default",
) -> nn.Module:
    """The 2D encoder ``(N, 3, H, W) in [0, 1] -> (N, out_channels, ceil(H / 4), ceil(W / 4))``.

    Args:
        name: ``"small"`` (:class:`SmallEncoder2D`, the CPU preset) or ``"resnet50_fpn"``
            (:class:`ResNetFPNEncoder`, the paper).
        out_channels: channels of the map (paper: 32).
        weights: ``"default"`` (``"imagenet"`` for ``resnet50_fpn``, nothing for ``small``),
            ``"imagenet"``, a local file, or ``None`` (random init).
    """
    if name == "small":
        _no_weights("encoder", name, weights)
        return SmallEncoder2D(out_channels)
    if name == "resnet50_fpn":
        return ResNetFPNEncoder(out_channels, "imagenet" if weights == "default" else weights)
    msg = f"unknown encoder {name!r}; choose one of {ENCODERS}."
    raise ValueError(msg)


def build_teacher(
    name: Literal["random", "dinov2_vits14", "contrastive", "canonical"],
    out_dim: int,
    weights: str | Path | None = "default",
    image_size: int | Sequence[int] | None = None,
) -> nn.Module:
    """The frozen distillation teacher ``(N, 3, H, W) in [0, 1] -> (N, out_dim, h, w)``.

    Every teacher returned has no trainable parameter and stays in eval mode under ``.train()``.

    Args:
        name: ``"random"`` (a frozen random :class:`SmallEncoder2D`, stride 4: the CPU stand-in),
            ``"dinov2_vits14"`` (:class:`DinoV2Teacher`, stride 14; PCA to ``out_dim`` unless
            ``out_dim == 384``; call its ``fit_pca`` before use when ``needs_fit``),
            ``"contrastive"`` (:class:`~.teachers.ContrastiveTeacher`, trained on the training
            renders by its ``fit`` when ``needs_fit``) or ``"canonical"`` (:class:`~.teachers.CanonicalTeacher`,
            privileged targets from depth and object poses; ``scene_targets`` instead of a forward).
        out_dim: channels of the teacher's map (= the width of the rendered features β).
        weights: ``"default"`` (``"hub"`` for DINOv2; none for the others), ``"hub"``, a local file
            (DINOv2, or a state dict saved from a fitted contrastive teacher), or ``None`` (random).
        image_size: DINOv2 only: resize inputs to this size (multiples of 14; official: 14 x the
            render size).
    """
    if name == "random":
        _no_weights("teacher", name, weights)
        if image_size is not None:
            msg = "image_size applies to the 'dinov2_vits14' teacher only."
            raise ValueError(msg)
        return FrozenSmallEncoder2D(out_dim)
    if name == "dinov2_vits14":
        output_dim = None if out_dim == _DINOV2_DIM else out_dim
        return DinoV2Teacher("hub" if weights == "default" else weights, output_dim, image_size)
    if name in ("contrastive", "canonical"):
        from .teachers import CanonicalTeacher, ContrastiveTeacher  # noqa: PLC0415 - teachers imports torch_model

        if image_size is not None:
            msg = "image_size applies to the 'dinov2_vits14' teacher only."
            raise ValueError(msg)
        if name == "canonical":
            _no_weights("teacher", name, weights)
            return CanonicalTeacher(out_dim)
        teacher = ContrastiveTeacher(out_dim)
        if weights not in (None, "default"):
            path = Path(weights)
            fix = "pass the file saved from a fitted teacher (torch.save(model.teacher.state_dict(), path)), or None to fit one"
            if not path.is_file():
                raise MissingWeightsError("no contrastive-teacher weights at this path.", path=path, fix=fix)
            state = load_state_dict_file(path, "the contrastive teacher's weights", fix)
            try:
                teacher.load_state_dict(state)
            except RuntimeError as exc:
                raise CorruptFileError(f"not a contrastive teacher of width {out_dim}: {_load_error(exc)}", path=path,
                                       fix=fix) from exc
            teacher.fitted.fill_(True)
        return teacher
    msg = f"unknown teacher {name!r}; choose one of {TEACHERS}."
    raise ValueError(msg)
