"""PointAD's PyTorch model: render, encode with frozen CLIP, score against learned prompts.

Data flow for ``B`` clouds (``N`` points in total), ``V`` views of ``H x W`` pixels and ``L``
vision layers with ``h x w`` patches:

1. :func:`anomalib_3d.render.render_points` renders every cloud from the rig (shaded, z-buffered,
   with the exact pixel and visibility of every point in every view); organized (sensor-frame)
   clouds are flipped into the authors' object frame and seen by their MVTec rig, and every cloud
   gets a splat radius from its own sampling (never from the rest of the batch);
2. the frozen CLIP encodes the ``B * V`` renders: one global feature and ``L`` V-V patch-token maps
   per view (:class:`~anomalib_3d_plugins.pointad.clip_backbone.FrozenCLIP`);
3. the prompt learner gives normal / abnormal text features; cosine similarities / ``tau`` give
   per-view global logits ``(B, V, 2)`` and per-layer two-class patch maps ``(B, V, 2, h, w)``;
4. maps are upsampled bilinearly to the render size and gathered to the points through the
   render correspondence (only views where the point is visible), averaged over views: the 3D
   segmentation ``S^3d`` (:func:`anomalib_3d.render.gather_to_points`);
5. inference: point map ``A^m = G_sigma(S^3d_a)`` (Gaussian smoothing: on the sensor grid for
   organized clouds, on the points otherwise, :mod:`anomalib_3d.ops.graph`), object score
   ``A^s = 1/2 (mean_v P_a^(v) + max A^m)``;
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
OBJECT_FRAMES = ("auto", "flip", "none")

# Disc area = twice the area each point owns on the image: no holes on a lattice (needs
# r >= 0.71 pitch) nor, mostly, on random samples. For a lattice of pitch p that is
# r = sqrt(2 / pi) p; for a random (Poisson) sample whose median nearest-neighbour distance is
# d (= sqrt(ln 2 / (pi rho))), r = sqrt(2 / ln 2) d.
_RADIUS_PER_GRID_PITCH = math.sqrt(2.0 / math.pi)
_RADIUS_PER_MEDIAN_NN = math.sqrt(2.0 / math.log(2.0))
_MIN_RADIUS_PX, _MAX_RADIUS_PX = 1.0, 8.0
_SPACING_QUERIES = 2048


@dataclass(frozen=True)
class RenderSettings:
    """How clouds are turned into views.

    The views, by priority: ``views`` (any rotations) > ``view_angles`` (about ``view_axis``) >
    ``num_views`` / ``view_axis`` (the paper's Table 7 set about that axis) > ``preset`` >
    automatic: ``pointad_mvtec`` for organized clouds, ``pointad_real3d`` for unorganized ones.

    Attributes:
        preset: rig preset name (``"pointad_mvtec"``, ``"pointad_real3d"``, see
            :data:`anomalib_3d.render.RIG_PRESETS`), or ``None`` for the automatic choice.
        views: explicit rotations: ``(axis, degrees)`` pairs, lists of pairs (composed) or 3x3
            matrices (:func:`anomalib_3d.render.view_rotations`).
        num_views: Table 7 view count (angles ``k * 2 pi / (n + 1)`` about ``view_axis``).
        view_angles: explicit angles in radians about ``view_axis``.
        view_axis: axis of ``view_angles`` / ``num_views`` (default X); given alone it selects the
            9-view Table 7 set about that axis.
        object_frame: ``"auto"`` flips organized (sensor-frame: camera at the origin looking
            along +z, y down) clouds by pi about X before the views, as the authors do, and leaves
            unorganized clouds as they are; ``"flip"`` flips every cloud (the authors' Real3D-AD
            script flips too); ``"none"`` never flips.
        projection: ``"orthographic"`` or ``"pinhole"`` (Open3D's 60 degree perspective).
        image_size: render size; ``None`` = the backbone's input size (336 for ViT-L/14@336).
        point_radius_px: splat radius for every cloud; ``None`` = per cloud from its own sampling:
            the organized grid's pixel pitch, else its median nearest-neighbour distance
            (:meth:`PointADModel.radius_for_cloud`), so a cloud renders the same in any batch.
        shading: Lambert shading from normals (estimated when the cloud has none).
        use_colors: render with per-point colours (off: PointAD reads geometry only, RGB has its own branch).
        depth_tolerance: visibility tolerance of the renderer (``None`` = its default per radius).
    """

    preset: str | None = None
    views: tuple | None = None
    num_views: int | None = None
    view_angles: tuple[float, ...] | None = None
    view_axis: str | None = None
    object_frame: str = "auto"
    projection: str = "orthographic"
    image_size: int | None = None
    point_radius_px: float | None = None
    shading: bool = True
    use_colors: bool = False
    depth_tolerance: float | None = None

    def __post_init__(self) -> None:
        from anomalib_3d.render import RIG_PRESETS

        if self.object_frame not in OBJECT_FRAMES:
            msg = f"object_frame must be one of {OBJECT_FRAMES}, got {self.object_frame!r}."
            raise ValueError(msg)
        if self.preset is not None and self.preset not in RIG_PRESETS:
            msg = f"unknown rig preset {self.preset!r}; choose one of {sorted(RIG_PRESETS)} or null (automatic)."
            raise ValueError(msg)
        if self.view_axis is not None and self.view_axis.lower() not in ("x", "y", "z"):
            msg = f"view_axis must be 'x', 'y' or 'z', got {self.view_axis!r}."
            raise ValueError(msg)

    def rig_name(self, organized: bool) -> str:
        """Which views apply: ``"views"``, ``"angles"``, ``"table7"`` or a preset name."""
        if self.views is not None:
            return "views"
        if self.view_angles is not None:
            return "angles"
        if self.num_views is not None or self.view_axis is not None:
            return "table7"
        if self.preset is not None:
            return self.preset
        return "pointad_mvtec" if organized else "pointad_real3d"

    def flips(self, organized: bool) -> bool:
        """Whether clouds are flipped by pi about X (sensor frame -> object frame) first."""
        return self.object_frame == "flip" or (self.object_frame == "auto" and organized)

    def camera_rig(self, image_size: tuple[int, int], organized: bool = False) -> object:
        """The :class:`anomalib_3d.render.CameraRig` for organized / unorganized clouds at ``image_size``."""
        from anomalib_3d.render import SENSOR_TO_OBJECT, pointad_angles, rig_from_rotations, rig_preset, rotation_rig

        name = self.rig_name(organized)
        axis = (self.view_axis or "x").lower()
        common = {"projection": self.projection, "image_size": image_size}
        if name == "views":
            rig = rig_from_rotations(list(self.views), **common)
        elif name == "angles":
            rig = rotation_rig(list(self.view_angles), axis=axis, **common)
        elif name == "table7":
            rig = rotation_rig(pointad_angles(self.num_views or 9), axis=axis, **common)
        else:
            rig = rig_preset(name, **common)
        if self.flips(organized):
            rig = rig.with_pre_rotation(SENSOR_TO_OBJECT, "flip X")
        return rig


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

    def rig_for(self, organized: bool) -> object:
        """The camera rig of organized (sensor-frame) or unorganized clouds."""
        return self._rigs[bool(organized)]

    @property
    def rig(self) -> object:
        """The rig of unorganized clouds (see :meth:`rig_for`)."""
        return self._rigs[False]

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
        b, r = self.backbone, self.render_settings
        rig = self.rig_for(organized)
        parts = (b.model_name, getattr(b, "weights_id", ""), b.feature_layers, b.vv_start_layer, b.precision,
                 rig.rotations.flatten().tolist(), r.projection, self.render_size, r.shading, r.use_colors,
                 r.depth_tolerance)
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]

    def sample_key(self, path: str | None, points: Tensor, radius: float, organized: bool = False) -> str | None:
        """Cache key of one cloud: its file, size, a coordinate checksum, the splat radius actually
        used and the settings (rig included)."""
        if path is None or self.feature_cache is None:
            return None
        checksum = points.detach().double().sum(dim=0).tolist()
        coordinates = ",".join(f"{value:.9e}" for value in checksum)
        return (f"{path}|{points.shape[0]}|{coordinates}|r={float(radius):.6g}|{self.settings_key(organized)}"
                f"|{points.device.type}")

    # -- per-cloud geometry ----------------------------------------------------------------------
    def _pixels_per_unit(self, organized: bool) -> float:
        """Render pixels per normalised unit at the object centre."""
        rig = self.rig_for(organized)
        return rig.ortho_scale_px if rig.projection == "orthographic" else rig.focal_px / rig.camera_distance

    @staticmethod
    def _normalised(points: Tensor) -> Tensor:
        from anomalib_3d.render import normalize_clouds

        normalised, _, _ = normalize_clouds(points.detach().float(), points.new_zeros(points.shape[0], dtype=torch.long), 1)
        return normalised

    @staticmethod
    def median_spacing(points: Tensor) -> float:
        """Median distance of (a fixed, evenly strided subset of) the points to their nearest other point."""
        from anomalib_3d.ops import knn

        num = points.shape[0]
        if num < 2:
            return 0.0
        step = max(1, num // _SPACING_QUERIES)
        _, sq = knn(points, points[::step], 2)
        distances = sq[:, 1].clamp(min=0).sqrt()
        positive = distances[distances > 0]
        return float(positive.median()) if positive.numel() else 0.0

    @staticmethod
    def grid_spacing(points: Tensor, grid_index: Tensor, grid_shape: Sequence[int]) -> float:
        """Median 3D distance between points on horizontally / vertically adjacent grid pixels (0 if none)."""
        height, width = (int(v) for v in grid_shape)
        owner = torch.full((height * width,), -1, dtype=torch.long, device=points.device)
        owner[grid_index.long()] = torch.arange(points.shape[0], device=points.device)
        owner = owner.view(height, width)
        pairs = [(owner[:, :-1], owner[:, 1:]), (owner[:-1, :], owner[1:, :])]
        distances = []
        for first, second in pairs:
            both = (first >= 0) & (second >= 0)
            if bool(both.any()):
                distances.append((points[first[both]] - points[second[both]]).norm(dim=1))
        if not distances:
            return 0.0
        values = torch.cat(distances)
        values = values[values > 0]
        return float(values.median()) if values.numel() else 0.0

    def radius_for_cloud(
        self,
        points: Tensor,
        grid_index: Tensor | None = None,
        grid_shape: Sequence[int] | None = None,
    ) -> float:
        """Splat radius (pixels) of one cloud, from that cloud alone (deterministic).

        The explicit ``point_radius_px`` when set; else a disc of twice the image area each point
        owns: ``sqrt(2 / pi) * pitch`` for organized clouds (``pitch``: the median 3D distance of
        grid neighbours, in render pixels), ``sqrt(2 / ln 2) * d`` for unorganized ones (``d``:
        the median nearest-neighbour distance in render pixels); clamped to ``[1, 8]``.
        """
        if self.render_settings.point_radius_px is not None:
            return float(self.render_settings.point_radius_px)
        organized = grid_index is not None and grid_shape is not None
        normalised = self._normalised(points)
        pixels = self._pixels_per_unit(organized)
        spacing = self.grid_spacing(normalised, grid_index, grid_shape) if organized else 0.0
        factor = _RADIUS_PER_GRID_PITCH
        if spacing <= 0:
            spacing, factor = self.median_spacing(normalised), _RADIUS_PER_MEDIAN_NN
        radius = factor * spacing * pixels
        # Rounded so tiny float differences cannot change the disc (and the cache key).
        return float(min(_MAX_RADIUS_PX, max(_MIN_RADIUS_PX, round(radius, 3))))

    @staticmethod
    def _ptr(batch: Tensor, num_clouds: int) -> list[int]:
        return torch.cat([batch.new_zeros(1), torch.bincount(batch, minlength=num_clouds).cumsum(0)]).tolist()

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
    ) -> list[float]:
        """:meth:`radius_for_cloud` of every cloud."""
        shape = self._grid_shape(grid_shape)
        ptr = self._ptr(batch, num_clouds)
        radii = []
        for cloud in range(num_clouds):
            lo, hi = ptr[cloud], ptr[cloud + 1]
            if hi - lo == 0:
                radii.append(_MIN_RADIUS_PX)
                continue
            index = None if grid_index is None or shape is None else grid_index[lo:hi]
            radii.append(self.radius_for_cloud(points[lo:hi], index, shape if index is not None else None))
        return radii

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
    ) -> object:
        """Render (or only rasterise) ``B`` clouds; returns the renderer's ``RenderOutput``.

        Organized clouds (``grid_index`` and ``grid_shape`` given) use :meth:`rig_for` ``(True)``
        (sensor-frame flip + ``pointad_mvtec`` by default). Every cloud gets its own radius
        (``radii`` or :meth:`cloud_radii`).
        """
        from anomalib_3d.render import rasterize_points, render_points

        organized = grid_index is not None and grid_shape is not None
        if radii is None:
            radii = self.cloud_radii(points, batch, num_clouds, grid_index, grid_shape)
        rig = self.rig_for(organized)
        common = {"point_radius_px": list(radii), "depth_tolerance": self.render_settings.depth_tolerance,
                  "num_clouds": num_clouds}
        if not with_images:
            return rasterize_points(points, batch, rig, **common)
        return render_points(
            points,
            batch,
            rig,
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
        """Gaussian smoothing ``G_sigma`` of per-point scores ``(N,)`` or ``(N, C)``, cloud by cloud.

        Organized clouds: ``scipy.ndimage.gaussian_filter(sigma)`` of the score image on the grid
        (0 where the grid has no point), as the authors. Unorganized: a Gaussian of
        ``sigma * median spacing`` over every neighbour within ``smoothing_truncate`` sigmas
        (or the ``smoothing_k`` nearest when set).
        """
        if self.smoothing_sigma <= 0:
            return scores
        from anomalib_3d.ops.graph import smooth_grid_scores, smooth_scores

        if self.smoothing_on_grid and grid_index is not None and grid_shape is not None:
            return smooth_grid_scores(scores, grid_index, self._grid_shape(grid_shape), batch,
                                      sigma=self.smoothing_sigma, num_clouds=num_clouds)
        out = torch.empty_like(scores)
        ptr = self._ptr(batch, num_clouds)
        for cloud in range(num_clouds):
            lo, hi = ptr[cloud], ptr[cloud + 1]
            spacing = self.median_spacing(points[lo:hi].detach()) if hi - lo >= 2 else 0.0
            if spacing <= 0:
                out[lo:hi] = scores[lo:hi]
                continue
            cloud_points = points[lo:hi].detach()
            sigma = self.smoothing_sigma * spacing
            if self.smoothing_k is not None:
                out[lo:hi] = smooth_scores(cloud_points, scores[lo:hi], k=min(self.smoothing_k, hi - lo), sigma=sigma)
            else:
                out[lo:hi] = smooth_scores(cloud_points, scores[lo:hi], radius=self.smoothing_truncate * sigma,
                                           sigma=sigma)
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
        grid_index: Tensor | None = None,
        grid_shape: Tensor | Sequence[int] | None = None,
    ) -> tuple[object, Tensor, Tensor]:
        """Render output and ``(global (B, V, D), patches (L, B, V, hw, D))``, using the cache."""
        organized = grid_index is not None and grid_shape is not None
        ptr = self._ptr(batch, num_clouds)
        radii = self.cloud_radii(points, batch, num_clouds, grid_index, grid_shape)
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

        Returns:
            ``{"loss": total, "<term>": value}``.
        """
        from anomalib_3d.render import render_mask_like, upsample_maps

        num_clouds = int(labels.shape[0]) if num_clouds is None else num_clouds
        output, glob, patch = self._features_for(points, batch, num_clouds, normals, colors, paths, grid_index,
                                                 grid_shape)
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

        ``grid_index`` + ``grid_shape`` mark the clouds as organized (sensor-frame views, grid
        radius, smoothing on the grid). With RGB as well (``rgb``): the image is scored by the same
        prompts, ``A^m_rgb = G(S_rgb)`` (its map read at each point's grid pixel) and
        ``A^s_rgb = P_a(rgb)``; then ``A^m_mod = 1/2 G(A^m + A^m_rgb)`` and
        ``A^s_mod = 1/2 [1/2 (A^s_rgb + A^s) + max A^m_mod]``. (The paper's text swaps the
        subscripts of ``A^m_rgb`` / ``A^s_rgb``; the map must be the spatial one.)
        """
        from anomalib_3d.render import gather_to_points, upsample_maps

        grid = {"grid_index": grid_index, "grid_shape": grid_shape} if grid_index is not None and grid_shape is not None else {}
        output = self.render(points, batch, num_clouds, normals=normals, colors=colors, with_images=True, **grid)
        glob, patch = self.encode_views(output.images)
        text = self._per_cloud_text(class_names, num_clouds)
        scores = self.score_views(glob, patch, text)
        view_probs = scores.logits.softmax(dim=-1)[..., 1]
        mean_maps = torch.stack([p[:, :, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, V, h, w)
        point_raw = gather_to_points(mean_maps, output, fallback="nearest")
        rgb_map = rgb_score = None
        fuse = rgb is not None and bool(grid)
        if not fuse:
            point_map = self.smooth(points, point_raw, batch, num_clouds, **grid)
            point_score = 0.5 * (view_probs.mean(dim=1) + segment_max(point_map, batch, num_clouds))
            anomaly_map, pred_score = point_map, point_score
        else:
            rgb_score, rgb_raw = self.rgb_scores(rgb, grid_index, grid_shape, batch, text)
            # One pass for both maps: smooth them as two channels.
            both = self.smooth(points, torch.stack([point_raw, rgb_raw], dim=1), batch, num_clouds, **grid)
            point_map, rgb_map = both.unbind(1)
            point_score = 0.5 * (view_probs.mean(dim=1) + segment_max(point_map, batch, num_clouds))
            anomaly_map = 0.5 * self.smooth(points, point_map + rgb_map, batch, num_clouds, **grid)
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
