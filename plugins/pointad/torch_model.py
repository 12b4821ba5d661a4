"""PointAD's PyTorch model: render, encode with frozen CLIP, score against learned prompts.

Data flow for ``B`` clouds (``N`` points in total), ``V`` views of ``H x W`` pixels and ``L``
vision layers with ``h x w`` patches:

1. :func:`anomalib_3d.render.render_points` renders every cloud from the rig (shaded, z-buffered,
   with the exact pixel and visibility of every point in every view);
2. the frozen CLIP encodes the ``B * V`` renders: one global feature and ``L`` V-V patch-token maps
   per view (:class:`~anomalib_3d_plugins.pointad.clip_backbone.FrozenCLIP`);
3. the prompt learner gives normal / abnormal text features; cosine similarities / ``tau`` give
   per-view global logits ``(B, V, 2)`` and per-layer two-class patch maps ``(B, V, 2, h, w)``;
4. maps are upsampled bilinearly to the render size and gathered to the points through the
   render correspondence (only views where the point is visible), averaged over views: the 3D
   segmentation ``S^3d`` (:func:`anomalib_3d.render.gather_to_points`);
5. inference: point map ``A^m = G_sigma(S^3d_a)`` (Gaussian smoothing on the point graph,
   :func:`anomalib_3d.ops.smooth_scores`), object score ``A^s = 1/2 (mean_v P_a^(v) + max A^m)``;
   with RGB (organized clouds) the image is scored by the same prompts, mapped to the points through
   the organized grid and fused (paper §3.6, see :meth:`PointADModel.predict`).

Training (:meth:`PointADModel.compute_loss`) renders the point labels with the same z-buffer and
evaluates the hybrid loss. The encoder is frozen, so the features of a sample's renders can be
cached (:class:`FeatureCache`) and reused across epochs: only rasterisation (for the
correspondence and masks) and the cheap text/similarity part run again.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.loss import HybridLoss, HybridLossInputs
from anomalib_3d_plugins.pointad.prompts import PromptLearner

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# render settings
@dataclass(frozen=True)
class RenderSettings:
    """How clouds are turned into views.

    Attributes:
        num_views: views of PointAD's rig (rotations about X spread over ``(-pi, pi)``, Table 7).
        view_angles: explicit angles in radians (overrides ``num_views``).
        view_axis: rotation axis of ``view_angles``.
        projection: ``"orthographic"`` or ``"pinhole"``.
        image_size: render size; ``None`` = the backbone's input size (336 for ViT-L/14@336).
        point_radius_px: splat radius; ``None`` = from the cloud size (dense clouds 1 px, sparse up to 4).
        shading: Lambert shading from normals (estimated when the cloud has none).
        use_colors: render with per-point colours (off: PointAD reads geometry only, RGB has its own branch).
        depth_tolerance: visibility tolerance of the renderer (``None`` = its default).
    """

    num_views: int = 9
    view_angles: tuple[float, ...] | None = None
    view_axis: str = "x"
    projection: str = "orthographic"
    image_size: int | None = None
    point_radius_px: float | None = None
    shading: bool = True
    use_colors: bool = False
    depth_tolerance: float | None = None

    def rig(self, image_size: tuple[int, int]) -> object:
        """The :class:`anomalib_3d.render.CameraRig` of these settings at ``image_size``."""
        from anomalib_3d.render import pointad_rig, rotation_rig

        if self.view_angles is not None:
            return rotation_rig(list(self.view_angles), axis=self.view_axis, projection=self.projection,
                                image_size=image_size)
        return pointad_rig(self.num_views, projection=self.projection, image_size=image_size)

    def radius_for(self, counts: Sequence[int], image_size: tuple[int, int]) -> float:
        """Splat radius for clouds of ``counts`` points (the explicit value when set)."""
        if self.point_radius_px is not None:
            return float(self.point_radius_px)
        typical = sorted(counts)[len(counts) // 2] if counts else 1
        # About half of the points face a view and fill roughly half of the frame: each owns
        # ~H*W/N pixels; a disc of that area (times 2 for overlap) leaves no holes.
        area = 2.0 * image_size[0] * image_size[1] / max(typical, 1)
        return float(min(4.0, max(1.0, math.sqrt(area / math.pi))))


# ----------------------------------------------------------------------------------------------
# feature cache
class FeatureCache:
    """Frozen-encoder features of rendered samples, reused across epochs.

    Entries are ``(global (V, D), patches (L, V, h*w, D))`` tensors stored exactly as the encoder
    produced them (no dtype change), so a hit returns the very same numbers. A byte budget caps the
    memory; when full, the least recently used entries are evicted.

    Args:
        max_bytes: budget (``0`` disables the cache).
        device: where entries live (``None`` = where they were computed).
    """

    def __init__(self, max_bytes: int = 8 * 2**30, device: str | torch.device | None = "cpu") -> None:
        self.max_bytes = int(max_bytes)
        self.device = None if device is None else torch.device(device)
        self._entries: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @staticmethod
    def _size(entry: tuple[Tensor, Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in entry)

    def get(self, key: str | None) -> tuple[Tensor, Tensor] | None:
        """The entry of ``key`` (moved to most recently used), or ``None``."""
        if key is None or key not in self._entries:
            self.misses += key is not None
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: str | None, global_features: Tensor, patch_tokens: Tensor) -> bool:
        """Store an entry; returns whether it was stored (``False`` if it alone exceeds the budget)."""
        if key is None or self.max_bytes <= 0:
            return False
        entry = tuple(t.detach().to(self.device) if self.device is not None else t.detach()
                      for t in (global_features, patch_tokens))
        size = self._size(entry)
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self.bytes -= self._size(self._entries.pop(key))
        while self.bytes + size > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self.bytes -= self._size(old)
        self._entries[key] = entry
        self.bytes += size
        return True

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0


# ----------------------------------------------------------------------------------------------
# outputs
class ViewScores(NamedTuple):
    """Per-view scores of ``B`` clouds.

    Attributes:
        logits: ``(B, V, 2)`` global ``[normal, abnormal]`` logits (``cos / tau``).
        patch_probs: ``L x (B, V, 2, h, w)`` two-class softmax maps of each vision layer.
    """

    logits: Tensor
    patch_probs: list[Tensor]


class PointADPrediction(NamedTuple):
    """Inference outputs (``N`` points, ``B`` clouds).

    Attributes:
        anomaly_map: ``(N,)`` final point scores (multimodal when RGB was fused).
        pred_score: ``(B,)`` final object scores.
        point_map: ``(N,)`` point-only map ``A^m``.
        point_score: ``(B,)`` point-only score ``A^s``.
        view_probs: ``(B, V)`` abnormal probability of every view.
        rgb_map: ``(N,)`` smoothed RGB map on the points, or ``None``.
        rgb_score: ``(B,)`` RGB global probability, or ``None``.
        view_maps: ``(B, V, H, W)`` abnormal maps of the views at render size (``return_views``).
        renders: ``(B, V, 3, H, W)`` the renders (``return_views``).
    """

    anomaly_map: Tensor
    pred_score: Tensor
    point_map: Tensor
    point_score: Tensor
    view_probs: Tensor
    rgb_map: Tensor | None = None
    rgb_score: Tensor | None = None
    view_maps: Tensor | None = None
    renders: Tensor | None = None


def segment_max(values: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
    """``(B,)`` maximum of ``values (N,)`` over the points of each cloud."""
    out = values.new_full((num_clouds,), -math.inf)
    return out.scatter_reduce(0, batch, values, reduce="amax", include_self=True)


# ----------------------------------------------------------------------------------------------
# model
class PointADModel(nn.Module):
    """PointAD: frozen CLIP + learnable prompts on multi-view renders of point clouds.

    Args:
        backbone: the frozen CLIP.
        prompt_learner: the learnable prompts (the only trainable parameters).
        render: render settings.
        loss: the hybrid loss (training only).
        temperature: ``tau`` of the cosine similarities (AnomalyCLIP uses 0.07).
        smoothing_sigma: width of the Gaussian on the point graph, in units of the cloud's median
            nearest-neighbour spacing (4, like the authors' 4-pixel filter on organized grids);
            ``0`` disables smoothing.
        smoothing_k: neighbours of the Gaussian smoothing.
        feature_cache: optional cache of frozen features (training).
        view_batch_size: renders encoded per CLIP call (bounds memory; ``None`` = all at once).
    """

    def __init__(
        self,
        backbone: FrozenCLIP,
        prompt_learner: PromptLearner,
        render: RenderSettings | None = None,
        loss: HybridLoss | None = None,
        temperature: float = 0.07,
        smoothing_sigma: float = 4.0,
        smoothing_k: int = 64,
        feature_cache: FeatureCache | None = None,
        view_batch_size: int | None = 36,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            msg = f"temperature must be > 0, got {temperature}."
            raise ValueError(msg)
        self.backbone = backbone
        self.prompt_learner = prompt_learner
        self.render_settings = render or RenderSettings()
        self.loss = loss or HybridLoss()
        self.temperature = float(temperature)
        self.smoothing_sigma = float(smoothing_sigma)
        self.smoothing_k = int(smoothing_k)
        self.feature_cache = feature_cache
        self.view_batch_size = view_batch_size
        size = self.render_settings.image_size
        self.render_size = backbone.image_size if size is None else (int(size), int(size))
        self.rig = self.render_settings.rig(self.render_size)
        self._text_cache: dict[tuple[str, ...], Tensor] = {}

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

    @property
    def settings_key(self) -> str:
        """Everything the frozen features of a render depend on (part of the cache key)."""
        b, r = self.backbone, self.render_settings
        parts = (b.model_name, getattr(b, "weights_id", ""), b.feature_layers, b.vv_start_layer, b.precision,
                 self.rig.rotations.flatten().tolist(), r.projection, self.render_size, r.point_radius_px,
                 r.shading, r.use_colors, r.depth_tolerance)
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]

    def sample_key(self, path: str | None, points: Tensor) -> str | None:
        """Cache key of one cloud: its file, size and a coordinate checksum, plus the settings."""
        if path is None or self.feature_cache is None:
            return None
        checksum = points.detach().double().sum(dim=0).tolist()
        coordinates = ",".join(f"{value:.9e}" for value in checksum)
        return f"{path}|{points.shape[0]}|{coordinates}|{self.settings_key}|{points.device.type}"

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
    ) -> object:
        """Render (or only rasterise) ``B`` clouds; returns the renderer's ``RenderOutput``."""
        from anomalib_3d.render import rasterize_points, render_points

        counts = torch.bincount(batch, minlength=num_clouds).tolist()
        radius = self.render_settings.radius_for(counts, self.render_size)
        common = {"point_radius_px": radius, "depth_tolerance": self.render_settings.depth_tolerance,
                  "num_clouds": num_clouds}
        if not with_images:
            return rasterize_points(points, batch, self.rig, **common)
        return render_points(
            points,
            batch,
            self.rig,
            colors=colors if self.render_settings.use_colors else None,
            normals=normals,
            shading=self.render_settings.shading,
            **common,
        )

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
        """Cosine scores of views against the prompts.

        Args:
            global_features: ``(B, V, D)``.
            patch_tokens: ``(L, B, V, h*w, D)``.
            text: ``(B, 2, D)`` normalised text features of each cloud.
        """
        text = text.float()
        glob = F.normalize(global_features.float(), dim=-1)
        logits = torch.einsum("bvd,bcd->bvc", glob, text) / self.temperature
        height, width = self.backbone.grid_size
        maps = []
        for tokens in patch_tokens:
            tokens = F.normalize(tokens.float(), dim=-1)
            probs = (torch.einsum("bvnd,bcd->bvnc", tokens, text) / self.temperature).softmax(dim=-1)
            maps.append(probs.permute(0, 1, 3, 2).reshape(*probs.shape[:2], 2, height, width))
        return ViewScores(logits, maps)

    def smooth(self, points: Tensor, scores: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
        """Gaussian smoothing of per-point scores ``(N,)`` or ``(N, C)`` on each cloud's kNN graph (``G_sigma``)."""
        if self.smoothing_sigma <= 0:
            return scores
        from anomalib_3d.ops import knn, smooth_scores

        out = torch.empty_like(scores)
        ptr = torch.cat([batch.new_zeros(1), torch.bincount(batch, minlength=num_clouds).cumsum(0)]).tolist()
        for cloud in range(num_clouds):
            lo, hi = ptr[cloud], ptr[cloud + 1]
            if hi - lo < 2:
                out[lo:hi] = scores[lo:hi]
                continue
            cloud_points = points[lo:hi].detach()
            # Spacing from a fixed subset: the median distance to the nearest other point.
            step = max(1, (hi - lo) // 2048)
            _, sq = knn(cloud_points, cloud_points[::step], 2)
            distances = sq[:, 1].clamp(min=0).sqrt()
            positive = distances[distances > 0]
            spacing = float(positive.median()) if positive.numel() else 1.0
            k = min(self.smoothing_k, hi - lo)
            out[lo:hi] = smooth_scores(cloud_points, scores[lo:hi], k=k, sigma=self.smoothing_sigma * spacing)
        return out

    @staticmethod
    def gather_point_probs(pixel_probs: Sequence[Tensor], output: object) -> tuple[list[Tensor], Tensor]:
        """The 3D segmentation ``S^3d`` of every layer: per-view maps read at each point's pixel,
        averaged over the views in which the point is *visible* (occluded views do not count).

        Args:
            pixel_probs: ``L x (B, V, 2, H', W')`` two-class maps (upsampled bilinearly when not at
                the render size).
            output: the ``RenderOutput`` the maps come from.

        Returns:
            ``(L x (N, 2), valid (N,) bool)``: ``valid`` marks points visible in at least one view
            (the others get 0 and must be ignored).
        """
        from anomalib_3d.render import gather_to_points

        layers = len(pixel_probs)
        stacked = torch.cat(list(pixel_probs), dim=2)  # (B, V, 2L, H, W): one gather for all layers
        gathered = gather_to_points(stacked, output, fallback="zero")
        return list(gathered.view(-1, layers, 2).unbind(dim=1)), output.visible.any(dim=1)

    # -- training ------------------------------------------------------------------------------
    def _features_for(
        self,
        points: Tensor,
        batch: Tensor,
        num_clouds: int,
        normals: Tensor | None,
        colors: Tensor | None,
        paths: Sequence[str | None] | None,
    ) -> tuple[object, Tensor, Tensor]:
        """Render output and ``(global (B, V, D), patches (L, B, V, hw, D))``, using the cache."""
        ptr = torch.cat([batch.new_zeros(1), torch.bincount(batch, minlength=num_clouds).cumsum(0)]).tolist()
        keys = [self.sample_key(paths[b] if paths else None, points[ptr[b] : ptr[b + 1]]) for b in range(num_clouds)]
        cached = [self.feature_cache.get(k) if self.feature_cache is not None else None for k in keys]
        missing = [b for b, entry in enumerate(cached) if entry is None]
        output = self.render(points, batch, num_clouds, normals=normals, colors=colors, with_images=bool(missing))
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

        Returns:
            ``{"loss": total, "<term>": value}``.
        """
        from anomalib_3d.render import render_mask_like, upsample_maps

        num_clouds = int(labels.shape[0]) if num_clouds is None else num_clouds
        output, glob, patch = self._features_for(points, batch, num_clouds, normals, colors, paths)
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
                inputs.point_probs, inputs.point_valid = self.gather_point_probs(pixel_probs, output)
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
        """Score RGB images with the prompts and read the map at every point's grid pixel.

        Args:
            images: ``(B, 3, H', W')`` RGB in ``[0, 1]``.
            grid_index: ``(N,)`` flat pixel ``row * W + col`` of each point on its organized grid.
            grid_shape: ``(H, W)`` of the grid (or ``(B, 2)``, all equal).
            batch: ``(N,)`` cloud of each point.
            text: ``(B, 2, D)`` text features.

        Returns:
            ``(global abnormal probability (B,), per-point RGB abnormal map (N,))`` (map not smoothed).
        """
        shape = torch.as_tensor(grid_shape).reshape(-1, 2)[0].tolist()
        features = self.backbone.encode_image(self.backbone.prepare_images(images))
        glob = features.global_features.unsqueeze(1)
        patch = torch.stack(features.patch_tokens).unsqueeze(2)
        scores = self.score_views(glob, patch, text)
        probability = scores.logits.softmax(dim=-1)[:, 0, 1]
        abnormal = torch.stack([p[:, 0, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, h, w)
        on_grid = F.interpolate(abnormal.unsqueeze(1), size=(int(shape[0]), int(shape[1])), mode="bilinear",
                                align_corners=False)[:, 0]
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
    ) -> PointADPrediction:
        """Zero-shot point map and object score (paper §3.6), with RGB fusion when given.

        Point only: ``A^m = G(S^3d_a)``, ``A^s = 1/2 (mean_v P_a^(v) + max A^m)``.

        With RGB (``rgb`` + ``grid_index`` + ``grid_shape``): the image is scored by the same
        prompts, ``A^m_rgb = G(S_rgb)`` (its map read at each point's grid pixel) and
        ``A^s_rgb = P_a(rgb)``; then ``A^m_mod = 1/2 G(A^m + A^m_rgb)`` and
        ``A^s_mod = 1/2 [1/2 (A^s_rgb + A^s) + max A^m_mod]``. (The paper's text swaps the
        subscripts of ``A^m_rgb`` / ``A^s_rgb``; the map must be the spatial one.)
        """
        from anomalib_3d.render import gather_to_points, upsample_maps

        output = self.render(points, batch, num_clouds, normals=normals, colors=colors, with_images=True)
        glob, patch = self.encode_views(output.images)
        text = self._per_cloud_text(class_names, num_clouds)
        scores = self.score_views(glob, patch, text)
        view_probs = scores.logits.softmax(dim=-1)[..., 1]
        mean_maps = torch.stack([p[:, :, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, V, h, w)
        point_raw = gather_to_points(mean_maps, output, fallback="nearest")
        rgb_map = rgb_score = None
        fuse = rgb is not None and grid_index is not None and grid_shape is not None
        if not fuse:
            point_map = self.smooth(points, point_raw, batch, num_clouds)
            point_score = 0.5 * (view_probs.mean(dim=1) + segment_max(point_map, batch, num_clouds))
            anomaly_map, pred_score = point_map, point_score
        else:
            rgb_score, rgb_raw = self.rgb_scores(rgb, grid_index, grid_shape, batch, text)
            # One neighbour search for both maps: smooth them as two channels.
            point_map, rgb_map = self.smooth(points, torch.stack([point_raw, rgb_raw], dim=1), batch, num_clouds).unbind(1)
            point_score = 0.5 * (view_probs.mean(dim=1) + segment_max(point_map, batch, num_clouds))
            anomaly_map = 0.5 * self.smooth(points, point_map + rgb_map, batch, num_clouds)
            pred_score = 0.5 * (0.5 * (rgb_score + point_score) + segment_max(anomaly_map, batch, num_clouds))
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


__all__ = [
    "FeatureCache",
    "PointADModel",
    "PointADPrediction",
    "RenderSettings",
    "ViewScores",
    "segment_max",
]
