"""A non-learned "compare with the neighbours" baseline for multi-object scenes.

Each object is described by what the views show inside its ground-truth box and scored by how far
that description lies from the **median of the other instances of its scene** (no training, no
gradient; two scale constants are read off the training scenes):

* colour: a joint RGB histogram (``colour_bins`` per channel) of the object's pixels over all views;
* shape: histograms of the object's back-projected points — height above the box bottom, horizontal
  distance from the box's vertical axis, and distances between random point pairs — each in units
  of the scene's median box size, so they do not depend on the yaw.

An object's pixels are the object pixels of the views (``silhouette``) whose depth, lifted to the
world, falls in its box (a point in several boxes goes to the box whose centre is nearest). The
baseline therefore uses depth and the all-object silhouette, which the learned model does not see
at test time; it is the bar the learned model has to clear, not a like-for-like competitor.

Scores: ``colour`` and ``shape`` are L1 distances to the neighbours' element-wise median;
``combined = colour / scale_colour + shape / scale_shape`` with the scales the median distances over
the objects of the training scenes (:meth:`NeighbourMedianBaseline.fit`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from anomalib_3d.data.scenes import SceneBatch, boxes_to_corners

from .teachers import backproject_pixels

__all__ = ["NeighbourMedianBaseline", "object_descriptors"]


def _histogram(values: Tensor, bins: int, high: float) -> Tensor:
    counts = torch.histc(values.clamp(0.0, high - 1e-9), bins=bins, min=0.0, max=high)
    return counts / counts.sum().clamp(min=1.0)


def object_descriptors(
    batch: SceneBatch,
    colour_bins: int = 4,
    shape_bins: int = 10,
    pair_samples: int = 512,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Colour and shape descriptors of every ground-truth object of a batch.

    Args:
        batch: scenes with ``image``, ``depth``, ``silhouette`` and ``boxes``.
        colour_bins: bins per RGB channel (``colour_bins ** 3`` in all).
        shape_bins: bins of each of the three shape histograms.
        pair_samples: random point pairs of the pair-distance histogram.
        generator: random source of the point pairs.

    Returns:
        ``colour (ΣK, colour_bins^3)`` and ``shape (ΣK, 3 shape_bins)``, each histogram summing to 1
        (0 for an object without any point).

    Raises:
        ValueError: the batch has no depth or no silhouette.
    """
    if batch.depth is None or batch.silhouette is None:
        msg = "the neighbour-median baseline needs depth and silhouettes (MultiViewScenes(load_depth=True))."
        raise ValueError(msg)
    colours_out, shapes_out = [], []
    corners = boxes_to_corners(batch.boxes.double())
    for scene in range(batch.batch_size):
        objects = torch.nonzero(batch.object_batch == scene)[:, 0]
        valid = batch.silhouette[scene] & (batch.depth[scene] > 0)
        world = backproject_pixels(batch.depth[scene].double(), batch.intrinsics[scene].double(),
                                   batch.world_to_camera[scene].double())[valid]  # (P, 3)
        rgb = batch.image[scene].permute(0, 2, 3, 1)[valid].double()  # (P, 3)
        low, high = corners[objects, 0], corners[objects, 1]  # (K, 3)
        inside = ((world[:, None] >= low[None]) & (world[:, None] <= high[None])).all(-1)  # (P, K)
        centres = batch.boxes[objects, 0].double()
        distance = (world[:, None, :2] - centres[None, :, :2]).norm(dim=-1)
        owner = torch.where(inside, distance, torch.full_like(distance, torch.inf)).argmin(dim=1)
        owner = torch.where(inside.any(dim=1), owner, torch.full_like(owner, -1))
        sizes = batch.boxes[objects, 1].double()
        height_unit = float(sizes[:, 2].median())
        radius_unit = float((sizes[:, :2].norm(dim=1) / 2).median())
        diagonal_unit = float(sizes.norm(dim=1).median())
        for slot in range(len(objects)):
            mine = owner == slot
            points, colour = world[mine], rgb[mine]
            quantised = (colour.clamp(0, 1 - 1e-9) * colour_bins).long()
            flat = (quantised[:, 0] * colour_bins + quantised[:, 1]) * colour_bins + quantised[:, 2]
            counts = torch.bincount(flat, minlength=colour_bins**3).double()
            colours_out.append(counts / counts.sum().clamp(min=1.0))
            if len(points) < 2:
                shapes_out.append(torch.zeros(3 * shape_bins, dtype=torch.float64))
                continue
            heights = (points[:, 2] - low[slot, 2]) / height_unit
            radii = (points[:, :2] - centres[slot, :2]).norm(dim=1) / radius_unit
            first = torch.randint(len(points), (pair_samples,), generator=generator)
            second = torch.randint(len(points), (pair_samples,), generator=generator)
            pairs = (points[first] - points[second]).norm(dim=1) / diagonal_unit
            shapes_out.append(torch.cat([_histogram(heights, shape_bins, 1.2), _histogram(radii, shape_bins, 1.2),
                                         _histogram(pairs, shape_bins, 1.2)]))
    return torch.stack(colours_out).float(), torch.stack(shapes_out).float()


def _distance_to_neighbour_median(descriptors: Tensor, object_batch: Tensor) -> Tensor:
    """L1 distance of each object's descriptor to the element-wise median of its scene's other objects."""
    out = torch.zeros(descriptors.shape[0])
    for scene in torch.unique(object_batch).tolist():
        objects = torch.nonzero(object_batch == scene)[:, 0]
        for slot, index in enumerate(objects.tolist()):
            others = torch.cat([objects[:slot], objects[slot + 1 :]])
            if others.numel() == 0:
                continue
            median = descriptors[others].median(dim=0).values
            out[index] = (descriptors[index] - median).abs().sum()
    return out


class NeighbourMedianBaseline:
    """Scores objects by their distance to the median of their scene's other instances (module docstring).

    Args:
        colour_bins, shape_bins, pair_samples: see :func:`object_descriptors`.
        seed: seed of the point-pair sampling.
    """

    def __init__(self, colour_bins: int = 4, shape_bins: int = 10, pair_samples: int = 512, seed: int = 0) -> None:
        self.colour_bins, self.shape_bins, self.pair_samples = int(colour_bins), int(shape_bins), int(pair_samples)
        self.seed = int(seed)
        self.scale_colour = 1.0
        self.scale_shape = 1.0

    def _distances(self, batch: SceneBatch) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        colour, shape = object_descriptors(batch, self.colour_bins, self.shape_bins, self.pair_samples, generator)
        object_batch = batch.object_batch.cpu()
        return (_distance_to_neighbour_median(colour, object_batch),
                _distance_to_neighbour_median(shape, object_batch))

    def fit(self, batches: Iterable[SceneBatch]) -> NeighbourMedianBaseline:
        """Set the two scales to the median distances over the objects of ``batches`` (training scenes)."""
        colour, shape = zip(*(self._distances(batch) for batch in batches), strict=True)
        self.scale_colour = float(torch.cat(colour).median().clamp(min=1e-6))
        self.scale_shape = float(torch.cat(shape).median().clamp(min=1e-6))
        return self

    def score(self, batch: SceneBatch) -> dict[str, Tensor]:
        """``{"combined", "colour", "shape"}``: ``(ΣK,)`` scores, higher = more anomalous."""
        colour, shape = self._distances(batch)
        return {"combined": colour / self.scale_colour + shape / self.scale_shape, "colour": colour, "shape": shape}
