"""Point-MAE (Pang et al., "Masked Autoencoders for Point Cloud Self-supervised Learning", ECCV
2022): patching, the mini-PointNet patch tokenizer, the transformer encoder / masked decoder, and
loading of its released ``pretrain.pth``.

Data flow::

    clouds (ΣN, 3) ──prepare_clouds: centre, unit sphere, subsample to num_points──► (ΣM, 3)
        ──group_into_patches: centres (FPS / GPS / random / voxel) + kNN──► patches (B, G, K, 3)
        ──PatchTokenizer──► tokens (B, G, C) ──encoder (+ centre embedding)──► features
        ──decoder with mask tokens──► predicted points of the masked patches (B, M, K, 3)

Sub-module names mirror the roles in Point-MAE's checkpoints so that
:func:`map_point_mae_state_dict` carries their weights over by name and shape.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from anomalib_3d.errors import CorruptFileError, MissingWeightsError
from anomalib_3d.nn.transformer import TransformerStack
from anomalib_3d.nn.weights import load_state_dict_file
from anomalib_3d.ops import Patches, farthest_point_sample, group_patches, random_sample

__all__ = [
    "POINT_MAE_PREFIXES",
    "POINT_MAE_URL",
    "PatchTokenizer",
    "PointMAE",
    "PreparedClouds",
    "group_into_patches",
    "map_point_mae_state_dict",
    "position_embedding",
    "prepare_clouds",
    "read_point_mae_checkpoint",
    "take_patches",
]

logger = logging.getLogger(__name__)

POINT_MAE_URL = "https://github.com/Pang-Yatian/Point-MAE/releases (file pretrain.pth)"


# --------------------------------------------------------------------------------------------
# patching
# --------------------------------------------------------------------------------------------
class PreparedClouds(NamedTuple):
    """Network view of a batch: normalised, subsampled clouds.

    Attributes:
        points: ``(ΣM, 3)`` normalised network points.
        batch: ``(ΣM,) long`` cloud of each network point.
        source_index: ``(ΣM,) long`` index of each network point into the input points.
    """

    points: torch.Tensor
    batch: torch.Tensor
    source_index: torch.Tensor


def _seeded_or(generator: torch.Generator | None, stochastic: bool, seed: int) -> torch.Generator | None:
    # Deterministic draws use a fresh generator seeded with ``seed`` for every call, so a cloud is
    # prepared the same way whatever batch it comes in.
    return generator if stochastic else torch.Generator().manual_seed(seed)


def prepare_clouds(
    points: torch.Tensor,
    batch: torch.Tensor,
    num_points: int,
    *,
    subsample: str = "fps",
    stochastic: bool = False,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> PreparedClouds:
    """Normalise every cloud (centroid at 0, farthest point at radius 1) and subsample it.

    Args:
        points: ``(ΣN, 3)`` input points.
        batch: ``(ΣN,) long`` sorted cloud ids.
        num_points: points kept per cloud (smaller clouds are used whole).
        subsample: ``"fps"`` or ``"random"``.
        stochastic: random subsampling (random FPS start / random draw from ``generator``);
            otherwise deterministic (FPS from the first point, or a random draw seeded with ``seed``).
        generator: CPU random source of the stochastic draws.
        seed: seed of the deterministic random draw.

    Returns:
        :class:`PreparedClouds`.
    """
    num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_clouds)
    points = points.float()
    centroid = torch.zeros(num_clouds, 3, dtype=points.dtype, device=points.device).index_add_(0, batch, points)
    centroid = centroid / counts.unsqueeze(1).to(points.dtype)
    centred = points - centroid[batch]
    radius = torch.zeros(num_clouds, dtype=points.dtype, device=points.device).scatter_reduce_(
        0, batch, centred.norm(dim=1), reduce="amax", include_self=True
    )
    normalised = centred / radius.clamp_min(1e-12)[batch].unsqueeze(1)

    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
    keep = []
    for b in range(num_clouds):
        lo, hi = ptr[b], ptr[b + 1]
        if hi - lo <= num_points:
            keep.append(torch.arange(lo, hi, device=points.device))
            continue
        cloud = normalised[lo:hi]
        if subsample == "random":
            local = random_sample(cloud, num_points, generator=_seeded_or(generator, stochastic, seed))
        else:
            local = farthest_point_sample(
                cloud, num_points, random_start=stochastic, generator=generator if stochastic else None
            )
        keep.append(local.to(points.device) + lo)
    source_index = torch.cat(keep)
    return PreparedClouds(normalised[source_index], batch[source_index], source_index)


def group_into_patches(
    prepared: PreparedClouds,
    num_groups: int,
    group_size: int,
    *,
    sampler: str = "fps",
    stochastic: bool = False,
    generator: torch.Generator | None = None,
    seed: int = 0,
    **gps_options: object,
) -> Patches:
    """Split the network points into ``G`` patches of ``K`` points (:func:`anomalib_3d.ops.group_patches`).

    Args:
        prepared: output of :func:`prepare_clouds`.
        num_groups, group_size: ``G`` and ``K``.
        sampler: centre sampler (``"fps"``, ``"gps"``, ``"random"``, ``"voxel"``).
        stochastic: draw ``fps`` / ``random`` centres at random from ``generator``; otherwise FPS
            starts at the first point and random centres are drawn with ``seed``.
        generator: CPU random source of the stochastic draws.
        seed: seed of the deterministic random draw.
        **gps_options: options of the ``gps`` sampler (``k``, ``threshold``, ``salient_density``).

    Returns:
        :class:`anomalib_3d.ops.Patches`.
    """
    options: dict[str, object] = {}
    if sampler == "gps":
        options.update(gps_options)
    elif sampler == "fps":
        options["random_start"] = stochastic
    return group_patches(
        prepared.points,
        num_groups,
        group_size,
        prepared.batch,
        sampler=sampler,
        generator=_seeded_or(generator, stochastic, seed) if sampler in ("fps", "random") else None,
        **options,
    )


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------
class PatchTokenizer(nn.Module):
    """Mini-PointNet patch embedding: one token per point patch.

    Shared per-point MLP → max-pool (patch descriptor) → the descriptor is concatenated back to
    every point → second shared MLP → max-pool. The shared MLPs are ``nn.Linear`` on flattened
    points (several times faster than 1×1 convolutions on CPU, in backward especially); Point-MAE's
    1×1-convolution weights load into them after dropping the kernel axis.

    Args:
        embed_dim: token width ``C``.
        width: width ``W`` of the per-point features (Point-MAE: 256): the first MLP is
            3 → W/2 → W, the second 2W → 2W → C.
    """

    def __init__(self, embed_dim: int, width: int = 256) -> None:
        super().__init__()
        if width % 2:
            msg = f"tokenizer width must be even, got {width}."
            raise ValueError(msg)
        self.embed_dim = embed_dim
        self.width = width
        self.first_conv = nn.Sequential(
            nn.Linear(3, width // 2),
            nn.BatchNorm1d(width // 2),
            nn.ReLU(inplace=True),
            nn.Linear(width // 2, width),
        )
        self.second_conv = nn.Sequential(
            nn.Linear(2 * width, 2 * width),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(inplace=True),
            nn.Linear(2 * width, embed_dim),
        )

    def forward(self, neighborhoods: torch.Tensor) -> torch.Tensor:
        """Tokens of patches.

        Args:
            neighborhoods: ``(B, G, K, 3)`` patch points relative to their centre.

        Returns:
            ``(B, G, C)`` tokens.
        """
        batch, groups, size, _ = neighborhoods.shape
        patches = batch * groups
        width = self.width
        x = self.first_conv(neighborhoods.reshape(patches * size, 3)).view(patches, size, width)
        pooled = x.max(dim=1, keepdim=True).values
        x = torch.cat([pooled.expand(-1, size, -1), x], dim=2)  # (BG, K, 2W)
        x = self.second_conv(x.view(patches * size, 2 * width)).view(patches, size, self.embed_dim)
        return x.max(dim=1).values.view(batch, groups, self.embed_dim)


def position_embedding(embed_dim: int) -> nn.Sequential:
    """MLP mapping a patch centre ``(…, 3)`` to ``(…, C)``."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, embed_dim))


def take_patches(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for ``x (B, G, ...)`` and ``index (B, M) long``: ``(B, M, ...)``."""
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    return x[rows, index]


class PointMAE(nn.Module):
    """Point-MAE's network: patch tokenizer, encoder over the visible patches, decoder that predicts
    the points of the masked patches from mask tokens.

    Weights are drawn in construction order, then every ``Linear`` weight and the mask token are
    re-drawn from a truncated normal (std 0.02): a seed set before construction fixes the network.

    Args:
        embed_dim: token width ``C`` (Point-MAE: 384).
        tokenizer_width: per-point feature width of the mini-PointNet (Point-MAE: 256).
        encoder_depth, decoder_depth: transformer blocks (Point-MAE: 12, 4).
        num_heads: attention heads (Point-MAE: 6).
        mlp_ratio: hidden width of the block MLPs relative to ``C``.
        drop_path_rate: stochastic depth, rising linearly over each stack's blocks.
        group_size: points ``K`` per patch that the decoder predicts.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        tokenizer_width: int = 256,
        encoder_depth: int = 12,
        decoder_depth: int = 4,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        group_size: int = 32,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.group_size = group_size
        self.tokenizer = PatchTokenizer(embed_dim, tokenizer_width)
        self.encoder_pos_embed = position_embedding(embed_dim)
        self.encoder = TransformerStack(embed_dim, encoder_depth, num_heads, mlp_ratio, drop_path_rate)
        self.encoder_norm = nn.LayerNorm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder_pos_embed = position_embedding(embed_dim)
        self.decoder = TransformerStack(embed_dim, decoder_depth, num_heads, mlp_ratio, drop_path_rate)
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.reconstruction_head = nn.Linear(embed_dim, 3 * group_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def encoder_outputs(
        self, neighborhoods: torch.Tensor, centers: torch.Tensor, num_blocks: int | None = None
    ) -> list[torch.Tensor]:
        """The patch tokens, then the output of each of the first ``num_blocks`` encoder blocks (all
        by default; 0: the tokens only), before the final norm; each ``(B, G, C)``.

        Args:
            neighborhoods: ``(B, G, K, 3)`` patches (local coordinates).
            centers: ``(B, G, 3)`` patch centres.
            num_blocks: encoder blocks to run.
        """
        tokens = self.tokenizer(neighborhoods)
        if num_blocks == 0:
            return [tokens]
        return [tokens, *self.encoder(tokens, self.encoder_pos_embed(centers), num_blocks)]

    def encode(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(B, T, C)`` (normalised) of the given (visible) patches."""
        tokens = self.tokenizer(neighborhoods)
        return self.encoder_norm(self.encoder(tokens, self.encoder_pos_embed(centers))[-1])

    def reconstruct(
        self, neighborhoods: torch.Tensor, centers: torch.Tensor, masked_index: torch.Tensor
    ) -> torch.Tensor:
        """Predict the masked patches from the visible ones.

        Args:
            neighborhoods: ``(B, G, K, 3)`` patches (local coordinates).
            centers: ``(B, G, 3)`` patch centres.
            masked_index: ``(B, M) long`` masked patches of each cloud.

        Returns:
            ``(B, M, K, 3)`` predicted points of the masked patches (local coordinates).
        """
        batch, groups = centers.shape[:2]
        visible = torch.ones(batch, groups, dtype=torch.bool, device=centers.device)
        visible[torch.arange(batch, device=centers.device).unsqueeze(1), masked_index] = False
        visible_index = visible.nonzero()[:, 1].view(batch, groups - masked_index.shape[1])
        encoded = self.encode(take_patches(neighborhoods, visible_index), take_patches(centers, visible_index))
        num_masked = masked_index.shape[1]
        tokens = torch.cat([encoded, self.mask_token.expand(batch, num_masked, -1)], dim=1)
        centers_all = torch.cat([take_patches(centers, visible_index), take_patches(centers, masked_index)], dim=1)
        decoded = self.decoder(tokens, self.decoder_pos_embed(centers_all))[-1]
        masked_tokens = self.decoder_norm(decoded[:, -num_masked:])  # (B, M, C)
        predicted = self.reconstruction_head(masked_tokens)  # (B, M, 3K), point-major as Point-MAE
        return predicted.reshape(batch, num_masked, self.group_size, 3)

    def load_point_mae(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load Point-MAE pretrained weights (its released ``pretrain.pth``) by name and shape.

        Args:
            path: local file; a dict with ``base_model`` (or ``model`` / ``state_dict``) holding
                Point-MAE keys, or that state dict itself.

        Returns:
            ``(loaded, skipped)``: keys of this module (as in its ``state_dict``) that received
            weights; Point-MAE keys not used, with the reason.

        Raises:
            MissingWeightsError: the file does not exist.
            CorruptFileError: the file is not a readable checkpoint or holds no Point-MAE weights.
        """
        state = read_point_mae_checkpoint(path)
        mapped, loaded, skipped = map_point_mae_state_dict(state, self.state_dict())
        if not loaded:
            raise CorruptFileError(
                "no tensor of the checkpoint matches this Point-MAE network (names or shapes).",
                path=Path(path).expanduser(),
                fix="use Point-MAE's pretrain.pth and an embed_dim equal to its trans_dim (384)",
            )
        self.load_state_dict(mapped, strict=False)
        logger.info("Loaded %d Point-MAE tensors from %s; skipped %d: %s", len(loaded), path, len(skipped), skipped)
        return loaded, skipped


# --------------------------------------------------------------------------------------------
# Point-MAE checkpoints
# --------------------------------------------------------------------------------------------
#: Point-MAE ``base_model`` key prefix → :class:`PointMAE` key prefix.
POINT_MAE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("MAE_encoder.encoder.", "tokenizer."),
    ("MAE_encoder.pos_embed.", "encoder_pos_embed."),
    ("MAE_encoder.blocks.blocks.", "encoder.blocks."),
    ("MAE_encoder.norm.", "encoder_norm."),
    ("MAE_decoder.blocks.", "decoder.blocks."),
    ("MAE_decoder.norm.", "decoder_norm."),
    ("decoder_pos_embed.", "decoder_pos_embed."),
    ("increase_dim.0.", "reconstruction_head."),
    ("mask_token", "mask_token"),
)


def read_point_mae_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The Point-MAE state dict held by ``path`` (unwrapped from ``base_model`` / ``model`` /
    ``state_dict`` when nested).

    Raises:
        MissingWeightsError: the file does not exist.
        CorruptFileError: the file is not a readable checkpoint or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            "the Point-MAE pretrained checkpoint is not there.",
            path=path,
            fix=f"download Point-MAE's pretrain.pth from {POINT_MAE_URL} and save it at this path, "
            "or set pretrained_path: null to train from scratch",
        )
    checkpoint = load_state_dict_file(
        path,
        "the Point-MAE checkpoint",
        "re-download pretrain.pth, or re-save it as torch.save({'base_model': state_dict}, path)",
    )
    for key in ("base_model", "model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def map_point_mae_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Translate a Point-MAE ``base_model`` state dict to :class:`PointMAE` names, keeping matching shapes.

    Args:
        source: Point-MAE keys (``MAE_encoder.encoder.first_conv.0.weight``, ...); a leading
            ``module.`` (DataParallel) is ignored.
        target: the receiving model's ``state_dict()`` (names and shapes to match).

    Returns:
        ``(mapped, loaded, skipped)``: the renamed tensors to load, the target keys that
        received weights, and ``"<point-mae key>: <reason>"`` for every source key not used
        (no counterpart, or a shape that differs, e.g. ``increase_dim`` when the patch size is
        not Point-MAE's 32).
    """
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for raw_key, value in source.items():
        key = raw_key.removeprefix("module.")
        new_key = None
        for old, new in POINT_MAE_PREFIXES:
            if key.startswith(old):
                new_key = new + key[len(old) :]
                break
        if new_key is None or new_key not in target:
            skipped.append(f"{raw_key}: no counterpart")
            continue
        if not isinstance(value, torch.Tensor):
            skipped.append(f"{raw_key}: not a tensor")
            continue
        if value.dim() == 3 and value.shape[-1] == 1 and target[new_key].dim() == 2:
            value = value[..., 0]  # Point-MAE 1x1 convolution → our Linear
        if tuple(value.shape) != tuple(target[new_key].shape):
            skipped.append(f"{raw_key}: shape {tuple(value.shape)} != {tuple(target[new_key].shape)}")
            continue
        mapped[new_key] = value
    return mapped, sorted(mapped), skipped
