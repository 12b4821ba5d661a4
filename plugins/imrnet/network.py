"""IMRNet's Point-patch Mask Reconstruction network (PMR): Point-MAE patching and backbone
(:mod:`anomalib_3d.nn.point_mae`, the paper's Sec. 5.3: "directly adopted from Point-MAE"), the
masked-reconstruction training loss, the iterative test-time reconstruction (Alg. 1) and the fused
decoder features of the DFC feature score (Eq. 16-17).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_3d.errors import InvalidPointsError
from anomalib_3d.nn.point_mae import PointMAE, PreparedClouds, group_into_patches, prepare_clouds, take_patches
from anomalib_3d.ops import Patches

from .loss import masked_patch_chamfer_loss
from .settings import IMRNetSettings


class MaskReconstructionNetwork(PointMAE):
    """PMR: Point-MAE over GPS patches, trained to rebuild masked patches, run iteratively at test time.

    Args:
        settings: the switches (:class:`~.settings.IMRNetSettings`, checked there); this class reads
            the Point-MAE sizes here and the rest through :meth:`apply_settings`.
    """

    def __init__(self, settings: IMRNetSettings) -> None:
        settings.coverage_warning(stacklevel=3)  # points at the caller of IMRNetModel
        super().__init__(
            embed_dim=settings.embed_dim,
            tokenizer_width=settings.tokenizer_width,
            encoder_depth=settings.encoder_depth,
            decoder_depth=settings.decoder_depth,
            num_heads=settings.num_heads,
            mlp_ratio=settings.mlp_ratio,
            drop_path_rate=settings.drop_path_rate,
            group_size=settings.group_size,
        )
        self._patch_cache: dict[tuple[str, int, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self.feature_layers = settings.feature_layers

    def apply_settings(self, settings: IMRNetSettings) -> None:
        """Read the network's run-time switches (sampling, masks, iterations, seed) from ``settings``."""
        self.num_points = settings.num_points
        self.num_groups = settings.num_groups
        self.test_num_groups = settings.test_num_groups
        self.sampler = settings.sampler
        self.gps_kwargs = {"k": settings.gps_k, "threshold": settings.gps_threshold,
                           "salient_density": settings.gps_salient_density}
        self.subsample = settings.subsample
        self.mask_ratio = settings.mask_ratio
        self.num_masked = settings.num_masked
        self.num_iterations = settings.num_iterations
        self.iterative_reconstruction = settings.iterative_reconstruction
        self.test_masks_mode = settings.test_masks
        self.cache_training_patches = settings.cache_training_patches
        self.seed = settings.seed

    # ----------------------------------------------------------------------------------------
    # input preparation
    # ----------------------------------------------------------------------------------------
    @property
    def active_num_groups(self) -> int:
        """Patches per cloud now: ``num_groups`` in training, ``test_num_groups`` (if set; at most
        ``num_points``, every point a centre) when scoring."""
        if self.training or self.test_num_groups is None:
            return self.num_groups
        return min(self.test_num_groups, self.num_points)

    def groups_for(self, prepared: PreparedClouds) -> int:
        """Patches per cloud for this batch: :attr:`active_num_groups`, but when scoring with
        ``test_num_groups`` no more than the smallest cloud's network points (never fewer than
        ``num_groups``, which :meth:`prepare` guarantees). Only a batch holding a cloud smaller than
        ``test_num_groups`` is affected; its clouds are then all scored with that many patches."""
        groups = self.active_num_groups
        if groups > self.num_groups and prepared.batch.numel():
            smallest = int(torch.bincount(prepared.batch).min())
            groups = max(self.num_groups, min(groups, smallest))
        return groups

    def _check_sizes(self, counts: torch.Tensor, paths: Sequence[str] | None) -> None:
        need = max(self.num_groups, self.group_size)
        small = (counts < need).nonzero().flatten().tolist()
        if small:
            b = small[0]
            path = paths[b] if paths is not None and b < len(paths) else None
            raise InvalidPointsError(
                f"cloud {b} has {int(counts[b])} points; IMRNet's patch setup ({self.num_groups} patches of "
                f"{self.group_size} points) needs at least {need}"
                + (f" ({len(small)} clouds of this batch are too small)." if len(small) > 1 else "."),
                path=path,
                fix="use a denser scan, or lower num_groups / group_size (e.g. the imrnet_small preset)",
            )

    def prepare(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        stochastic: bool | None = None,
    ) -> PreparedClouds:
        """Normalise every cloud (centroid at 0, farthest point at radius 1) and subsample it
        (:func:`~anomalib_3d.nn.point_mae.prepare_clouds`).

        Args:
            points: ``(ΣN, 3)`` input points.
            batch: ``(ΣN,) long`` sorted cloud ids.
            paths: file of each cloud, for error messages.
            generator: random source for training-time subsampling.
            stochastic: random subsampling (default: in training mode); otherwise deterministic.

        Raises:
            InvalidPointsError: a cloud smaller than the patch setup needs.
        """
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        self._check_sizes(torch.bincount(batch, minlength=num_clouds), paths)
        return prepare_clouds(
            points, batch, self.num_points, subsample=self.subsample,
            stochastic=self.training if stochastic is None else stochastic, generator=generator, seed=self.seed,
        )

    def make_patches(
        self, prepared: PreparedClouds, generator: torch.Generator | None = None, stochastic: bool | None = None
    ) -> Patches:
        """Split the network points into ``G`` patches of ``K`` points; centres are drawn at random
        only when ``stochastic`` (default: in training mode) and the sampler is ``fps`` / ``random``."""
        return group_into_patches(
            prepared, self.groups_for(prepared), self.group_size, sampler=self.sampler,
            stochastic=self.training if stochastic is None else stochastic, generator=generator, seed=self.seed,
            **self.gps_kwargs,
        )

    def training_patches(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``(B, G, K, 3)`` and centres ``(B, G, 3)`` of a training batch.

        With ``cache_training_patches`` and a file path for every cloud, each cloud is patched once
        (deterministically, as at test time) and reused in later epochs: sampling and grouping
        cost as much as the network on a CPU, and only the masks need to change between epochs.
        Otherwise every call subsamples / samples centres afresh (random FPS start).
        """
        if not self.cache_training_patches or paths is None or any(p is None for p in paths):
            prepared = self.prepare(points, batch, paths=paths, generator=generator)
            patches = self.make_patches(prepared, generator)
            return patches.neighborhoods, patches.centers
        num_clouds = int(batch[-1]) + 1
        counts = torch.bincount(batch, minlength=num_clouds)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        keys = [
            (paths[b], int(counts[b]), float(points[ptr[b] : ptr[b + 1]].detach().double().sum()))
            for b in range(num_clouds)
        ]
        missing = [b for b in range(num_clouds) if keys[b] not in self._patch_cache]
        if missing:
            rows = torch.cat([torch.arange(ptr[b], ptr[b + 1], device=points.device) for b in missing])
            sub_batch = torch.repeat_interleave(
                torch.arange(len(missing), device=points.device), counts[missing].to(points.device)
            )
            with torch.no_grad():
                prepared = self.prepare(points[rows], sub_batch, paths=[paths[b] for b in missing], stochastic=False)
                patches = self.make_patches(prepared, stochastic=False)
            for i, b in enumerate(missing):
                self._patch_cache[keys[b]] = (patches.neighborhoods[i], patches.centers[i])
        neighborhoods = torch.stack([self._patch_cache[k][0] for k in keys]).to(points.device)
        centers = torch.stack([self._patch_cache[k][1] for k in keys]).to(points.device)
        return neighborhoods, centers

    # ----------------------------------------------------------------------------------------
    # masked reconstruction
    # ----------------------------------------------------------------------------------------
    def random_mask(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, M) long`` a fresh random set of ``M = round(mask_ratio * G)`` patches per cloud."""
        noise = torch.rand(batch, self.num_groups, generator=generator)
        return noise.argsort(dim=1)[:, : self.num_masked].to(device)

    def training_loss(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Self-supervised PMR loss of a batch of normal clouds (masked-patch Chamfer-L2, Eq. 12)."""
        neighborhoods, centers = self.training_patches(points, batch, paths=paths, generator=generator)
        masked_index = self.random_mask(centers.shape[0], points.device, generator)
        predicted = self.reconstruct(neighborhoods, centers, masked_index)
        return masked_patch_chamfer_loss(predicted, take_patches(neighborhoods, masked_index))

    def test_masks(self, device: torch.device, run: int = 0, num_groups: int | None = None) -> list[torch.Tensor]:
        """The ``num_iterations`` test masks of reconstruction run ``run`` over ``num_groups`` patches
        (default ``num_groups``; ``mask_ratio`` of them are masked).

        ``test_masks="windows"``: consecutive windows of one seeded permutation (positions
        ``t*M .. t*M + M - 1``, wrapping), so successive iterations mask different patches and,
        when ``num_iterations * M >= G``, every patch is reconstructed at least once.
        ``"random"``: a fresh random set of ``M`` patches per iteration. Both are drawn from
        ``seed`` and ``run``, hence reproducible and independent of the batch.

        Returns:
            ``num_iterations`` tensors ``(M,) long``.
        """
        groups = self.num_groups if num_groups is None else num_groups
        masked = self.num_masked if groups == self.num_groups else min(max(round(self.mask_ratio * groups), 1), groups - 1)
        generator = torch.Generator().manual_seed(self.seed + 7919 * run)
        if self.test_masks_mode == "random":
            return [
                torch.randperm(groups, generator=generator)[:masked].to(device) for _ in range(self.num_iterations)
            ]
        permutation = torch.randperm(groups, generator=generator)
        positions = torch.arange(masked)
        return [permutation[(t * masked + positions) % groups].to(device) for t in range(self.num_iterations)]

    def iterative_reconstruct(self, neighborhoods: torch.Tensor, centers: torch.Tensor, run: int = 0) -> torch.Tensor:
        """Test-time reconstruction (paper Alg. 1): mask → reconstruct → merge, repeated.

        Args:
            neighborhoods: ``(B, G, K, 3)`` input patches.
            centers: ``(B, G, 3)``.
            run: which set of test masks (see :meth:`test_masks`).

        Returns:
            ``(B, G, K, 3)`` the patches after the last iteration (never-masked patches unchanged).
        """
        batch = centers.shape[0]
        current = neighborhoods.clone()
        for mask in self.test_masks(centers.device, run, centers.shape[1]):
            masked_index = mask.unsqueeze(0).expand(batch, -1)
            source = current if self.iterative_reconstruction else neighborhoods
            predicted = self.reconstruct(source, centers, masked_index)
            rows = torch.arange(batch, device=centers.device).unsqueeze(1)
            current = current.clone()
            current[rows, masked_index] = predicted.to(current.dtype)
        return current

    def decoder_features(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Fused decoder features (paper Eq. 16-17) of fully visible patches.

        Each selected decoder block's output is layer-normalised (no affine) so that no block
        dominates the concatenation by scale.

        Returns:
            ``(B, G, C * len(feature_layers))``.
        """
        encoded = self.encode(neighborhoods, centers)
        outputs = self.decoder(encoded, self.decoder_pos_embed(centers))
        return torch.cat([F.layer_norm(outputs[i - 1], (self.embed_dim,)) for i in self.feature_layers], dim=-1)
