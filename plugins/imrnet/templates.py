"""IMRNet's geometric residual (not in the paper; ``geometric_score_weight``): every input point, in
the bounding-box frame and registered to the training templates
(:class:`anomalib_3d.ops.TemplateBank`), scores its distance to the nearest template point divided
by the templates' leave-one-out mean distance.
"""

from __future__ import annotations

import torch

from anomalib_3d.ops.neighbors import knn
from anomalib_3d.ops.templates import TemplateBank, cloud_checksums, leave_one_out_distances

from .settings import IMRNetSettings


class _BankSetting:
    """A model attribute that lives on its geometric template bank (one place holds the value)."""

    def __init__(self, bank_attribute: str) -> None:
        self.bank_attribute = bank_attribute

    def __get__(self, model: GeometricResidual | None, owner: type | None = None) -> object:
        return self if model is None else getattr(model.geometric_bank, self.bank_attribute)

    def __set__(self, model: GeometricResidual, value: object) -> None:
        setattr(model.geometric_bank, self.bank_attribute, value)


def neighbourhood_mean(points: torch.Tensor, values: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """``(ΣN,)`` mean of ``values`` over each point's ``k`` nearest points of its own cloud (itself
    included) of ``points (ΣN, 3)``; a cloud of fewer points averages over all of them."""
    num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_clouds)
    k = min(k, int(counts.min())) if num_clouds else k
    index, _ = knn(points.float(), points.float(), k, batch, batch)
    return values[index].mean(dim=1)


class GeometricResidual:
    """The geometric residual of :class:`~.torch_model.IMRNetModel` (a mixin of it).

    :meth:`init_geometric_residual` adds the template bank (``geometric_bank``) and the score scale
    buffer; the registration settings (``registration``, ``registration_templates``,
    ``registration_points``, ``template_points``, ``template_selection``) and the RANSAC seed are
    the bank's, read and set through the model.
    """

    geometric_bank: TemplateBank
    geometric_score_scale: torch.Tensor
    geometric_smoothing_k: int

    registration = _BankSetting("registration")
    registration_templates = _BankSetting("registration_templates")
    registration_points = _BankSetting("registration_points")
    template_points = _BankSetting("template_points")
    template_selection = _BankSetting("selection")

    def init_geometric_residual(self, settings: IMRNetSettings) -> None:
        """Every training cloud (bounding-box frame) becomes a template registered to the first; a
        test cloud is refined against ``registration_templates`` of them (the first, or the nearest)
        and compared with all templates, or with the nearest ones only."""
        self.geometric_bank = TemplateBank(
            normalization="bbox",
            template_points=settings.template_points,
            num_templates=None,
            registration=settings.registration,
            registration_points=settings.registration_points,
            registration_templates=settings.registration_templates,
            selection=settings.template_selection,
            distance_to="templates",
            keep_coarse_if_better=True,
            seed=settings.seed,
        )
        self.register_buffer("geometric_score_scale", torch.ones(()))  # type: ignore[attr-defined]

    @property
    def seed(self) -> int:
        """Seed of the test masks, of deterministic subsampling and of RANSAC in the template bank."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = value
        if "geometric_bank" in self._modules:  # type: ignore[attr-defined]
            self.geometric_bank.seed = value

    @property
    def geometric_template_list(self) -> list[torch.Tensor]:
        """The registered training templates, each ``(M_i, 3)`` (empty before calibration)."""
        return self.geometric_bank.templates

    @torch.no_grad()
    def geometric_scores(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Normalised geometric residual of every input point ``(ΣN,)`` of ``points (ΣN, 3)``.

        Raises:
            RuntimeError: no templates yet (call ``calibrate`` first).
        """
        if not self.geometric_bank.is_fitted:
            msg = "IMRNet has no geometric templates: calibrate it on normal training clouds first."
            raise RuntimeError(msg)
        distances = self.geometric_bank.distances(points, batch)
        if self.geometric_smoothing_k > 1:
            distances = neighbourhood_mean(points, distances, batch, self.geometric_smoothing_k)
        return distances / self.geometric_score_scale

    @torch.no_grad()
    def fit_geometric_templates(self, clouds: list[torch.Tensor]) -> float:
        """Build the geometric template bank and its leave-one-out scale from normal clouds.

        Args:
            clouds: this rank's training clouds, each ``(N_i, 3)`` (gathered over ranks by the bank).

        Returns:
            The scale (``score_scale`` of the model): the mean distance of every template point to
            the other templates, or the mean over templates of the largest such distance (after
            the same smoothing as test clouds get).
        """
        prepared, keys = [], []
        for cloud in clouds:
            single = torch.zeros(cloud.shape[0], dtype=torch.long, device=cloud.device)
            prepared.extend(self.geometric_bank.prepare(cloud, single))
            keys.append(cloud_checksums(cloud, single))
        # Ordered by the content keys that also order the feature template (see calibrate).
        self.geometric_bank.fit(prepared, torch.cat(keys))
        scale = self._leave_one_out_scale()
        self.geometric_score_scale.fill_(max(scale, 1e-12))
        return scale

    def _leave_one_out_scale(self) -> float:
        """Scale of the residual from every template's distances to the other templates, smoothed as
        test clouds are: their mean (``score_scale="mean"``) or the mean of each template's maximum."""
        templates = self.geometric_bank.templates
        if len(templates) < 2:
            return self.geometric_bank.leave_one_out_scale()
        per_template = list(torch.split(leave_one_out_distances(templates), [t.shape[0] for t in templates]))
        if self.geometric_smoothing_k > 1:
            per_template = [
                neighbourhood_mean(t, d, torch.zeros(t.shape[0], dtype=torch.long, device=t.device), self.geometric_smoothing_k)
                for t, d in zip(templates, per_template)
            ]
        if self.score_scale == "mean":  # type: ignore[attr-defined]
            return float(torch.cat(per_template).mean())
        return float(torch.stack([d.max() for d in per_template]).mean())


__all__ = ["GeometricResidual", "neighbourhood_mean"]
