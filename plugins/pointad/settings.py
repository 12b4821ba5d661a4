"""Every switch of the PointAD model (backbone, prompts, views, loss, scoring), once.

:class:`~anomalib_3d_plugins.pointad.lightning_model.PointAD` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds a :class:`PointADSettings` from them;
:meth:`~anomalib_3d_plugins.pointad.torch_model.PointADModel.from_settings` assembles the torch
model (frozen CLIP, prompts, render settings, loss, feature cache) from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anomalib_3d.settings import ModelSettings

from .render_settings import RenderSettings


def as_views(views: tuple[Any, ...] | list[Any] | None) -> tuple | None:
    """Rotation specs from YAML / CLI lists (``[x, -45]`` pairs become ``("x", -45.0)``) as a tuple."""
    if views is None:
        return None

    def convert(spec: Any) -> Any:  # noqa: ANN401
        if isinstance(spec, (list, tuple)) and len(spec) == 2 and isinstance(spec[0], str):
            return (spec[0], float(spec[1]))
        if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, (list, tuple)) and len(s) == 2
                                                            and isinstance(s[0], str) for s in spec):
            return tuple(convert(s) for s in spec)
        return spec

    return tuple(convert(v) for v in views)


@dataclass(frozen=True)
class PointADSettings(ModelSettings):
    """The switches of the PointAD torch model and its parts."""

    # -- frozen CLIP (:class:`~anomalib_3d_plugins.pointad.clip_backbone.FrozenCLIP`)
    #: open_clip model name (default ``ViT-L-14-336``), a tiny test config name
    #: (``pointad-tiny-vit``) or an open_clip model config dict.
    backbone: str | dict[str, Any] = "ViT-L-14-336"
    #: weights tag (``openai``), local checkpoint path, or ``None`` (random, tests only; the backbone
    #: is then saved in checkpoints since it cannot be rebuilt).
    pretrained: str | None = "openai"
    #: vision blocks whose patch tokens are used (default the quarters: 6/12/18/24; the authors'
    #: MVTec 3D-AD / Eyecandies runs use ``[24]``).
    feature_layers: tuple[int, ...] | None = None
    #: AnomalyCLIP's value-value attention on a parallel stream (no weight change).
    vv_attention: bool = True
    #: first V-V block (default block 6 of 24, a quarter of other depths; independent of ``feature_layers``).
    vv_start_layer: int | None = None
    #: backbone compute, ``auto`` = fp16 autocast on CUDA.
    precision: str = "auto"
    # -- prompts (:class:`~anomalib_3d_plugins.pointad.prompts.PromptLearner`)
    #: learnable words per template.
    prompt_length: int = 12
    #: ``True`` PointAD ("[V..][object]"), ``False`` PointAD-CoOp (class names).
    object_agnostic: bool = True
    #: learnable tokens inside the text encoder's blocks: ``deep_prompt_length`` per block in the
    #: first ``deep_prompt_depth`` blocks (default three quarters: 9 of 12).
    deep_prompts: bool = True
    deep_prompt_length: int = 4
    deep_prompt_depth: int | None = None
    #: the authors' released prompt file (``epoch_15.pth``, ``{"prompt_learner": {...}}``) loaded
    #: into the prompts at construction.
    prompt_checkpoint: str | None = None
    # -- views and drawing (:class:`~anomalib_3d_plugins.pointad.render_settings.RenderSettings`)
    #: view preset (``pointad_mvtec``: X -45..45 + Y -30..30, the authors' MVTec rig;
    #: ``pointad_real3d``: the paper's 9 X-angles); ``None`` = ``pointad_mvtec`` for organized
    #: clouds, ``pointad_real3d`` for unorganized ones.
    rig: str | None = None
    #: explicit rotations, each ``[axis, degrees]``, a list of those (composed) or a 3x3 matrix.
    views: tuple[Any, ...] | None = None
    #: the paper's Table 7 view set (1, 3, 5, 7, 9, 11) about ``view_axis`` (overrides ``rig``).
    num_views: int | None = None
    #: explicit rotation angles in radians about ``view_axis`` (overrides ``num_views``).
    view_angles: tuple[float, ...] | None = None
    #: axis of ``view_angles`` / ``num_views``; alone: the 9 Table 7 angles about it.
    view_axis: str | None = None
    #: ``auto`` (flip organized sensor-frame scans by pi about X, as the authors), ``flip`` (every
    #: cloud) or ``none``.
    object_frame: str = "auto"
    #: ``orthographic`` or ``pinhole``.
    projection: str = "orthographic"
    #: render size (default the backbone's input size, 336).
    render_size: int | None = None
    #: splat radius for every cloud (default per cloud: organized grid pitch or nearest-neighbour spacing).
    point_radius_px: float | None = None
    #: render point colours (off: geometry only; RGB goes through its own branch).
    use_colors: bool = False
    #: ``ours`` (bounding-sphere framing, discs sized from the cloud's sampling, Lambert shading:
    #: fast, for prompts trained here) or ``official`` (the authors' Open3D pictures: per-view
    #: framing, square points of the dataset's size in a 1024 / 1036 px window resized to 336,
    #: Open3D's lighting, nearest-point visibility; see ``anomalib_3d_plugins.pointad.official``);
    #: ``None`` = ``official`` with a ``prompt_checkpoint`` (the released prompts were fitted on
    #: those pictures), else ``ours``.
    render_style: str | None = None
    #: official style: one square point size (window pixels) for every cloud instead of the
    #: preset's per-category size.
    point_size_px: float | None = None
    # -- hybrid loss (:class:`~anomalib_3d_plugins.pointad.loss.HybridLoss`, Table 6)
    #: the four terms of the hybrid loss, each a switch: point-level global (cross-entropy of the
    #: view-averaged object probabilities) and local (Dice of the point maps gathered from the views) ...
    loss_global_3d: bool = True
    loss_local_3d: bool = True
    #: ... and pixel-level global (cross-entropy per view) and local (focal + Dice per rendered view).
    loss_global_2d: bool = True
    loss_local_2d: bool = True
    #: ``tau`` of the cosine similarities.
    temperature: float = 0.07
    # -- scores
    #: Gaussian width: grid pixels for organized clouds (the authors' ``gaussian_filter(sigma=4)``),
    #: median point spacings otherwise (0 = off).
    smoothing_sigma: float = 4.0
    #: ``None``: radius Gaussian (``smoothing_truncate`` sigmas) on unorganized clouds; an int: the
    #: ``k`` nearest neighbours instead.
    smoothing_k: int | None = None
    #: support of the radius Gaussian in sigmas (>= 3).
    smoothing_truncate: float = 3.0
    #: smooth organized clouds on their grid (off: on the points).
    smoothing_on_grid: bool = True
    #: ``paper`` or ``official`` (the authors' ``test.py``: whole-image maps,
    #: ``max fused + (P_rgb + mean_v P) / 2``, background blacked out, antialiased resize);
    #: ``None`` = ``official`` with the official style, else ``paper``.
    rgb_fusion: str | None = None
    #: memory budget of the frozen-feature cache in GiB (0 disables it).
    feature_cache_gb: float = 8.0

    @property
    def style(self) -> str:
        """The render style in effect (``render_style``, else chosen by ``prompt_checkpoint``)."""
        return self.render_style or ("official" if self.prompt_checkpoint is not None else "ours")

    def render_settings(self) -> RenderSettings:
        """The views and drawing these settings ask for."""
        return RenderSettings(
            preset=self.rig,
            views=as_views(self.views),
            num_views=self.num_views,
            view_angles=self.view_angles,
            view_axis=self.view_axis,
            object_frame=self.object_frame,
            projection=self.projection,
            image_size=self.render_size,
            point_radius_px=self.point_radius_px,
            use_colors=self.use_colors,
            style=self.style,
            point_size_px=self.point_size_px,
        )


__all__ = ["PointADSettings", "as_views"]
