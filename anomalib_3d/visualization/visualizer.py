"""3D anomaly heatmaps as an anomalib ``Visualizer`` (a Lightning callback).

For every test (or predict) sample :class:`PointCloudVisualizer` writes one PNG:

* row "ground truth": the cloud rendered from ``V`` views, anomalous points red on grey;
* row "prediction": the same views coloured by the per-point anomaly score through a **fixed**
  colormap range (default ``(0, 1)``: anomalib's ``PostProcessor`` maps scores to ``[0, 1]`` with
  the threshold at 0.5, so colours mean the same thing on every sample; pass
  ``score_range=(lo, hi)`` for raw scores);
* for organized clouds (``image`` + ``grid_index``) and anomalib ``DepthBatch`` inputs, a third row
  with the RGB image, the ground truth over it and the 2D heatmap over it.

The title gives the file name, category, object score, predicted and true label. Files go where
anomalib's ``ImageVisualizer`` puts its images, ``trainer.default_root_dir / "images"``, under
``<category>/<folders after the category folder in the source path>/<stem>.png`` (e.g.
``images/bagel/test/crack/xyz/000.png``), so samples of different defect types never collide.
``export_ply=True`` also writes ``<stem>.ply`` next to it (score colours + a ``scalar_score``
property, opened by CloudCompare / MeshLab).

With ``metrics_report=True`` (default) the visualizer also owns a
:class:`anomalib_3d.metrics.MetricsReport`, so the per-category tables and curves come with every
model that uses this visualizer.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from anomalib_3d.runtime.files import atomic_write
from anomalib_3d.visualization._checks import ScoreRangeWarning, _item, check_visualizer_args
from anomalib_3d.visualization.colormap import gt_to_rgb, overlay_heatmap, score_to_rgb

logger = logging.getLogger(__name__)

#: View directions as ``(degrees about X, degrees about Y)`` applied after the base orientation.
DEFAULT_VIEWS_UNORGANIZED: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-30.0, 45.0), (-30.0, -45.0), (0.0, 180.0))
#: Organized scans are 2.5D: every view stays on the scanner's side of the surface.
DEFAULT_VIEWS_ORGANIZED: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-35.0, 0.0), (0.0, 35.0), (0.0, -35.0))


def _rotation(axis: str, degrees: float) -> torch.Tensor:
    from anomalib_3d.render import rotation_matrices

    return rotation_matrices([math.radians(degrees)], axis)[0]


def view_rig(
    views: Sequence[tuple[float, float]],
    image_size: int | tuple[int, int],
    organized: bool,
) -> Any:  # noqa: ANN401
    """Camera rig of the visualizer.

    Args:
        views: ``(degrees about X, degrees about Y)`` per view.
        image_size: render size.
        organized: organized scans (camera frame: x right, y down, z away from the scanner) are
            first turned by π about X so that view ``(0, 0)`` looks from the scanner, like the RGB
            image; unorganized clouds are shown in their own frame.

    Returns:
        ``anomalib_3d.render.CameraRig``.
    """
    from anomalib_3d.render import CameraRig

    base = _rotation("x", 180.0) if organized else torch.eye(3)
    rotations = torch.stack([_rotation("x", ax) @ _rotation("y", ay) @ base for ax, ay in views])
    return CameraRig(rotations=rotations, projection="orthographic", image_size=image_size, margin=0.08)


def _view_caption(view: tuple[float, float]) -> str:
    ax, ay = view
    if ax == 0 and ay == 0:
        return "front"
    parts = [f"{name} {deg:+.0f}°" for name, deg in (("X", ax), ("Y", ay)) if deg]
    return ", ".join(parts)


def _display_rgb(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` image as float in ``[0, 1]`` for display (ImageNet-normalised input is stretched)."""
    image = image.detach().float().cpu()
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0:
        return image
    if lo >= 0.0 and hi <= 255.0:
        return image / 255.0
    return (image - lo) / max(hi - lo, 1e-12)


def _resize_map(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    from anomalib_3d.data.adapters import resize_nearest

    if tuple(values.shape[-2:]) == tuple(size):
        return values
    return resize_nearest(values, size)


def _plain(value: object) -> Any:  # noqa: ANN401
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def relative_output_path(source: str | None, category: str, fallback_name: str) -> Path:
    """``<category>/<folders after the category folder>/<stem>`` of a sample (no suffix).

    Mirrors anomalib's ``generate_output_filename`` (keep the structure below the category
    folder; without one, keep the parent folder) and always leads with the category.
    """
    if not source:
        return Path(category) / fallback_name
    path = Path(source)
    parts = path.parts[:-1]
    lowered = [p.lower() for p in parts]
    if category.lower() in lowered:
        start = len(lowered) - 1 - lowered[::-1].index(category.lower())
        kept = parts[start + 1 :]
    else:
        kept = parts[-1:]
    return Path(category, *kept) / path.stem


class PointCloudVisualizer(ScoreRangeWarning, Visualizer):
    """Multi-view 3D heatmaps (and 2D heatmaps for organized data) of test predictions.

    Args:
        views: ``(degrees about X, degrees about Y)`` per view; default 4 views
            (:data:`DEFAULT_VIEWS_UNORGANIZED` / :data:`DEFAULT_VIEWS_ORGANIZED`).
        num_views: use only the first ``num_views`` default views (ignored with ``views``).
        image_size: render size per view (pixels).
        score_range: fixed colormap range; ``(0, 1)`` suits anomalib's normalised scores.
        cmap: matplotlib colormap of the scores.
        point_radius_px: splat radius; ``None`` picks it from the point count.
        shading: Lambert shading of the renders (needs normals: the batch's, else estimated).
        max_render_points: clouds larger than this are drawn from an evenly strided subset of
            their points (every ``ceil(N / max_render_points)``-th point): at a few hundred pixels
            per view more points add nothing visible, and normal estimation dominates the cost
            (300k points: ~20 s on 2 CPU cores, ~3 s at 50k). ``None`` draws every point. The PLY
            export always holds every point.
        heatmap_alpha: opacity of the 2D heatmap over RGB.
        output_dir: root folder; default ``trainer.default_root_dir / "images"``.
        export_ply: also write a coloured ``.ply`` with a ``scalar_score`` property per sample.
        max_samples: save at most this many samples per run (``None``: all); the rest are skipped
            with one warning.
        metrics_report: ``True`` owns a default :class:`~anomalib_3d.metrics.MetricsReport`; an
            instance is used as given; ``False`` / ``None`` for none.
        dpi: resolution of the saved figure.
    """

    _RANGE_WARNING = (
        "PointCloudVisualizer: anomaly scores span [{lo:.4g}, {hi:.4g}] but the fixed colormap "
        "range is {score_range}; colours saturate. Scores are expected normalised by "
        "anomalib's PostProcessor; for raw scores pass score_range=(low, high)."
    )

    def __init__(
        self,
        views: Sequence[tuple[float, float]] | None = None,
        num_views: int = 4,
        image_size: int = 256,
        score_range: tuple[float, float] = (0.0, 1.0),
        cmap: str = "jet",
        point_radius_px: float | None = None,
        shading: bool = True,
        max_render_points: int | None = 50_000,
        heatmap_alpha: float = 0.5,
        output_dir: str | Path | None = None,
        export_ply: bool = False,
        max_samples: int | None = None,
        metrics_report: bool | Callback | None = True,
        dpi: int = 100,
    ) -> None:
        super().__init__()
        check_visualizer_args(score_range, "num_views", num_views, "max_samples", max_samples)
        self.views = None if views is None else [tuple(map(float, v)) for v in views]
        self.num_views = num_views
        self.image_size = int(image_size)
        self.score_range = (float(score_range[0]), float(score_range[1]))
        self.cmap = cmap
        self.point_radius_px = point_radius_px
        self.shading = shading
        self.max_render_points = max_render_points
        self.heatmap_alpha = heatmap_alpha
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.export_ply = export_ply
        self.max_samples = max_samples
        self.dpi = dpi
        if metrics_report is True:
            from anomalib_3d.metrics.report import MetricsReport

            metrics_report = MetricsReport()
        self.metrics_report = metrics_report or None
        self._saved = 0
        self._skipped = 0
        self._warned_range = False

    # ----------------------------------------------------------------------------------------
    # rendering
    # ----------------------------------------------------------------------------------------
    def _views_for(self, organized: bool) -> list[tuple[float, float]]:
        if self.views is not None:
            return list(self.views)
        defaults = DEFAULT_VIEWS_ORGANIZED if organized else DEFAULT_VIEWS_UNORGANIZED
        return list(defaults[: self.num_views])

    def render_views(
        self,
        points: torch.Tensor,
        batch_index: torch.Tensor,
        scores: torch.Tensor | None,
        gt_mask: torch.Tensor | None,
        normals: torch.Tensor | None,
        organized: bool,
        num_clouds: int,
    ) -> dict[str, torch.Tensor]:
        """Render the ground-truth and score colourings of all clouds of a batch.

        Args:
            points: ``(ΣN, 3)``; batch_index: ``(ΣN,)`` sorted; scores: ``(ΣN,)`` or ``None``;
            gt_mask: ``(ΣN,)`` bool or ``None``; normals: ``(ΣN, 3)`` or ``None``.
            organized: choose the organized default views / base orientation.
            num_clouds: ``B``.

        Returns:
            ``{"gt": (B, V, 3, H, W), "pred": (B, V, 3, H, W)}`` float in ``[0, 1]`` (keys present
            when the corresponding input is).
        """
        from anomalib_3d.render import radius_for_point_count, render_points

        keep = _strided_subset(batch_index, num_clouds, self.max_render_points)
        if keep is not None:
            points, batch_index = points[keep], batch_index[keep]
            scores = None if scores is None else scores[keep]
            gt_mask = None if gt_mask is None else gt_mask[keep]
            normals = None if normals is None else normals[keep]
        views = self._views_for(organized)
        size = (self.image_size, self.image_size)
        rig = view_rig(views, size, organized).to(points.device)
        counts = torch.bincount(batch_index, minlength=num_clouds)
        radius = self.point_radius_px
        if radius is None:
            radius = radius_for_point_count(int(counts.max()) if counts.numel() else 1, size)
        shading = self.shading
        if shading and normals is None:
            normals = self._estimate_normals(points, batch_index, counts)
            shading = normals is not None
        colourings: dict[str, torch.Tensor] = {}
        if gt_mask is not None:
            colourings["gt"] = gt_to_rgb(gt_mask.to(points.device))
        if scores is not None:
            colourings["pred"] = score_to_rgb(scores.to(points.device), *self.score_range, cmap=self.cmap)
        if not colourings:
            return {}
        # One rasterisation serves every colouring: render white (= the shading intensity) and
        # splat the colourings as extra channels through the same z-buffer.
        rendered = render_points(
            points,
            batch_index,
            rig,
            point_radius_px=radius,
            colors=None,
            base_color=(1.0, 1.0, 1.0),
            background=1.0,
            normals=normals if shading else None,
            shading=shading,
            values=torch.cat(list(colourings.values()), dim=1),
            values_background=1.0,
            num_clouds=num_clouds,
        )
        intensity = rendered.images[:, :, :1]  # (B, V, 1, H, W); background 1
        out: dict[str, torch.Tensor] = {}
        for i, key in enumerate(colourings):
            out[key] = (rendered.values[:, :, 3 * i : 3 * i + 3] * intensity).clamp(0.0, 1.0).cpu()
        return out

    @staticmethod
    def _estimate_normals(points: torch.Tensor, batch_index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
        k = 16
        if counts.numel() == 0 or int(counts.min()) < k:
            return None
        try:
            from anomalib_3d.ops import estimate_normals

            normals, _ = estimate_normals(points, k=k, batch=batch_index)
        except Exception as exc:  # noqa: BLE001 - shading is cosmetic; flat colours still show everything
            logger.warning("PointCloudVisualizer: normal estimation failed (%s); rendering without shading.", exc)
            return None
        return normals

    # ----------------------------------------------------------------------------------------
    # batch -> per-sample panels
    # ----------------------------------------------------------------------------------------
    def _samples(self, batch: Any) -> list[dict[str, Any]]:  # noqa: ANN401
        """Everything needed to draw each sample of a batch (CPU tensors)."""
        from anomalib_3d.data.dataclasses import PointCloudBatch

        if isinstance(batch, PointCloudBatch):
            return self._point_batch_samples(batch)
        anomaly_map = getattr(batch, "anomaly_map", None)
        if anomaly_map is not None and _plain(anomaly_map).ndim >= 2:
            return self._pixel_batch_samples(batch)
        msg = (
            f"PointCloudVisualizer cannot draw a {type(batch).__name__}: expected a PointCloudBatch "
            "or a batch with (B, H, W) anomaly maps (anomalib's DepthBatch)."
        )
        raise TypeError(msg)

    def _point_batch_samples(self, batch: Any) -> list[dict[str, Any]]:  # noqa: ANN401
        points = _plain(batch.points)
        batch_index = _plain(batch.batch_index)
        num_clouds = batch.batch_size
        scores = _plain(batch.anomaly_map)
        gt = _plain(batch.gt_mask)
        organized = batch.grid_index is not None and batch.grid_shape is not None
        if scores is not None:
            scores = scores.detach().float()
            self._check_range(scores)
        renders = self.render_views(
            points.detach().float(), batch_index, scores, gt, _plain(batch.normals), organized, num_clouds,
        )
        ptr = batch.ptr.tolist()
        samples = []
        for b in range(num_clouds):
            lo, hi = ptr[b], ptr[b + 1]
            sample = self._common_fields(batch, b)
            sample["organized"] = organized
            sample["renders"] = {key: value[b] for key, value in renders.items()}
            sample["points"] = points[lo:hi].detach().cpu()
            sample["scores"] = None if scores is None else scores[lo:hi].cpu()
            if organized and batch.image is not None:
                sample["panels"] = self._organized_panels(batch, b, lo, hi, scores)
            samples.append(sample)
        return samples

    def _organized_panels(
        self, batch: Any, b: int, lo: int, hi: int, scores: torch.Tensor | None,  # noqa: ANN401
    ) -> dict[str, torch.Tensor]:
        """RGB, GT and heatmap of organized cloud ``b`` at the RGB resolution."""
        rgb = _display_rgb(_plain(batch.image)[b])
        size = tuple(rgb.shape[-2:])
        height, width = (int(v) for v in _plain(batch.grid_shape)[b])
        grid_index = _plain(batch.grid_index)[lo:hi].cpu()
        panels: dict[str, torch.Tensor] = {"rgb": rgb.permute(1, 2, 0)}
        if batch.pixel_gt_mask is not None:
            gt2d = _resize_map(_plain(batch.pixel_gt_mask)[b].cpu().float()[None], size)[0] > 0.5
            panels["gt"] = self._gt_overlay(rgb, gt2d)
        if scores is not None:
            flat = torch.full((height * width,), float("nan"))
            flat[grid_index] = scores[lo:hi].cpu()
            heat = _resize_map(flat.view(1, height, width), size)[0]
            panels["heat"] = self._heat_overlay(rgb, heat)
        return panels

    def _pixel_batch_samples(self, batch: Any) -> list[dict[str, Any]]:  # noqa: ANN401
        """anomalib ``DepthBatch`` (or any batch with (B, H, W) maps): 2D panels, 3D views if xyz."""
        maps = _plain(batch.anomaly_map).detach().float().cpu()
        if maps.ndim == 4:
            maps = maps[:, 0]
        self._check_range(maps)
        image = _plain(getattr(batch, "image", None))
        gt = _plain(getattr(batch, "gt_mask", None))
        renders, point_scores, clouds = self._depth_renders(batch, maps)
        ptr = clouds.ptr.tolist() if clouds is not None else None
        samples = []
        for b in range(maps.shape[0]):
            sample = self._common_fields(batch, b)
            sample["organized"] = True
            sample["renders"] = {key: value[b] for key, value in renders.items()}
            if clouds is not None:
                lo, hi = ptr[b], ptr[b + 1]
                sample["points"] = _plain(clouds.points)[lo:hi].cpu()
                sample["scores"] = point_scores[lo:hi].cpu()
            panels: dict[str, torch.Tensor] = {}
            if image is not None:
                rgb = _display_rgb(image[b])
                size = tuple(rgb.shape[-2:])
                panels["rgb"] = rgb.permute(1, 2, 0)
                if gt is not None:
                    gt2d = _resize_map(gt[b].detach().float().cpu().reshape(1, *gt.shape[-2:]), size)[0] > 0.5
                    panels["gt"] = self._gt_overlay(rgb, gt2d)
                panels["heat"] = self._heat_overlay(rgb, _resize_map(maps[b][None], size)[0])
            else:
                panels["heat"] = score_to_rgb(maps[b], *self.score_range, cmap=self.cmap)
            sample["panels"] = panels
            samples.append(sample)
        return samples

    def _depth_renders(
        self, batch: Any, maps: torch.Tensor,  # noqa: ANN401
    ) -> tuple[dict[str, torch.Tensor], Any, Any]:  # noqa: ANN401
        """3D views of a ``DepthBatch``: its xyz as points, scores read from the pixel map."""
        if getattr(batch, "depth_map", None) is None:
            return {}, None, None
        from anomalib_3d.data.adapters import depth_batch_to_point_batch

        try:
            clouds = depth_batch_to_point_batch(batch)
        except Exception as exc:  # noqa: BLE001 - 3D views are optional here; the 2D panels still render
            logger.warning("PointCloudVisualizer: cannot turn this DepthBatch into points (%s); 2D panels only.", exc)
            return {}, None, None
        height, width = (int(v) for v in clouds.grid_shape[0])
        grid_maps = _resize_map(maps, (height, width)).reshape(maps.shape[0], -1)
        scores = grid_maps[clouds.batch_index.cpu(), clouds.grid_index.cpu()]
        renders = self.render_views(
            _plain(clouds.points).float(), clouds.batch_index, scores, clouds.gt_mask, None, True, clouds.batch_size,
        )
        return renders, scores, clouds

    @staticmethod
    def _common_fields(batch: Any, b: int) -> dict[str, Any]:  # noqa: ANN401
        source = None
        for name in ("point_path", "depth_path", "image_path"):
            source = _item(getattr(batch, name, None), b)
            if source:
                break
        pred_score = _item(_plain(getattr(batch, "pred_score", None)), b)
        pred_label = _item(_plain(getattr(batch, "pred_label", None)), b)
        gt_label = _item(_plain(getattr(batch, "gt_label", None)), b)
        return {
            "source": source,
            "category": _item(getattr(batch, "category", None), b),
            "pred_score": None if pred_score is None else float(pred_score),
            "pred_label": None if pred_label is None else bool(pred_label),
            "gt_label": None if gt_label is None else bool(gt_label),
            "renders": {},
            "panels": {},
            "points": None,
            "scores": None,
        }

    def _gt_overlay(self, rgb: torch.Tensor, gt2d: torch.Tensor) -> torch.Tensor:
        """Anomalous pixels tinted red over the RGB image, ``(H, W, 3)``."""
        base = rgb.permute(1, 2, 0).clone()
        red = torch.tensor([0.86, 0.08, 0.08])
        base[gt2d] = 0.4 * base[gt2d] + 0.6 * red
        return base

    def _heat_overlay(self, rgb: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        """Heatmap over RGB where scores exist (NaN = no point: plain RGB), ``(H, W, 3)``."""
        valid = ~torch.isnan(heat)
        blended = overlay_heatmap(rgb, torch.nan_to_num(heat, nan=self.score_range[0]), *self.score_range,
                                  cmap=self.cmap, alpha=self.heatmap_alpha)
        return torch.where(valid.unsqueeze(-1), blended, rgb.permute(1, 2, 0))

    # ----------------------------------------------------------------------------------------
    # figure
    # ----------------------------------------------------------------------------------------
    def _title(self, sample: dict[str, Any], fallback: str) -> str:
        name = Path(sample["source"]).name if sample["source"] else fallback
        parts = [name]
        if sample["category"]:
            parts.append(sample["category"])
        if sample["pred_score"] is not None:
            verdict = "" if sample["pred_label"] is None else (" → anomalous" if sample["pred_label"] else " → normal")
            parts.append(f"score {sample['pred_score']:.3f}{verdict}")
        if sample["gt_label"] is not None:
            parts.append("label: " + ("anomalous" if sample["gt_label"] else "normal"))
        return "  |  ".join(parts)

    def figure(self, sample: dict[str, Any], title: str) -> np.ndarray:
        """Draw one sample; returns the figure as ``(H, W, 3) uint8``."""
        from matplotlib import colors as mcolors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.figure import Figure

        rows: list[tuple[str, list[tuple[str, torch.Tensor]]]] = []
        views = self._views_for(sample["organized"])
        captions = [_view_caption(v) for v in views]
        for key, label in (("gt", "ground truth"), ("pred", "prediction")):
            if key in sample["renders"]:
                images = sample["renders"][key]
                rows.append((label, [(captions[v], images[v].permute(1, 2, 0)) for v in range(images.shape[0])]))
        panels = sample["panels"]
        if panels:
            names = {"rgb": "RGB", "gt": "ground truth (2D)", "heat": "anomaly map (2D)"}
            rows.append(("image", [(names[k], panels[k]) for k in ("rgb", "gt", "heat") if k in panels]))
        if not rows:
            msg = "nothing to draw: the sample has neither scores, ground truth nor an image."
            raise ValueError(msg)
        num_cols = max(len(cells) for _, cells in rows)
        cell = 2.6
        fig = Figure(figsize=(cell * num_cols + 0.9, cell * len(rows) + 0.6), dpi=self.dpi)
        canvas = FigureCanvasAgg(fig)
        axes = fig.subplots(len(rows), num_cols, squeeze=False)
        for r, (label, cells) in enumerate(rows):
            for c in range(num_cols):
                axis = axes[r][c]
                axis.set_xticks([])
                axis.set_yticks([])
                if c >= len(cells):
                    axis.set_axis_off()
                    continue
                caption, image = cells[c]
                axis.imshow(image.clamp(0, 1).numpy(), interpolation="nearest")
                axis.set_title(caption, fontsize=8)
                if c == 0:
                    axis.set_ylabel(label, fontsize=9)
        fig.suptitle(title, fontsize=9)
        fig.subplots_adjust(left=0.04, right=0.9, top=0.88 if len(rows) > 1 else 0.8, bottom=0.02, wspace=0.04,
                            hspace=0.18)
        colorbar_axis = fig.add_axes((0.915, 0.1, 0.015, 0.7))
        mappable = ScalarMappable(norm=mcolors.Normalize(*self.score_range), cmap=self.cmap)
        fig.colorbar(mappable, cax=colorbar_axis).ax.tick_params(labelsize=7)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def visualize(self, batch: Any) -> list[np.ndarray]:  # noqa: ANN401
        """Figures of every sample of a (post-processed) batch, ``(H, W, 3) uint8`` each."""
        samples = self._samples(batch)
        return [self.figure(sample, self._title(sample, f"sample {i}")) for i, sample in enumerate(samples)]

    # ----------------------------------------------------------------------------------------
    # saving and callbacks
    # ----------------------------------------------------------------------------------------
    def save_batch(
        self,
        batch: Any,  # noqa: ANN401
        output_dir: str | Path,
        batch_idx: int = 0,
        default_category: str | None = None,
    ) -> list[Path]:
        """Write the PNG (and PLY) of every sample of ``batch`` under ``output_dir``.

        Args:
            batch: post-processed ``PointCloudBatch`` or ``DepthBatch``.
            output_dir: root folder (files go to ``<category>/<source folders>/<stem>.png``).
            batch_idx: names samples without a source path.
            default_category: category of samples whose batch has none (default ``"all"``).

        Returns:
            Paths of the written PNGs.
        """
        from PIL import Image

        output_dir = Path(output_dir)
        remaining = None if self.max_samples is None else self.max_samples - self._saved
        if remaining is not None and remaining <= 0:
            self._skip(len(batch))
            return []
        samples = self._samples(_limit(batch, remaining))
        written = []
        for i, sample in enumerate(samples):
            category = sample["category"] or default_category or "all"
            sample["category"] = category
            relative = relative_output_path(sample["source"], category, f"batch{batch_idx:04d}_{i:02d}")
            png = output_dir / relative.with_suffix(".png")
            png.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(png) as handle:  # a stopped or failed run leaves no truncated picture
                Image.fromarray(self.figure(sample, self._title(sample, png.stem))).save(handle, format="PNG")
            written.append(png)
            if self.export_ply and sample["points"] is not None and sample["scores"] is not None:
                self._write_ply(png.with_suffix(".ply"), sample["points"], sample["scores"])
        self._saved += len(samples)
        if remaining is not None and len(batch) > remaining:
            self._skip(len(batch) - remaining)
        return written

    def _skip(self, count: int) -> None:
        if self._skipped == 0:
            warnings.warn(
                f"PointCloudVisualizer: max_samples={self.max_samples} images saved; skipping the remaining "
                "samples of this run (set max_samples=None to save all).",
                stacklevel=3,
            )
        self._skipped += count

    def _write_ply(self, path: Path, points: torch.Tensor, scores: torch.Tensor) -> None:
        from anomalib_3d.data.io import write_ply

        colors = score_to_rgb(scores.float(), *self.score_range, cmap=self.cmap)
        write_ply(path, points.numpy(), colors=colors.numpy(), scalars={"score": scores.numpy()}, binary=True)

    @staticmethod
    def _datamodule_category(trainer: Any) -> str | None:  # noqa: ANN401
        datamodule = getattr(trainer, "datamodule", None)
        category = getattr(datamodule, "category", None) if datamodule is not None else None
        return str(category) if category else None

    def _output_root(self, trainer: Any) -> Path:  # noqa: ANN401
        if self.output_dir is None:
            return Path(trainer.default_root_dir) / "images"
        return self.output_dir

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
        """Reset the sample counter (and the report)."""
        self._saved = 0
        self._skipped = 0
        if self.metrics_report is not None:
            self.metrics_report.on_test_start(trainer, pl_module)

    def on_test_batch_end(
        self,
        trainer: Any,  # noqa: ANN401
        pl_module: Any,  # noqa: ANN401
        outputs: Any,  # noqa: ANN401
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save the figures of a test batch (and feed the report)."""
        if self.metrics_report is not None:
            self.metrics_report.on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        # Every rank draws its own share of the samples.
        self.save_batch(batch, self._output_root(trainer), batch_idx, self._datamodule_category(trainer))

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
        """Write the report; say where the images are."""
        if self.metrics_report is not None:
            self.metrics_report.on_test_epoch_end(trainer, pl_module)
        if self._saved:
            rank_zero_info(f"PointCloudVisualizer: {self._saved} figures written under {self._output_root(trainer)}")
        if self._skipped:
            logger.warning(
                "PointCloudVisualizer: %d samples not drawn (max_samples=%s).", self._skipped, self.max_samples,
            )

    def on_predict_batch_end(
        self,
        trainer: Any,  # noqa: ANN401
        pl_module: Any,  # noqa: ANN401
        outputs: Any,  # noqa: ANN401
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save the figures of a predict batch (no report: predictions carry no labels)."""
        del pl_module, outputs, dataloader_idx
        self.save_batch(batch, self._output_root(trainer), batch_idx, self._datamodule_category(trainer))


def _strided_subset(batch_index: torch.Tensor, num_clouds: int, max_points: int | None) -> torch.Tensor | None:
    """``(ΣN,)`` bool: every ``ceil(N_b / max_points)``-th point of each cloud; ``None`` = keep all."""
    if max_points is None:
        return None
    counts = torch.bincount(batch_index, minlength=num_clouds)
    if counts.numel() == 0 or int(counts.max()) <= max_points:
        return None
    stride = torch.clamp(torch.div(counts + max_points - 1, max_points, rounding_mode="floor"), min=1)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(batch_index.numel(), device=batch_index.device) - starts[batch_index]
    return offset % stride[batch_index] == 0


def _limit(batch: Any, count: int | None) -> Any:  # noqa: ANN401
    """The first ``count`` samples of a batch (the batch itself when all are wanted)."""
    if count is None or count >= len(batch):
        return batch
    from anomalib_3d.data.dataclasses import PointCloudBatch

    if isinstance(batch, PointCloudBatch):
        return PointCloudBatch.collate(batch.items[:count])
    from anomalib_3d.metrics.report import select_samples

    return select_samples(batch, list(range(count)))


__all__ = [
    "DEFAULT_VIEWS_ORGANIZED",
    "DEFAULT_VIEWS_UNORGANIZED",
    "PointCloudVisualizer",
    "relative_output_path",
    "view_rig",
]
