"""Pictures of multi-view scene predictions: 3D boxes projected into every view.

:func:`draw_scene` draws one scene (``V`` calibrated views, ``K`` world-space boxes) as a grid of
panels, one column per view:

* row "prediction": every predicted box's 12 edges coloured by its score through the project's
  fixed-range colormap (:func:`~anomalib_3d.visualization.colormap.score_to_rgb`, default
  ``(0, 1)``, ``jet``) with the score written beside the box, and a colour bar on the right;
* row "ground truth": the annotated boxes, normal green and anomalous red (grey when the labels
  are unknown), with the object names when given.

Boxes are projected with :func:`anomalib_3d.render.volume.project_points` (OpenCV cameras, pixel
``(u, v)`` covering ``[u, u + 1) x [v, v + 1)``). Edges are clipped against a near plane in front
of the camera *in 3D* before projection, so a box partly behind a camera is drawn up to where it
leaves the view and a box entirely behind it is not drawn; the 2D segments are then clipped to the
panel. Drawing is numpy + PIL only.

:class:`SceneVisualizer` is an anomalib ``Visualizer`` (a Lightning callback, the hooks of
anomalib's ``ImageVisualizer``) that writes one PNG per test / predict scene where anomalib writes
its image results: ``trainer.default_root_dir / "images"`` plus the folders that anomalib's
``generate_output_filename`` keeps from the scene folder (the part after the dataset / category
folder), and ``<scene folder name>.png``; e.g.
``results/OddOneOut/MultiViewScenes/synthetic_scenes/v0/images/scenes_17a0e5a6d0/cup_seentest_0001.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities import rank_zero_info

from anomalib_3d.render.volume import project_points
from anomalib_3d.runtime.files import atomic_write
from anomalib_3d.visualization._checks import ScoreRangeWarning, _item, check_visualizer_args
from anomalib_3d.visualization.colormap import GT_ANOMALOUS_RGB, score_to_rgb
from anomalib_3d.visualization.visualizer import _display_rgb

logger = logging.getLogger(__name__)

#: Box colour of normal objects in the ground-truth row (green) and of objects without labels.
GT_NORMAL_BOX_RGB = (0.10, 0.78, 0.22)
GT_UNKNOWN_BOX_RGB = (0.85, 0.85, 0.85)
#: Box colour of anomalous objects (the project's ground-truth red).
GT_ANOMALOUS_BOX_RGB = GT_ANOMALOUS_RGB

#: Corner ``i`` of a box has offset ``((i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1)`` from its min corner.
BOX_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (2, 3), (4, 5), (6, 7),  # along x
    (0, 2), (1, 3), (4, 6), (5, 7),  # along y
    (0, 4), (1, 5), (2, 6), (3, 7),  # along z
)

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """The 8 corners of axis-aligned boxes.

    Args:
        boxes: ``(K, 2, 3)`` ``[centre, size (x, y, z)]`` in world metres.

    Returns:
        ``(K, 8, 3)``; corner ``i`` is ``centre + (bits(i) - 0.5) * size`` with ``bits(i) =
        (i & 1, (i >> 1) & 1, (i >> 2) & 1)`` (the numbering of :data:`BOX_EDGES`).
    """
    bits = torch.tensor([[(i >> axis) & 1 for axis in range(3)] for i in range(8)], dtype=boxes.dtype,
                        device=boxes.device)
    return boxes[:, None, 0] + (bits[None] - 0.5) * boxes[:, None, 1]


def project_box_edges(
    boxes: torch.Tensor,
    intrinsics: torch.Tensor,
    world_to_camera: torch.Tensor,
    near: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel segments of the 12 edges of every box in every view, clipped to ``z >= near``.

    Args:
        boxes: ``(K, 2, 3)`` world ``[centre, size]``.
        intrinsics: ``(V, 3, 3)``; world_to_camera: ``(V, 4, 4)`` OpenCV.
        near: near plane (metres along the optical axis); the part of an edge in front of it is kept.

    Returns:
        ``segments (V, K, 12, 2, 2)`` continuous pixel coordinates ``(column, row)`` of both ends,
        ``visible (V, K, 12)`` bool (False: the edge lies entirely behind the near plane; its
        segment is then meaningless), ``depth (V, K)`` mean camera depth of each box's corners.
    """
    boxes = boxes.detach().float().cpu()
    intrinsics = intrinsics.detach().float().cpu()
    world_to_camera = world_to_camera.detach().float().cpu()
    views, count = intrinsics.shape[0], boxes.shape[0]
    if count == 0:
        return torch.zeros(views, 0, 12, 2, 2), torch.zeros(views, 0, 12, dtype=torch.bool), torch.zeros(views, 0)
    corners = box_corners(boxes)  # (K, 8, 3)
    _, corner_depth = project_points(corners.view(1, -1, 3), intrinsics[None], world_to_camera[None])
    corner_depth = corner_depth[0].view(views, count, 8)
    edges = torch.tensor(BOX_EDGES)
    start, end = corners[:, edges[:, 0]], corners[:, edges[:, 1]]  # (K, 12, 3)
    z_start, z_end = corner_depth[..., edges[:, 0]], corner_depth[..., edges[:, 1]]  # (V, K, 12)
    visible = (z_start >= near) | (z_end >= near)
    # Move an end that is behind the near plane along its edge to the plane (depth is affine along the edge).
    span = z_end - z_start
    safe_span = torch.where(span.abs() > 1e-12, span, torch.ones_like(span))
    t_plane = ((near - z_start) / safe_span).clamp(0.0, 1.0)
    t_start = torch.where(z_start < near, t_plane, torch.zeros_like(t_plane))
    t_end = torch.where(z_end < near, t_plane, torch.ones_like(t_plane))
    direction = (end - start)[None]  # (1, K, 12, 3)
    clipped_start = start[None] + t_start[..., None] * direction
    clipped_end = start[None] + t_end[..., None] * direction
    points = torch.stack([clipped_start, clipped_end], dim=3)  # (V, K, 12, 2, 3)
    # Each view projects its own clipped ends: (V, N, 3) points against V single-view cameras.
    xy, _ = project_points(points.view(views, -1, 3), intrinsics[:, None], world_to_camera[:, None])
    segments = xy[:, 0].view(views, count, 12, 2, 2)
    return segments, visible, corner_depth.mean(-1)


def clip_segment(start: Sequence[float], end: Sequence[float], width: float, height: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Liang-Barsky clipping of a 2D segment to ``[0, width] x [0, height]``.

    Returns:
        The clipped ``(start, end)`` or ``None`` when the segment misses the rectangle.
    """
    p0 = np.asarray(start, dtype=np.float64)
    delta = np.asarray(end, dtype=np.float64) - p0
    t0, t1 = 0.0, 1.0
    for p, q in ((-delta[0], p0[0]), (delta[0], width - p0[0]), (-delta[1], p0[1]), (delta[1], height - p0[1])):
        if abs(p) < 1e-12:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return p0 + t0 * delta, p0 + t1 * delta


@lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _as_rgb255(colour: Sequence[float] | torch.Tensor) -> tuple[int, int, int]:
    values = torch.as_tensor(colour, dtype=torch.float32).flatten()[:3]
    return tuple(int(v) for v in (values.clamp(0, 1) * 255).round().tolist())  # type: ignore[return-value]


def draw_box_edges(
    canvas: np.ndarray,
    intrinsics: torch.Tensor,
    world_to_camera: torch.Tensor,
    boxes: torch.Tensor,
    colours: Sequence[Sequence[float]] | torch.Tensor,
    texts: Sequence[str | None] | None = None,
    line_width: int = 1,
    font_size: int = 11,
    near: float = 1e-3,
) -> np.ndarray:
    """Draw the projected edges of ``boxes`` on one view.

    Args:
        canvas: ``(H, W, 3)`` uint8 image of the view (its pixels match ``intrinsics``).
        intrinsics: ``(3, 3)``; world_to_camera: ``(4, 4)`` OpenCV.
        boxes: ``(K, 2, 3)`` world ``[centre, size]``.
        colours: ``(K, 3)`` RGB in ``[0, 1]``.
        texts: ``K`` captions (or ``None`` entries) written beside the top-right of each box.
        line_width: pixels.
        font_size: caption size (pixels).
        near: near plane; edges behind it are clipped, boxes wholly behind it are skipped.

    Returns:
        A new ``(H, W, 3)`` uint8 image. Far boxes are drawn first so near ones stay on top;
        captions come last so lines never hide them.
    """
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(canvas, dtype=np.uint8))
    if boxes.shape[0] == 0:
        return np.asarray(image).copy()
    draw = ImageDraw.Draw(image)
    height, width = canvas.shape[:2]
    segments, visible, depth = project_box_edges(boxes, intrinsics[None], world_to_camera[None], near=near)
    segments, visible, depth = segments[0].numpy(), visible[0].numpy(), depth[0].numpy()
    colours = torch.as_tensor(np.asarray(colours, dtype=np.float32) if not isinstance(colours, torch.Tensor) else colours)
    captions: list[tuple[float, float, str, tuple[int, int, int]]] = []
    for k in np.argsort(-depth, kind="stable"):
        rgb = _as_rgb255(colours[k])
        drawn_ends = []
        for edge in range(segments.shape[1]):
            if not visible[k, edge]:
                continue
            clipped = clip_segment(segments[k, edge, 0], segments[k, edge, 1], width, height)
            if clipped is None:
                continue
            # Continuous x lies in pixel floor(x); PIL addresses pixels by their integer index.
            a, b = (np.minimum(np.floor(p), (width - 1, height - 1)) for p in clipped)
            draw.line([(int(a[0]), int(a[1])), (int(b[0]), int(b[1]))], fill=rgb, width=line_width)
            drawn_ends.extend([a, b])
        if drawn_ends and texts is not None and texts[k]:
            ends = np.stack(drawn_ends)
            captions.append((float(ends[:, 0].max()), float(ends[:, 1].min()), str(texts[k]), rgb))
    font = _font(font_size)
    for x, y, text, rgb in captions:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left, bottom - top
        x0 = int(min(max(x + 2, 0), max(width - text_w - 2, 0)))
        y0 = int(min(max(y - text_h - 2, 0), max(height - text_h - 2, 0)))
        # The box colour as the label's background ties the caption to its box; the text takes
        # black or white, whichever reads on that colour.
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        draw.rectangle([x0 - 1, y0 - 1, x0 + text_w + 1, y0 + text_h + 1], fill=rgb)
        draw.text((x0 - left, y0 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font)
    return np.asarray(image).copy()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float (or uint8) -> ``(H, W, 3)`` uint8."""
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0).cpu().numpy()
    rgb = _display_rgb(image).clamp(0, 1).permute(1, 2, 0)
    return (rgb * 255).round().to(torch.uint8).numpy()


def _resize_view(image: np.ndarray, intrinsics: torch.Tensor, scale: float) -> tuple[np.ndarray, torch.Tensor]:
    """Resize a view and scale its intrinsics to match (continuous pixel coordinates scale by ``scale``)."""
    from PIL import Image

    if scale == 1.0:
        return image, intrinsics
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    sx, sy = size[0] / width, size[1] / height
    scaled = intrinsics.clone().float()
    scaled[0] *= sx
    scaled[1] *= sy
    scaled[2] = intrinsics[2].float()
    return resized, scaled


def _colour_bar(height: int, score_range: tuple[float, float], cmap: str, font_size: int) -> np.ndarray:
    """A vertical colour bar with its range written at the ends and the middle, ``(height, w, 3)`` uint8."""
    from PIL import Image, ImageDraw

    bar_width, label_width = 14, 6 * font_size // 2 + 16
    values = torch.linspace(score_range[1], score_range[0], max(height - 2 * font_size, 2))
    colours = (score_to_rgb(values, *score_range, cmap=cmap) * 255).round().to(torch.uint8).numpy()
    canvas = np.full((height, bar_width + label_width, 3), 255, dtype=np.uint8)
    top = font_size
    canvas[top : top + len(values), :bar_width] = colours[:, None, :]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for fraction in (0.0, 0.5, 1.0):
        value = score_range[1] - fraction * (score_range[1] - score_range[0])
        y = top + fraction * (len(values) - 1)
        draw.line([(bar_width, y), (bar_width + 3, y)], fill=_TEXT)
        draw.text((bar_width + 5, y - font_size / 2), f"{value:.2g}", fill=_TEXT, font=font)
    return np.asarray(image).copy()


def draw_scene(
    image: torch.Tensor,
    intrinsics: torch.Tensor,
    world_to_camera: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    pred_boxes: torch.Tensor | None = None,
    pred_scores: torch.Tensor | None = None,
    max_views: int = 5,
    title: str | None = None,
    panel_size: int | None = 256,
    score_range: tuple[float, float] = (0.0, 1.0),
    cmap: str = "jet",
    line_width: int | None = None,
    font_size: int = 11,
) -> np.ndarray:
    """One scene as a picture: predicted boxes coloured by score above the ground-truth boxes.

    Args:
        image: ``(V, 3, H, W)`` views, float in ``[0, 1]`` (``[0, 255]`` and uint8 accepted).
        intrinsics: ``(V, 3, 3)`` for the ``H x W`` images; world_to_camera: ``(V, 4, 4)`` OpenCV.
        boxes: ``(K, 2, 3)`` ground-truth (or given) boxes ``[centre, size]``, world metres.
        scores: ``(K,)`` predicted score of each of ``boxes`` (the model scores the given boxes).
        labels: ``(K,)`` bool ground truth (True = anomalous); ``None``: boxes drawn grey.
        names: ``K`` object names written beside the ground-truth boxes.
        pred_boxes, pred_scores: ``(P, 2, 3)`` / ``(P,)`` predicted boxes (e.g. proposals) and their
            scores; when given they replace ``boxes`` / ``scores`` in the prediction row.
        max_views: draw the first ``max_views`` views.
        title: text above the panels.
        panel_size: the longer side of each panel in pixels (views are resized, the cameras scaled
            with them); ``None`` keeps the native size.
        score_range, cmap: the fixed colormap range and name (as
            :func:`~anomalib_3d.visualization.colormap.score_to_rgb`).
        line_width: box line width; default ``max(1, panel / 128)``.
        font_size: caption size in pixels.

    Returns:
        ``(H', W', 3)`` uint8: a row "prediction" (when there are scores) and a row "ground truth",
        one column per view, and a colour bar when there is a prediction row.

    Raises:
        ValueError: shapes disagree.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        msg = f"image must be (V, 3, H, W), got {tuple(image.shape)}."
        raise ValueError(msg)
    views = image.shape[0]
    if tuple(intrinsics.shape) != (views, 3, 3) or tuple(world_to_camera.shape) != (views, 4, 4):
        msg = (f"intrinsics {tuple(intrinsics.shape)} / world_to_camera {tuple(world_to_camera.shape)} must be "
               f"({views}, 3, 3) / ({views}, 4, 4) for {views} views.")
        raise ValueError(msg)
    boxes = boxes.detach().float().cpu().reshape(-1, 2, 3)
    count = boxes.shape[0]
    for name, value in (("scores", scores), ("labels", labels)):
        if value is not None and value.reshape(-1).shape[0] != count:
            msg = f"{name} has {value.reshape(-1).shape[0]} entries for {count} boxes."
            raise ValueError(msg)
    if names is not None and len(names) != count:
        msg = f"names has {len(names)} entries for {count} boxes."
        raise ValueError(msg)
    if pred_boxes is not None:
        pred_boxes = pred_boxes.detach().float().cpu().reshape(-1, 2, 3)
        if pred_scores is None or pred_scores.reshape(-1).shape[0] != pred_boxes.shape[0]:
            msg = "pred_boxes need pred_scores, one per box."
            raise ValueError(msg)
        shown_boxes, shown_scores = pred_boxes, pred_scores.detach().float().cpu().reshape(-1)
    else:
        shown_boxes = boxes
        shown_scores = None if scores is None else scores.detach().float().cpu().reshape(-1)
    if max_views < 1:
        msg = f"max_views must be >= 1, got {max_views}."
        raise ValueError(msg)

    used = min(views, max_views)
    height, width = image.shape[-2:]
    scale = 1.0 if panel_size is None else panel_size / max(height, width)
    width_px = line_width if line_width is not None else max(1, round(max(height, width) * scale / 128))
    base_views = []
    for v in range(used):
        view, camera = _resize_view(_to_uint8(image[v]), intrinsics[v].detach().float().cpu(), scale)
        base_views.append((view, camera, world_to_camera[v].detach().float().cpu()))

    rows: list[tuple[str, list[np.ndarray]]] = []
    if shown_scores is not None:
        colours = score_to_rgb(shown_scores, *score_range, cmap=cmap)
        texts = [f"{s:.2f}" for s in shown_scores.tolist()]
        rows.append(("prediction", [draw_box_edges(view, camera, pose, shown_boxes, colours, texts, width_px, font_size)
                                    for view, camera, pose in base_views]))
    if labels is None:
        gt_colours = torch.tensor(GT_UNKNOWN_BOX_RGB).expand(count, 3)
    else:
        anomalous = labels.detach().cpu().reshape(-1).bool()[:, None]
        gt_colours = torch.where(anomalous, torch.tensor(GT_ANOMALOUS_BOX_RGB), torch.tensor(GT_NORMAL_BOX_RGB))
    rows.append(("ground truth", [draw_box_edges(view, camera, pose, boxes, gt_colours, names, width_px, font_size)
                                  for view, camera, pose in base_views]))
    return _compose(rows, title, score_range, cmap, font_size, with_bar=shown_scores is not None)


def _compose(
    rows: list[tuple[str, list[np.ndarray]]],
    title: str | None,
    score_range: tuple[float, float],
    cmap: str,
    font_size: int,
    with_bar: bool,
) -> np.ndarray:
    """Lay out panels in rows with row labels on the left, a title band and a colour bar."""
    from PIL import Image, ImageDraw

    gap = 4
    label_width = font_size + 8
    title_height = font_size + 10 if title else gap
    caption_height = font_size + 4
    panel_h = max(p.shape[0] for _, panels in rows for p in panels)
    panel_w = max(p.shape[1] for _, panels in rows for p in panels)
    columns = max(len(panels) for _, panels in rows)
    grid_w = label_width + columns * (panel_w + gap)
    grid_h = title_height + caption_height + len(rows) * (panel_h + gap)
    bar = _colour_bar(len(rows) * (panel_h + gap) - gap, score_range, cmap, font_size) if with_bar else None
    total_w = grid_w + (bar.shape[1] + gap if bar is not None else 0)
    canvas = np.full((grid_h, total_w, 3), _BACKGROUND, dtype=np.uint8)
    top = title_height + caption_height
    for r, (_, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            y, x = top + r * (panel_h + gap), label_width + c * (panel_w + gap)
            canvas[y : y + panel.shape[0], x : x + panel.shape[1]] = panel
    if bar is not None:
        canvas[top : top + bar.shape[0], grid_w : grid_w + bar.shape[1]] = bar
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    if title:
        draw.text((label_width, 4), title, fill=_TEXT, font=font)
    for c in range(columns):
        draw.text((label_width + c * (panel_w + gap) + 2, title_height), f"view {c}", fill=_TEXT, font=font)
    for r, (label, _) in enumerate(rows):
        # Row labels run vertically along the left edge, centred on their row.
        text_box = draw.textbbox((0, 0), label, font=font)
        strip = Image.new("RGB", (text_box[2] - text_box[0] + 2, text_box[3] - text_box[1] + 4), _BACKGROUND)
        ImageDraw.Draw(strip).text((1 - text_box[0], 2 - text_box[1]), label, fill=_TEXT, font=font)
        strip = strip.rotate(90, expand=True)
        y = top + r * (panel_h + gap) + max(0, (panel_h - strip.height) // 2)
        image.paste(strip, (2, y))
    return np.asarray(image).copy()


# --------------------------------------------------------------------------------------------
# the callback
# --------------------------------------------------------------------------------------------
def _tensor(value: object) -> torch.Tensor | None:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else None


def scene_output_path(
    output_dir: str | Path,
    image_path: str | None,
    fallback_name: str,
    dataset_name: str | None = None,
    category: str | None = None,
) -> Path:
    """Where the picture of a scene goes (the rule of anomalib's ``ImageVisualizer``).

    anomalib's ``generate_output_filename`` keeps the folders of the source path after the dataset
    (and category) folder; a scene's source is its folder, so the file is that folder's name
    plus ``.png``. Scenes without a path are named ``fallback_name``.

    Returns:
        ``output_dir / <kept folders> / <scene>.png`` (parent folders created).
    """
    from anomalib.utils.path import generate_output_filename

    output_dir = Path(output_dir)
    if not image_path:
        output_dir.mkdir(parents=True, exist_ok=True)
        return output_dir / f"{fallback_name}.png"
    target = generate_output_filename(input_path=image_path, output_path=output_dir, dataset_name=dataset_name,
                                      category=category)
    # Scene ids may contain dots, so the suffix is appended rather than substituted.
    return target.with_name(target.name + ".png")


class SceneVisualizer(ScoreRangeWarning, Visualizer):
    """Pictures of multi-view scene predictions (:func:`draw_scene`), one PNG per scene.

    The prediction row shows the batch's ``pred_boxes`` / ``pred_object_scores`` /
    ``pred_object_batch`` when the model produced boxes of its own (proposals), else the given
    ``boxes`` coloured by ``object_scores``.

    Args:
        max_views: views drawn per scene.
        panel_size: longer side of each view's panel (pixels); ``None``: native size.
        score_range: fixed colormap range of the object scores; ``(0, 1)`` suits sigmoid scores.
        cmap: matplotlib colormap name.
        line_width: box line width (default from the panel size).
        output_dir: root folder; default ``trainer.default_root_dir / "images"`` (as anomalib's
            ``ImageVisualizer``).
        max_scenes: save at most this many scenes per run (``None``: all).
    """

    _RANGE_WARNING = (
        "SceneVisualizer: object scores span [{lo:.4g}, {hi:.4g}] but the "
        "colormap range is {score_range}; colours saturate (pass score_range=(low, high))."
    )

    def __init__(
        self,
        max_views: int = 5,
        panel_size: int | None = 256,
        score_range: tuple[float, float] = (0.0, 1.0),
        cmap: str = "jet",
        line_width: int | None = None,
        output_dir: str | Path | None = None,
        max_scenes: int | None = None,
    ) -> None:
        super().__init__()
        check_visualizer_args(score_range, "max_views", max_views, "max_scenes", max_scenes)
        self.max_views = int(max_views)
        self.panel_size = panel_size
        self.score_range = (float(score_range[0]), float(score_range[1]))
        self.cmap = cmap
        self.line_width = line_width
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.max_scenes = max_scenes
        self._saved = 0
        self._skipped = 0
        self._warned_range = False


    @staticmethod
    def _title(batch: Any, b: int) -> str:
        parts = [str(_item(getattr(batch, "scene_id", None), b) or f"scene {b}")]
        category = _item(getattr(batch, "category", None), b)
        if category:
            parts.append(str(category))
        score = _item(_tensor(getattr(batch, "pred_score", None)), b)
        if score is not None:
            parts.append(f"scene score {float(score):.3f}")
        label = _item(_tensor(getattr(batch, "gt_label", None)), b)
        if label is not None:
            parts.append("label: " + ("anomalous" if bool(label) else "normal"))
        return "  |  ".join(parts)

    def visualize(self, batch: Any) -> list[np.ndarray]:
        """Pictures of every scene of a :class:`~anomalib_3d.data.scenes.SceneBatch`, ``(H, W, 3) uint8`` each."""
        image = _tensor(batch.image)
        intrinsics, poses = _tensor(batch.intrinsics), _tensor(batch.world_to_camera)
        if intrinsics is None or poses is None:
            msg = "SceneVisualizer needs intrinsics and world_to_camera in the batch."
            raise ValueError(msg)
        boxes = _tensor(batch.boxes)
        labels = _tensor(getattr(batch, "object_labels", None))
        scores = _tensor(getattr(batch, "object_scores", None))
        if scores is not None:
            self._check_range(scores)
        names = getattr(batch, "object_names", None)
        object_batch = _tensor(batch.object_batch)
        counts = torch.bincount(object_batch.cpu(), minlength=image.shape[0]).tolist() if object_batch is not None \
            else [0] * image.shape[0]
        # Predicted boxes (e.g. density proposals) replace the given boxes in the prediction row.
        pred_boxes = _tensor(getattr(batch, "pred_boxes", None))
        pred_scores = _tensor(getattr(batch, "pred_object_scores", None))
        pred_batch = _tensor(getattr(batch, "pred_object_batch", None))
        proposals = pred_boxes is not None and pred_scores is not None and pred_batch is not None
        if proposals:
            self._check_range(pred_scores)
        pictures, start = [], 0
        for b, count in enumerate(counts):
            span = slice(start, start + count)
            start += count
            mine = (pred_batch == b).cpu() if proposals else None
            pictures.append(draw_scene(
                image[b], intrinsics[b], poses[b],
                boxes[span] if boxes is not None else torch.zeros(0, 2, 3),
                scores=None if scores is None else scores[span],
                labels=None if labels is None else labels[span],
                names=None if names is None else list(names[span]),
                pred_boxes=pred_boxes.cpu()[mine] if proposals else None,
                pred_scores=pred_scores.cpu()[mine] if proposals else None,
                max_views=self.max_views, title=self._title(batch, b), panel_size=self.panel_size,
                score_range=self.score_range, cmap=self.cmap, line_width=self.line_width,
            ))
        return pictures

    def save_batch(
        self,
        batch: Any,
        output_dir: str | Path,
        batch_idx: int = 0,
        dataset_name: str | None = None,
        category: str | None = None,
    ) -> list[Path]:
        """Write one PNG per scene of ``batch`` (see :func:`scene_output_path`); returns the paths."""
        from PIL import Image

        pictures = self.visualize(batch)
        written = []
        for b, picture in enumerate(pictures):
            if self.max_scenes is not None and self._saved >= self.max_scenes:
                self._skipped += len(pictures) - b
                break
            path = scene_output_path(
                output_dir, _item(getattr(batch, "image_path", None), b) or None,
                str(_item(getattr(batch, "scene_id", None), b) or f"batch{batch_idx:04d}_{b:02d}"),
                dataset_name, category,
            )
            with atomic_write(path) as handle:  # a stopped or failed run leaves no truncated picture
                Image.fromarray(picture).save(handle, format="PNG")
            written.append(path)
            self._saved += 1
        return written

    def _output_root(self, trainer: Any) -> Path:
        return self.output_dir if self.output_dir is not None else Path(trainer.default_root_dir) / "images"

    def _save(self, trainer: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The module returns the batch updated in place; prefer what it returned if it carries scores.
        source = outputs if getattr(outputs, "object_scores", None) is not None else batch
        datamodule = getattr(trainer, "datamodule", None)
        dataset_name = getattr(datamodule, "name", None) if datamodule is not None else None
        category = getattr(datamodule, "category", None) if datamodule is not None else None
        self.save_batch(source, self._output_root(trainer), batch_idx, dataset_name, category)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        """Reset the scene counter."""
        del trainer, pl_module
        self._saved = 0
        self._skipped = 0

    on_predict_start = on_test_start

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save the pictures of a test (or predict) batch."""
        del pl_module, dataloader_idx
        self._save(trainer, outputs, batch, batch_idx)

    on_predict_batch_end = on_test_batch_end

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Say where the pictures are."""
        del pl_module
        if self._saved:
            rank_zero_info(f"SceneVisualizer: {self._saved} scene pictures written under {self._output_root(trainer)}")
        if self._skipped:
            logger.warning("SceneVisualizer: %d scenes not drawn (max_scenes=%s).", self._skipped, self.max_scenes)

    on_predict_epoch_end = on_test_epoch_end


__all__ = [
    "BOX_EDGES",
    "GT_ANOMALOUS_BOX_RGB",
    "GT_NORMAL_BOX_RGB",
    "GT_UNKNOWN_BOX_RGB",
    "SceneVisualizer",
    "box_corners",
    "clip_segment",
    "draw_box_edges",
    "draw_scene",
    "project_box_edges",
    "scene_output_path",
]
