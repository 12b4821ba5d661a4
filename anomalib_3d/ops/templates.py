"""Registered template banks: normal training clouds brought into one frame, to which a test cloud
is aligned and then compared point by point (Reg3D-AD's templates, IMRNet's geometric residual).

Fitting: every training cloud is normalised and FPS-subsampled (:meth:`TemplateBank.prepare`);
the clouds of all DDP ranks are gathered and put in a canonical order by content (so neither loader
shuffling nor rank splits change the result); the first ``num_templates`` become templates, all
registered to the first one (the reference), so templates share one frame. Scoring: a test cloud is
normalised the same way, registered to the first candidate template (``registration`` method), then
refined by ICP against every candidate, keeping the best fit (:func:`best_template`); each of its
points scores its distance to the nearest template point.
"""

from __future__ import annotations

import torch
from torch import nn

from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.ops.geometry import normalize_clouds
from anomalib_3d.ops.memory_bank import canonical_order
from anomalib_3d.ops.neighbors import knn
from anomalib_3d.ops.registration import apply_transform, best_template, default_voxel_size, register
from anomalib_3d.ops.sampling import farthest_point_sample
from anomalib_3d.settings import check_choice

__all__ = [
    "TEMPLATE_DISTANCES",
    "TEMPLATE_REGISTRATIONS",
    "TEMPLATE_SELECTIONS",
    "TemplateBank",
    "cloud_checksums",
    "fps_subsample",
    "leave_one_out_distances",
    "template_key",
]

TEMPLATE_REGISTRATIONS = ("none", "icp", "global+icp")
TEMPLATE_SELECTIONS = ("first", "nearest")
TEMPLATE_DISTANCES = ("best", "templates")

# Points of the probe that ranks templates by proximity for ``selection="nearest"``.
_NEAREST_PROBE_POINTS = 256


def fps_subsample(cloud: torch.Tensor, count: int | None) -> torch.Tensor:
    """``cloud (N, 3)`` reduced to ``count`` points by farthest point sampling (whole when
    ``count`` is None or ``N <= count``)."""
    if count is None or cloud.shape[0] <= count:
        return cloud
    return cloud[farthest_point_sample(cloud, count).to(cloud.device)]


def template_key(cloud: torch.Tensor) -> torch.Tensor:
    """``(13,) float64`` content key of a cloud ``(N, 3)``: size, mean, second moments, extent."""
    c = cloud.double()
    size = torch.tensor([float(c.shape[0])], dtype=torch.float64, device=c.device)
    return torch.cat([size, c.mean(0), (c * c).mean(0), c.amin(0), c.amax(0)])


def cloud_checksums(points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """``(B,) float64`` one scalar content key per cloud of ``points (ΣN, 3)`` (sorted ``batch (ΣN,)``):
    point count, coordinate sum and sum of squares folded into one number."""
    num_clouds = int(batch[-1]) + 1
    p = points.detach().double()
    first = torch.zeros(num_clouds, dtype=torch.float64, device=p.device).index_add_(0, batch, p.sum(dim=1))
    second = torch.zeros(num_clouds, dtype=torch.float64, device=p.device).index_add_(0, batch, p.pow(2).sum(dim=1))
    counts = torch.bincount(batch, minlength=num_clouds).double()
    return counts * 1e6 + first + 1e-3 * second


def leave_one_out_distances(clouds: list[torch.Tensor]) -> torch.Tensor:
    """Distance of every point of every cloud ``(M_i, 3)`` to the nearest point of the *other* clouds:
    ``(ΣM,)``, cloud after cloud (needs at least two clouds)."""
    held_out = []
    for i, cloud in enumerate(clouds):
        others = torch.cat([c for j, c in enumerate(clouds) if j != i])
        _, sq = knn(others, cloud, 1)
        held_out.append(sq[:, 0].clamp_min(0).sqrt())
    return torch.cat(held_out)


class TemplateBank(nn.Module):
    """Training templates in one registered frame; alignment of test clouds and their distances.

    The templates are the buffers ``points`` ``(ΣM, 3)`` (concatenated) and ``ptr`` ``(T + 1,)``
    (template ``i`` is ``points[ptr[i]:ptr[i + 1]]``), so they travel in ``state_dict``; loading
    takes the stored sizes.

    Args:
        normalization: frame of every cloud before anything else (:func:`normalize_clouds`):
            ``"bbox"``, ``"rms"`` (pose-invariant) or ``"none"``.
        template_points: each training cloud is FPS-subsampled to this many points (None: whole).
        num_templates: clouds kept as templates, the first in canonical order (None: all).
        registration: ``"none"``, ``"icp"`` (poses within ~30°) or ``"global+icp"`` (FPFH-RANSAC
            then ICP, any pose), via :func:`anomalib_3d.ops.register`: templates to the reference
            when fitting, test clouds to the first candidate when aligning.
        registration_points: a test cloud is FPS-subsampled to this many points for registration
            only (None: whole); the transform is then applied to every point.
        registration_templates: candidate templates a test cloud is refined against (None: all).
        selection: which templates are candidates: ``"first"`` (the first in canonical order) or
            ``"nearest"`` (the ones closest to the cloud in the normalised frame, by mean
            nearest-point distance of a 256-point probe).
        distance_to: what a test point's distance is measured to: ``"best"`` (the best-fitting
            candidate) or ``"templates"`` (all templates; with ``selection="nearest"`` all
            candidates).
        keep_coarse_if_better: keep the registration to the first candidate when no ICP
            refinement fits it better (False: always the best refinement).
        max_iterations: ICP iterations.
        seed: RANSAC seed.
    """

    points: torch.Tensor
    ptr: torch.Tensor

    def __init__(
        self,
        normalization: str = "bbox",
        template_points: int | None = 4096,
        num_templates: int | None = None,
        registration: str = "icp",
        registration_points: int | None = 1024,
        registration_templates: int | None = None,
        selection: str = "first",
        distance_to: str = "templates",
        keep_coarse_if_better: bool = False,
        max_iterations: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_choice("normalization", normalization, ("bbox", "rms", "none"))
        check_choice("registration", registration, TEMPLATE_REGISTRATIONS)
        check_choice("selection", selection, TEMPLATE_SELECTIONS)
        check_choice("distance_to", distance_to, TEMPLATE_DISTANCES)
        for name, value in (("num_templates", num_templates), ("registration_templates", registration_templates)):
            if value is not None and value < 1:
                msg = f"{name} must be >= 1 or None, got {value}."
                raise ValueError(msg)
        self.normalization = normalization
        self.template_points = template_points
        self.num_templates = num_templates
        self.registration = registration
        self.registration_points = registration_points
        self.registration_templates = registration_templates
        self.selection = selection
        self.distance_to = distance_to
        self.keep_coarse_if_better = keep_coarse_if_better
        self.max_iterations = max_iterations
        self.seed = seed
        self.register_buffer("points", torch.zeros(0, 3))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # Template counts and sizes are data, known only after fitting: take the stored shapes.
        for name in ("points", "ptr"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor) and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def is_fitted(self) -> bool:
        """Whether the bank holds at least one template."""
        return self.ptr.numel() >= 2

    @property
    def templates(self) -> list[torch.Tensor]:
        """The registered templates, each ``(M_i, 3)`` (empty before fitting)."""
        ptr = self.ptr.tolist()
        return [self.points[ptr[i] : ptr[i + 1]] for i in range(len(ptr) - 1)]

    # ----------------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------------
    def normalize(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """``(ΣN, 3)`` every cloud of ``points`` in the bank's frame (``normalization``)."""
        return normalize_clouds(points, batch, self.normalization)  # type: ignore[arg-type]

    @torch.no_grad()
    def prepare(self, points: torch.Tensor, batch: torch.Tensor) -> list[torch.Tensor]:
        """Every cloud of a batch ``(ΣN, 3)`` normalised and FPS-subsampled to ``template_points``."""
        normalised = self.normalize(points, batch)
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        counts = torch.bincount(batch, minlength=num_clouds).tolist()
        return [fps_subsample(cloud, self.template_points) for cloud in torch.split(normalised, counts)]

    @torch.no_grad()
    def fit(self, clouds: list[torch.Tensor], keys: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Keep the templates: gather the prepared clouds over ranks, order them, register.

        Args:
            clouds: this rank's prepared clouds (:meth:`prepare`), each ``(M_i, 3)``.
            keys: ``(len(clouds), D)`` or ``(len(clouds),)`` content keys that order the clouds
                (rows compared lexicographically); None: :func:`template_key` of each prepared
                cloud. A model that already keys its training clouds passes those, so that all of
                its banks share one order.

        Returns:
            All gathered clouds in canonical order (unregistered); the first ``num_templates``
            became the templates.
        """
        device = clouds[0].device
        sizes = all_gather_cat(torch.tensor([c.shape[0] for c in clouds], dtype=torch.long, device=device))
        gathered = list(torch.split(all_gather_cat(torch.cat(clouds)), sizes.tolist()))
        if keys is None:
            keys = torch.stack([template_key(c) for c in gathered])
        else:
            keys = all_gather_cat(keys.to(device))
        order = canonical_order(keys.reshape(len(gathered), -1)).tolist()
        ordered = [gathered[i] for i in order]
        kept = ordered if self.num_templates is None else ordered[: self.num_templates]
        reference = kept[0]
        aligned = [reference]
        for cloud in kept[1:]:
            if self.registration == "none":
                aligned.append(cloud)
                continue
            result = register(
                cloud.double(), reference.double(), self.registration,  # type: ignore[arg-type]
                max_iterations=self.max_iterations, seed=self.seed,
            )
            aligned.append(apply_transform(cloud, result.transform.to(cloud.device)))
        self.points = torch.cat(aligned).to(self.points.device)
        offsets = torch.tensor([c.shape[0] for c in kept], dtype=torch.long).cumsum(0).tolist()
        self.ptr = torch.tensor([0, *offsets], dtype=torch.long, device=self.ptr.device)
        return ordered

    def leave_one_out_scale(self) -> float:
        """Mean distance of the template points to the other templates (:func:`leave_one_out_distances`):
        how far a normal point lies from the bank; one template: :func:`default_voxel_size` of it."""
        templates = self.templates
        if len(templates) < 2:
            return float(default_voxel_size(templates[0]))
        return float(leave_one_out_distances(templates).mean())

    # ----------------------------------------------------------------------------------------
    # alignment and distances
    # ----------------------------------------------------------------------------------------
    def candidates(self, cloud: torch.Tensor) -> list[int]:
        """Indices of the templates a normalised ``cloud (N, 3)`` is refined against (``selection``)."""
        templates = self.templates
        count = len(templates)
        if self.registration_templates is not None:
            count = min(self.registration_templates, count)
        if self.selection == "first" or count == len(templates):
            return list(range(count))
        probe = fps_subsample(cloud, _NEAREST_PROBE_POINTS)
        distance = torch.stack([knn(t.to(probe), probe, 1)[1][:, 0].clamp_min(0).sqrt().mean() for t in templates])
        return torch.argsort(distance)[:count].tolist()

    def align(self, cloud: torch.Tensor, candidates: list[int] | None = None) -> tuple[torch.Tensor, int]:
        """Move a normalised ``cloud (N, 3)`` into the template frame.

        Registered to the first candidate (``registration``), then refined by ICP against every
        candidate; the best fit (highest fitness, then lowest RMSE) is kept.

        Returns:
            ``(aligned (N, 3), template index)`` - the index of the best-fitting template.
        """
        templates = self.templates
        candidates = self.candidates(cloud) if candidates is None else candidates
        if self.registration == "none" and self.distance_to == "templates":
            return cloud, candidates[0]  # no transform, and no single template to pick
        targets = [templates[i].double() for i in candidates]
        probe = fps_subsample(cloud, self.registration_points).double()
        voxel = default_voxel_size(targets[0])
        coarse = register(
            probe, targets[0], self.registration, voxel_size=voxel,  # type: ignore[arg-type]
            max_iterations=self.max_iterations, seed=self.seed,
        )
        index, best = best_template(
            probe, targets, method="none" if self.registration == "none" else "icp", init=coarse.transform,
            voxel_size=voxel, max_correspondence_distance=2 * voxel, max_iterations=self.max_iterations,
        )
        if self.keep_coarse_if_better and not best.better_than(coarse):
            index, best = 0, coarse
        return apply_transform(cloud, best.transform.to(cloud.device)), candidates[index]

    def distance(self, aligned: torch.Tensor, index: int, candidates: list[int]) -> torch.Tensor:
        """``(N,)`` distance of every point of an aligned cloud to the nearest template point
        (``distance_to``; ``index`` and ``candidates`` as from :meth:`align` / :meth:`candidates`)."""
        templates = self.templates
        if self.distance_to == "best":
            bank = templates[index]
        elif self.selection == "nearest":
            bank = torch.cat([templates[i] for i in candidates])
        else:
            bank = self.points
        _, sq = knn(bank.to(aligned), aligned, 1)
        return sq[:, 0].clamp_min(0).sqrt()

    @torch.no_grad()
    def distances(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """``(ΣN,)`` every point's distance to the templates, cloud by cloud: normalise, align, measure.

        Raises:
            RuntimeError: the bank holds no templates.
        """
        if not self.is_fitted:
            msg = "the template bank is empty: fit it on normal training clouds first."
            raise RuntimeError(msg)
        normalised = self.normalize(points, batch)
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        counts = torch.bincount(batch, minlength=num_clouds).tolist()
        distances = []
        for cloud in torch.split(normalised, counts):
            candidates = self.candidates(cloud)
            aligned, index = self.align(cloud, candidates)
            distances.append(self.distance(aligned, index, candidates))
        return torch.cat(distances) if distances else normalised.new_zeros(0)
