"""PointAD's PyTorch model: render, encode with frozen CLIP, score against learned prompts.

Data flow for ``B`` clouds (``N`` points in total), ``V`` views of ``H x W`` pixels and ``L``
vision layers with ``h x w`` patches:

1. :func:`anomalib_3d.render.render_points` renders every cloud from the rig (shaded, z-buffered,
   with the exact pixel and visibility of every point in every view); organized (sensor-frame)
   clouds are flipped into the authors' object frame and seen by their MVTec rig
   (:class:`~anomalib_3d_plugins.pointad.render_settings.RenderSettings`), and every cloud gets a
   splat radius from its own sampling, never from the rest of the batch
   (:func:`anomalib_3d.render.radius.cloud_radii`);
2. the frozen CLIP encodes the ``B * V`` renders: one global feature and ``L`` V-V patch-token maps
   per view (:class:`~anomalib_3d_plugins.pointad.clip_backbone.FrozenCLIP`);
3. the prompt learner gives normal / abnormal text features; cosine similarities / ``tau`` give
   per-view global logits ``(B, V, 2)`` and per-layer two-class patch maps ``(B, V, 2, h, w)``
   (:mod:`~anomalib_3d_plugins.pointad.scoring`);
4. maps are upsampled bilinearly to the render size and gathered to the points through the
   render correspondence (only views where the point is visible), averaged over views: the 3D
   segmentation ``S^3d`` (:func:`anomalib_3d.render.gather_to_points`);
5. inference: point map ``A^m = G_sigma(S^3d_a)`` (Gaussian smoothing: on the sensor grid for
   organized clouds, on the points otherwise), object score ``A^s = 1/2 (mean_v P_a^(v) + max A^m)``;
   with RGB (organized clouds) the image is scored by the same prompts, mapped to the points through
   the organized grid and fused (:mod:`~anomalib_3d_plugins.pointad.rgb_fusion`).

With the official render style (:mod:`~anomalib_3d_plugins.pointad.official`) step 1 draws the
authors' Open3D pictures (per-view framing, square points of the dataset's size in a 1024 / 1036 px
window resized to 336, Open3D's lighting, the nearest point per pixel visible, unseen points
borrowing a neighbour's visibility; Real3D-AD clouds resampled to 112,896 points and the scores
mapped back), and step 5 fuses RGB the authors' way
(:func:`~anomalib_3d_plugins.pointad.rgb_fusion.fuse_official`).

Training (:meth:`PointADModel.compute_loss`) renders the point labels with the same z-buffer and
evaluates the hybrid loss. The encoder is frozen, so the features of a sample's renders are cached
across epochs (:mod:`~anomalib_3d_plugins.pointad.feature_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_3d.render.radius import cloud_radii
from anomalib_3d.settings import check_choice
from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.feature_cache import (
    FeatureCache,
    sample_key,
    settings_key,
)
from anomalib_3d_plugins.pointad.loss import HybridLoss, HybridLossInputs
from anomalib_3d_plugins.pointad.official import (
    OFFICIAL_GREY,
    OFFICIAL_NORMAL_K,
    borrow_unseen_visibility,
    cloud_categories,
    resample_cloud,
)
from anomalib_3d_plugins.pointad.prompts import PromptLearner
from anomalib_3d_plugins.pointad.render_settings import RenderSettings
from anomalib_3d_plugins.pointad.settings import PointADSettings
from anomalib_3d_plugins.pointad.rgb_fusion import (
    FUSIONS,
    blackout_background,
    fuse_official,
    fuse_point_and_rgb,
    rgb_abnormal_grid,
)
from anomalib_3d_plugins.pointad.scoring import (
    PointADPrediction,
    ViewScores,
    cloud_offsets,
    cosine_view_scores,
    gather_point_probs,
    object_score,
    smooth_point_scores,
)


class PointADModel(nn.Module):
    """PointAD: frozen CLIP + learnable prompts on multi-view renders of point clouds.

    Organized clouds (``grid_index`` / ``grid_shape`` given: one point per pixel of a sensor grid)
    and unorganized clouds differ in three places, each following the authors' code: the views
    (:class:`RenderSettings`: sensor-frame flip, ``pointad_mvtec`` vs ``pointad_real3d`` rig),
    the splat radius (grid pitch vs nearest-neighbour spacing) and the smoothing (the 2D Gaussian
    on the grid vs a radius Gaussian on the points).

    Args:
        backbone: the frozen CLIP.
        prompt_learner: the learnable prompts (the only trainable parameters).
        render: render settings.
        loss: the hybrid loss (training only).
        temperature: ``tau`` of the cosine similarities (AnomalyCLIP uses 0.07).
        smoothing_sigma: Gaussian width. Organized clouds: in grid pixels, the authors'
            ``gaussian_filter(sigma=4)`` on the 336 x 336 grid (:func:`anomalib_3d.ops.graph.smooth_grid_scores`).
            Unorganized clouds: in units of the cloud's median nearest-neighbour spacing. ``0`` disables it.
        smoothing_k: ``None`` (default): unorganized clouds use every neighbour within
            ``smoothing_truncate * sigma``; an int: the ``k`` nearest neighbours instead (cheaper,
            cuts the Gaussian off where the ``k``-th neighbour lies).
        smoothing_truncate: support of the radius Gaussian, in sigmas (>= 3).
        smoothing_on_grid: smooth organized clouds on their grid (off: as unorganized clouds).
        feature_cache: optional cache of frozen features (training).
        view_batch_size: renders encoded per CLIP call (bounds memory; ``None`` = all at once).
        fusion: RGB fusion, ``"paper"`` or ``"official"``
            (:mod:`~anomalib_3d_plugins.pointad.rgb_fusion`); ``None`` = ``"official"`` with the
            official render style, else ``"paper"``.
    """

    def __init__(
        self,
        backbone: FrozenCLIP,
        prompt_learner: PromptLearner,
        render: RenderSettings | None = None,
        loss: HybridLoss | None = None,
        temperature: float = 0.07,
        smoothing_sigma: float = 4.0,
        smoothing_k: int | None = None,
        smoothing_truncate: float = 3.0,
        smoothing_on_grid: bool = True,
        feature_cache: FeatureCache | None = None,
        view_batch_size: int | None = 36,
        fusion: str | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            msg = f"temperature must be > 0, got {temperature}."
            raise ValueError(msg)
        if smoothing_truncate < 3.0:
            msg = f"smoothing_truncate must be >= 3 (sigmas of support), got {smoothing_truncate}."
            raise ValueError(msg)
        self.backbone = backbone
        self.prompt_learner = prompt_learner
        self.render_settings = render or RenderSettings()
        if fusion is None:
            fusion = "official" if self.render_settings.official else "paper"
        check_choice("fusion", fusion, FUSIONS)
        self.fusion = fusion
        self.loss = loss or HybridLoss()
        self.temperature = float(temperature)
        self.smoothing_sigma = float(smoothing_sigma)
        self.smoothing_k = None if smoothing_k is None else int(smoothing_k)
        self.smoothing_truncate = float(smoothing_truncate)
        self.smoothing_on_grid = bool(smoothing_on_grid)
        self.feature_cache = feature_cache
        self.view_batch_size = view_batch_size
        size = self.render_settings.image_size
        self.render_size = backbone.image_size if size is None else (int(size), int(size))
        self._rigs = {organized: self.render_settings.camera_rig(self.render_size, organized) for organized in (False, True)}
        self._text_cache: dict[tuple[str, ...], Tensor] = {}
        #: the settings the model was built from (:meth:`from_settings`); ``None`` when assembled by hand.
        self.settings: PointADSettings | None = None

    @classmethod
    def from_settings(cls, settings: PointADSettings) -> PointADModel:
        """The model the settings describe: open_clip backbone, prompts (with the released ones
        loaded when ``prompt_checkpoint`` is set), views, hybrid loss and feature cache."""
        clip = FrozenCLIP(
            model=settings.backbone,
            pretrained=settings.pretrained,
            feature_layers=settings.feature_layers,
            vv_attention=settings.vv_attention,
            vv_start_layer=settings.vv_start_layer,
            precision=settings.precision,
        )
        prompts = PromptLearner(
            clip,
            prompt_length=settings.prompt_length,
            object_agnostic=settings.object_agnostic,
            deep_prompts=settings.deep_prompts,
            deep_prompt_length=settings.deep_prompt_length,
            deep_prompt_depth=settings.deep_prompt_depth,
        )
        if settings.prompt_checkpoint is not None:
            from anomalib_3d_plugins.pointad.checkpoint import load_official_prompts

            load_official_prompts(prompts, settings.prompt_checkpoint)
        render = settings.render_settings()
        loss = HybridLoss(global_3d=settings.loss_global_3d, local_3d=settings.loss_local_3d,
                          global_2d=settings.loss_global_2d, local_2d=settings.loss_local_2d)
        cache = FeatureCache(max_bytes=int(settings.feature_cache_gb * 2**30)) if settings.feature_cache_gb > 0 else None
        model = cls(clip, prompts, render=render, loss=loss, temperature=settings.temperature,
                    smoothing_sigma=settings.smoothing_sigma, smoothing_k=settings.smoothing_k,
                    smoothing_truncate=settings.smoothing_truncate, smoothing_on_grid=settings.smoothing_on_grid,
                    feature_cache=cache, fusion=settings.rgb_fusion)
        model.settings = settings
        return model

    def rig_for(self, organized: bool) -> object:
        """The camera rig of organized (sensor-frame) or unorganized clouds."""
        return self._rigs[bool(organized)]

    # -- bookkeeping ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> PointADModel:
        """Prompts follow ``mode``; the backbone stays frozen in eval; cached text features are dropped."""
        super().train(mode)
        self.backbone.train(False)
        if mode:
            self._text_cache.clear()
        return self

    def clear_text_cache(self) -> None:
        """Forget text features computed in eval mode (call after loading new prompt weights)."""
        self._text_cache.clear()

    def settings_key(self, organized: bool = False) -> str:
        """Everything the frozen features of a render depend on, but the radius (part of the cache key)."""
        return settings_key(self.backbone, self.render_settings, self.rig_for(organized), self.render_size)

    def sample_key(self, path: str | None, points: Tensor, radius: float, organized: bool = False) -> str | None:
        """Feature-cache key of one cloud (:func:`~anomalib_3d_plugins.pointad.feature_cache.sample_key`);
        ``None`` without a cache or a file."""
        if self.feature_cache is None:
            return None
        return sample_key(path, points, radius, self.settings_key(organized))

    # -- per-cloud geometry ----------------------------------------------------------------------
    def radius_for_cloud(
        self,
        points: Tensor,
        grid_index: Tensor | None = None,
        grid_shape: Sequence[int] | None = None,
        category: str | None = None,
    ) -> float:
        """Splat radius (pixels) of one cloud: the explicit ``point_radius_px`` when set, else from
        the cloud's own sampling (:func:`anomalib_3d.render.radius.radius_from_sampling`); official
        style: half the square side of its category."""
        return self.cloud_radii(points, points.new_zeros(points.shape[0], dtype=torch.long), 1, grid_index,
                                grid_shape, [category])[0]

    @staticmethod
    def _grid_shape(grid_shape: Tensor | Sequence[int] | None) -> tuple[int, int] | None:
        if grid_shape is None:
            return None
        shape = torch.as_tensor(grid_shape).reshape(-1, 2)
        if not bool((shape == shape[0]).all()):
            msg = f"all organized clouds of a batch must share one grid shape, got {shape.tolist()}."
            raise ValueError(msg)
        return int(shape[0, 0]), int(shape[0, 1])

    def cloud_radii(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> list[float]:
        """:meth:`radius_for_cloud` of every cloud (without an explicit radius, an empty cloud gets the smallest)."""
        shape = self._grid_shape(grid_shape)
        organized = grid_index is not None and shape is not None
        settings = self.render_settings
        if settings.official:
            if settings.point_size_px is not None:
                return [settings.point_size_px / 2.0] * num_clouds
            style = settings.official_style(organized)
            return [style.size_for(name) / 2.0 for name in cloud_categories(categories, num_clouds)]
        if settings.point_radius_px is not None:
            return [float(settings.point_radius_px)] * num_clouds
        return cloud_radii(points, batch, num_clouds, self.rig_for(organized), grid_index if organized else None,
                           shape)

    # -- stages --------------------------------------------------------------------------------
    def render(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        *,
        normals: Tensor | None = None,
        colors: Tensor | None = None,
        with_images: bool = True,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
        radii: Sequence[float] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> object:
        """Render (or only rasterise) ``B`` clouds; returns the renderer's ``RenderOutput``.

        Organized clouds (``grid_index`` and ``grid_shape`` given) use :meth:`rig_for` ``(True)``
        (sensor-frame flip + ``pointad_mvtec`` by default). Every cloud gets its own radius
        (``radii`` or :meth:`cloud_radii`; ``categories`` size the official style's points).
        """
        from anomalib_3d.render import rasterize_points, render_points

        organized = grid_index is not None and grid_shape is not None
        if radii is None:
            radii = self.cloud_radii(points, batch, num_clouds, grid_index, grid_shape, categories)
        rig = self.rig_for(organized)
        settings = self.render_settings
        common = {"point_radius_px": list(radii), "num_clouds": num_clouds}
        if settings.official:
            common |= {"point_shape": "square", "visibility": "nearest"}
        else:
            common["depth_tolerance"] = settings.depth_tolerance
        if not with_images:
            output = rasterize_points(points, batch, rig, **common)
        elif settings.official:
            output = render_points(points, batch, rig, colors=colors if settings.use_colors else None, normals=normals,
                                   lighting="open3d", base_color=(OFFICIAL_GREY,) * 3, normal_k=OFFICIAL_NORMAL_K,
                                   **common)
        else:
            output = render_points(points, batch, rig, colors=colors if settings.use_colors else None,
                                   normals=normals, shading=settings.shading, **common)
        if settings.official:
            output.visible = borrow_unseen_visibility(output.visible, output.batch, num_clouds,
                                                      grid_index if organized else None)
        return output

    def encode_views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Encode ``(M, V, 3, H, W)`` renders in ``[0, 1]``.

        Returns:
            ``global (M, V, D)`` and ``patches (L, M, V, h*w, D)`` in the encoder's output dtype.
        """
        num, views = images.shape[:2]
        flat = self.backbone.prepare_images(images.flatten(0, 1))
        step = self.view_batch_size or flat.shape[0]
        globals_, patches = [], []
        for start in range(0, flat.shape[0], step):
            out = self.backbone.encode_image(flat[start : start + step])
            globals_.append(out.global_features)
            patches.append(torch.stack(out.patch_tokens))
        glob = torch.cat(globals_).view(num, views, -1)
        patch = torch.cat(patches, dim=1)
        return glob, patch.view(patch.shape[0], num, views, patch.shape[2], patch.shape[3])

    def text_features(self, class_names: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
        """``(C, 2, D)`` normalised prompt features and the ``C`` words they were built for."""
        words = self.prompt_learner.class_words(class_names and sorted(set(class_names)))
        key = tuple(words)
        if not self.training and not torch.is_grad_enabled() and key in self._text_cache:
            return self._text_cache[key], words
        features = self.prompt_learner(self.backbone, words)
        if not self.training and not torch.is_grad_enabled():
            self._text_cache[key] = features
        return features, words

    def _per_cloud_text(self, class_names: Sequence[str] | None, num_clouds: int) -> Tensor:
        """``(B, 2, D)`` text features of every cloud."""
        features, words = self.text_features(class_names)
        if features.shape[0] == 1:
            return features.expand(num_clouds, -1, -1)
        cleaned = self.prompt_learner.class_words(class_names)
        index = torch.tensor([words.index(w) for w in cleaned], device=features.device)
        return features[index]

    def score_views(self, global_features: Tensor, patch_tokens: Tensor, text: Tensor) -> ViewScores:
        """Cosine scores of views against the prompts (:func:`~anomalib_3d_plugins.pointad.scoring.cosine_view_scores`).

        Args:
            global_features: ``(B, V, D)``.
            patch_tokens: ``(L, B, V, h*w, D)``.
            text: ``(B, 2, D)`` normalised text features of each cloud.
        """
        return cosine_view_scores(global_features, patch_tokens, text, self.temperature, self.backbone.grid_size)

    def smooth(
        self,
        points: Tensor,
        scores: Tensor,
        batch: Tensor,
        num_clouds: int,
        *,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
    ) -> Tensor:
        """Gaussian smoothing ``G_sigma`` of per-point scores ``(N,)`` or ``(N, C)``, cloud by cloud
        (:func:`~anomalib_3d_plugins.pointad.scoring.smooth_point_scores`): on the grid for
        organized clouds (unless ``smoothing_on_grid`` is off), on the points otherwise."""
        on_grid = self.smoothing_on_grid and grid_index is not None and grid_shape is not None
        return smooth_point_scores(
            points, scores, batch, num_clouds,
            sigma=self.smoothing_sigma, k=self.smoothing_k, truncate=self.smoothing_truncate,
            grid_index=grid_index if on_grid else None, grid_shape=self._grid_shape(grid_shape) if on_grid else None,
        )

    # -- training ------------------------------------------------------------------------------
    def _features_for(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        normals: Tensor | None,
        colors: Tensor | None,
        paths: Sequence[str | None] | None,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> tuple[object, Tensor, Tensor]:
        """Render output and ``(global (B, V, D), patches (L, B, V, hw, D))``, using the cache."""
        organized = grid_index is not None and grid_shape is not None
        ptr = cloud_offsets(batch, num_clouds)
        radii = self.cloud_radii(points, batch, num_clouds, grid_index, grid_shape, categories)
        keys = [self.sample_key(paths[b] if paths else None, points[ptr[b] : ptr[b + 1]], radii[b], organized)
                for b in range(num_clouds)]
        cached = [self.feature_cache.get(k) if self.feature_cache is not None else None for k in keys]
        missing = [b for b, entry in enumerate(cached) if entry is None]
        output = self.render(points, batch, num_clouds, normals=normals, colors=colors, with_images=bool(missing),
                             grid_index=grid_index, grid_shape=grid_shape, radii=radii)
        if missing:
            glob_new, patch_new = self.encode_views(output.images[missing])
            for j, b in enumerate(missing):
                entry = (glob_new[j], patch_new[:, j])
                cached[b] = entry
                if self.feature_cache is not None:
                    self.feature_cache.put(keys[b], *entry)
        device = points.device
        glob = torch.stack([entry[0].to(device) for entry in cached])
        patch = torch.stack([entry[1].to(device) for entry in cached], dim=1)
        return output, glob, patch

    def resample_official(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        organized: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Unorganized clouds resampled to the official style's point count (Real3D-AD:
        :func:`~anomalib_3d_plugins.pointad.official.resample_cloud`), or ``None`` when this style
        keeps clouds as they are.

        Returns:
            ``(points (M, 3), batch (M,), origin (M,), nearest (N,))``: global indices, ``origin``
            into the input points (labels), ``nearest`` into the resampled ones (scores back).
        """
        settings = self.render_settings
        if not settings.official or organized:
            return None
        target = settings.official_style(organized=False).num_points
        if target is None:
            return None
        ptr = cloud_offsets(batch, num_clouds)
        clouds, batches, origins, nearests = [], [], [], []
        for cloud in range(num_clouds):
            lo, hi = ptr[cloud], ptr[cloud + 1]
            if hi == lo:
                continue
            resampled, origin, nearest = resample_cloud(points[lo:hi], target, seed=cloud)
            nearest = nearest + sum(c.shape[0] for c in clouds)
            clouds.append(resampled)
            batches.append(batch.new_full((resampled.shape[0],), cloud))
            origins.append(origin + lo)
            nearests.append(nearest)
        return torch.cat(clouds), torch.cat(batches), torch.cat(origins), torch.cat(nearests)

    def compute_loss(
        self,
        points: Tensor,
        batch: Tensor,
        labels: Tensor,
        point_labels: Tensor,
        *,
        num_clouds: int | None = None,
        normals: Tensor | None = None,
        colors: Tensor | None = None,
        class_names: Sequence[str] | None = None,
        paths: Sequence[str | None] | None = None,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> dict[str, Tensor]:
        """Hybrid loss of a batch of annotated (auxiliary) clouds.

        Args:
            points: ``(N, 3)``.
            batch: ``(N,)`` sorted cloud index.
            labels: ``(B,)`` object labels.
            point_labels: ``(N,)`` point labels.
            num_clouds: ``B`` (default ``labels.shape[0]``).
            normals, colors: optional ``(N, 3)``.
            class_names: ``B`` names (object-aware prompts).
            paths: ``B`` sample files, keys of the feature cache.
            grid_index, grid_shape: organized clouds' pixel of each point and grid ``(H, W)``
                (sensor-frame views, grid-pitch radius).
            categories: ``B`` category names (the official style's point sizes).

        Returns:
            ``{"loss": total, "<term>": value}``.
        """
        from anomalib_3d.render import render_mask_like, upsample_maps

        num_clouds = int(labels.shape[0]) if num_clouds is None else num_clouds
        resampled = self.resample_official(points, batch, num_clouds, grid_index is not None)
        if resampled is not None:
            points, batch, origin, _ = resampled
            point_labels, normals = point_labels[origin], None
            colors = None if colors is None else colors[origin]
        output, glob, patch = self._features_for(points, batch, num_clouds, normals, colors, paths, grid_index,
                                                 grid_shape, categories)
        text = self._per_cloud_text(class_names, num_clouds)
        scores = self.score_views(glob, patch, text)
        inputs = HybridLossInputs(view_logits=scores.logits, labels=labels.long())
        point_labels = point_labels.float()
        if self.loss.needs_pixels:
            masks = render_mask_like(point_labels, output)
            inputs.masks = masks
            inputs.view_labels = (masks.flatten(2).amax(dim=2) > 0.5).long()
        if self.loss.enabled["local_2d"] or self.loss.enabled["local_3d"]:
            pixel_probs = [upsample_maps(p, self.render_size) for p in scores.patch_probs]
            inputs.pixel_probs = pixel_probs
            if self.loss.enabled["local_3d"]:
                inputs.point_probs, inputs.point_valid = gather_point_probs(pixel_probs, output)
                inputs.point_labels = point_labels
                inputs.batch = batch
        return self.loss(inputs)

    # -- inference -----------------------------------------------------------------------------
    def rgb_scores(
        self,
        images: Tensor,
        grid_index: Tensor,
        grid_shape: Tensor | tuple[int, int],
        batch: Tensor,
        text: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """RGB images scored by the prompts, read at every point's grid pixel
        (:func:`~anomalib_3d_plugins.pointad.rgb_fusion.rgb_abnormal_grid`).

        Returns:
            ``(global abnormal probability (B,), per-point RGB abnormal map (N,))`` (map not smoothed).
        """
        probability, on_grid = rgb_abnormal_grid(self.backbone, images, text, self.temperature, grid_shape,
                                                 antialias=self.fusion == "official")
        return probability, on_grid.flatten(1)[batch, grid_index]

    @torch.no_grad()
    def predict(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        *,
        normals: Tensor | None = None,
        colors: Tensor | None = None,
        class_names: Sequence[str] | None = None,
        rgb: Tensor | None = None,
        grid_index: Tensor | None = None,
        grid_shape: Tensor | tuple[int, int] | None = None,
        return_views: bool = False,
        categories: Sequence[str | None] | None = None,
        rgb_background: Tensor | None = None,
    ) -> PointADPrediction:
        """Zero-shot point map and object score (paper §3.6), with RGB fusion when given.

        Point only: ``A^m = G(S^3d_a)``, ``A^s = 1/2 (mean_v P_a^(v) + max A^m)``.

        ``grid_index`` + ``grid_shape`` mark the clouds as organized (sensor-frame views, grid
        radius, smoothing on the grid). With RGB as well (``rgb``): the image is scored by the same
        prompts, ``A^m_rgb = G(S_rgb)`` (its map read at each point's grid pixel) and
        ``A^s_rgb = P_a(rgb)``; then (``fusion="paper"``) ``A^m_mod = G(1/2 (A^m + A^m_rgb))`` and
        ``A^s_mod = 1/2 [1/2 (A^s_rgb + A^s) + max A^m_mod]``. (The paper's text swaps the
        subscripts of ``A^m_rgb`` / ``A^s_rgb``; the map must be the spatial one.) The authors'
        fusion (``fusion="official"``) is :func:`~anomalib_3d_plugins.pointad.rgb_fusion.fuse_official`,
        on the image with its background (``rgb_background (B, H', W')`` bool, else every grid pixel
        without a point) blacked out.

        ``categories`` (``B`` names) size the official style's points; unorganized clouds of the
        official Real3D-AD style are resampled and their scores read back at the input points.
        """
        from anomalib_3d.render import gather_to_points, upsample_maps

        grid = {"grid_index": grid_index, "grid_shape": grid_shape} if grid_index is not None and grid_shape is not None else {}
        resampled = self.resample_official(points, batch, num_clouds, bool(grid))
        if resampled is not None:
            points, batch, origin, nearest = resampled
            normals, colors = None, None if colors is None else colors[origin]
        output = self.render(points, batch, num_clouds, normals=normals, colors=colors, with_images=True,
                             categories=categories, **grid)
        glob, patch = self.encode_views(output.images)
        text = self._per_cloud_text(class_names, num_clouds)
        scores = self.score_views(glob, patch, text)
        view_probs = scores.logits.softmax(dim=-1)[..., 1]
        mean_maps = torch.stack([p[:, :, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, V, h, w)
        point_raw = gather_to_points(mean_maps, output, fallback="nearest")
        rgb_map = rgb_score = None
        official = self.fusion == "official" and bool(grid)
        if rgb is not None and official:
            rgb = blackout_background(rgb, grid_index, grid_shape, batch, num_clouds, rgb_background)
        if (rgb is None or not grid) and not official:
            point_map = self.smooth(points, point_raw, batch, num_clouds, **grid)
            point_score = object_score(view_probs, point_map, batch, num_clouds)
            anomaly_map, pred_score = point_map, point_score
        elif official:
            shape = self._grid_shape(grid_shape)
            if rgb is None:
                rgb_grid, rgb_score = view_probs.new_zeros(num_clouds, *shape), None
            else:
                rgb_score, rgb_grid = rgb_abnormal_grid(self.backbone, rgb, text, self.temperature, shape,
                                                        antialias=True)
            fused = fuse_official(point_raw, rgb_grid, view_probs.new_zeros(num_clouds) if rgb_score is None
                                  else rgb_score, view_probs, grid_index, batch, self.smoothing_sigma)
            point_map, point_score = fused.point_map, fused.point_score
            anomaly_map, pred_score, rgb_map = (point_map, point_score, None) if rgb is None else (
                fused.anomaly_map, fused.pred_score, fused.rgb_map)
        else:
            rgb_score, rgb_raw = self.rgb_scores(rgb, grid_index, grid_shape, batch, text)
            fused = fuse_point_and_rgb(point_raw, rgb_raw, rgb_score, view_probs, batch, num_clouds,
                                       lambda scores: self.smooth(points, scores, batch, num_clouds, **grid))
            anomaly_map, pred_score, point_map, point_score, rgb_map = fused
        if resampled is not None:
            anomaly_map, point_map = anomaly_map[nearest], point_map[nearest]
        view_maps = upsample_maps(mean_maps, self.render_size) if return_views else None
        return PointADPrediction(
            anomaly_map=anomaly_map,
            pred_score=pred_score,
            point_map=point_map,
            point_score=point_score,
            view_probs=view_probs,
            rgb_map=rgb_map,
            rgb_score=rgb_score,
            view_maps=view_maps,
            renders=output.images if return_views else None,
        )

    def forward(self, points: Tensor, batch: Tensor, num_clouds: int, **kwargs: object) -> PointADPrediction:
        """Alias of :meth:`predict`."""
        return self.predict(points, batch, num_clouds, **kwargs)


__all__ = ["PointADModel"]
