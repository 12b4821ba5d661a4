"""3DzAL as an anomalib model (Lightning module).

Paper: "Towards Zero-shot 3D Anomaly Localization" (3DzAL). See ``README.md`` for every component,
its switch, the choices made where the paper text lost a number, and measured results.

Fitting: the datamodule's training split holds the *normal* data of one (non-target) category; the
task-irrelevant samples (pseudo-anomaly material) come from, in this order, the ``task_irrelevant``
argument, the ``task_irrelevant_sources`` of a :class:`~anomalib_3d.data.datamodules.zero_shot.ZeroShot3D` datamodule, or the
built-in organized ``Synthetic3D`` parts that are not the target. f_theta and g_phi train on normal
vs pseudo-anomalous patches; the memory bank is (re)built from the training split with the final
weights before any validation / test / prediction.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d_plugins.threedzal import ThreeDzAL
    >>> model = ThreeDzAL.small()
    >>> Engine().train(model, datamodule=...)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from anomalib import LearningType
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.data.dataclasses import PointCloudBatch
from anomalib_3d.data.zero_shot import foreground_mask, read_organized_scans, source_dicts, task_irrelevant_dataset
from anomalib_3d.models import PointCloudModelMixin, PointScores, TrainingStatisticsMixin

from .torch_model import OrganizedCloud, ThreeDzALModel, ThreeDzALPrediction

logger = logging.getLogger(__name__)

#: CPU preset (``configs/models/threedzal_small.yaml``): 128² grid, 8-pixel patches (16 x 16 patches),
#: 16-d f_theta, tiny PointNet++, small random generator CNN, no RGB, FPFH radius for ~10 cm parts,
#: whole-grid pseudo-defects with count-matched positives.
SMALL_PRESET: dict[str, Any] = {
    "grid_size": 128,
    "patch_size": 8,
    "rgb_backbone": None,
    "fpfh_radius": 0.006,
    "fpfh_normal_k": 16,
    "feature_dim": 16,
    "pointnet_centroids": 8,
    "pointnet_group_size": 8,
    "pointnet_widths": (16, 32),
    "generator_backbone": "small",
    "top_fraction": 0.01,
    "region_size": 24,
    "pseudo_anomalies": "grid",
    "count_matched": True,
    "positives_per_sample": 32,
    "blur_sigma": 2.0,
    # chosen on the validation held-out categories knob and ring (README, table V):
    "learned_weight": 0.5,
    "depth_consistent": True,
    "perturbation_direction": "odin",
    "max_epochs": 100,
    "learning_rate": 2e-3,
    "max_task_irrelevant": 24,
}


class ThreeDzAL(TrainingStatisticsMixin, PointCloudModelMixin, AnomalibModule):
    """3DzAL: zero-shot 3D anomaly localization from task-irrelevant data.

    Args:
        grid_size: organized grids are nearest-resized to ``grid_size``² (224).
        patch_size: pixels per patch side (8 → 28 x 28 patches).
        rgb_backbone: ``"wide_resnet50_2"`` (needs local weights, else ``MissingWeightsError``) or
            ``None`` (xyz only).
        rgb_weights: local WideResNet-50-2 state dict (None: torchvision's cache).
        use_fpfh: FPFH branch.
        fpfh_radius: FPFH feature radius in the scan's units (BTF: 0.25); normals from
            ``fpfh_normal_k`` neighbours (the ops' way), at most ``fpfh_max_nn`` neighbours.
        learned_branch: f_theta (PointNet++ per patch, ``feature_dim`` wide).
        pointnet_centroids, pointnet_group_size, pointnet_widths: PointNet++ size (both networks).
        classifier: normalcy classifier g_phi (second PointNet++, 2-way).
        interest_source: ``"cnn"`` (random-CNN points of interest, the paper) or ``"random"``
            (random anchors on task-irrelevant samples: "generator off").
        generator_backbone: ``resnet50`` (paper), ``resnet18`` or ``small``.
        generator_pretrained: False (He init: paper), True (torchvision cache) or a weights path.
        top_fraction: share of a sample's points that are points of interest (paper 0.1 %).
        region_size: points of an interest region (seeds' surroundings).
        adding_ratio: share of adding-point pseudo-anomalies (the rest remove points).
        negative_ratio: pseudo-anomalous patches per normal patch.
        drop_fraction: range of the share of a patch's points removed.
        adding_scale: added region's size relative to the patch.
        removal: ``"hole"`` (contiguous: the points nearest a random patch point) or ``"random"``.
        negative_patch: ``"cell"`` (the anchor's grid cell ∪ added points) or ``"knn"`` (paper's kNN).
        pseudo_anomalies: ``"grid"`` (pseudo-defects made on the whole organized grid, then cut into
            cells: one surface per pixel) or ``"paper"`` (the paper's per-cell adding / removing).
        pseudo_kinds: grid kinds used (``attach``, ``bulge``, ``dent``, ``hole``); defect_cells:
            range of a defect's diameter in cells; defect_height: range of a bump's / attachment's
            height as a fraction of its radius; min_affected: pixels of a cell a defect must touch
            for the cell to be pseudo-anomalous.
        count_matched: positives drawn with exactly the negatives' point-count distribution.
        positives_per_sample: normal patches drawn per training cloud and step.
        min_patch_points: cells with fewer points are never anchors / positives.
        rotation_augment: random rotations about the view axis of every training patch.
        irrelevant_positives: extension, 0 (paper) = off: per step, this many task-irrelevant scans
            also give normal (positive) patches and pseudo-anomalies.
        contrastive_loss, disentanglement_loss: loss switches; lambda_contrastive (1),
            lambda_disentanglement (100), temperature (0.07), disentanglement_mode (``squared``:
            mean squared cosine; ``signed``: the literal mean cosine).
        denoising_loss: self-supervised f_theta (a control): rebuild jittered normal patches
            (noise ``denoising_noise`` in patch units), weight ``lambda_denoising``.
        perturbation: input perturbation before g_phi; epsilon (0.1); perturbation_direction.
        coreset_ratio: kept share of the bank (0.1); coreset_projection_dim (128).
        num_neighbors: support of the object-score re-weighting (3).
        blur_sigma: Gaussian sigma in model-grid pixels (4 at 224).
        alpha, beta: weights of the distance and classification scores.
        learned_weight: weight of the (norm-equalised) learned branch in the bank feature.
        map_centering: subtract each object's median patch score from its maps (off by default).
        normalize_learned: L2-normalise f_theta before the bank (Eq. 1 only shapes its direction).
        depth_consistent: adding-point pseudo-anomalous cells keep only the camera-visible points
            (one per pixel ray, as an organized scan would), not two layers.
        task_irrelevant: DataSource-like dicts of task-irrelevant samples (see module docstring).
        max_task_irrelevant: at most this many task-irrelevant samples are used (evenly spread).
        learning_rate: Adam learning rate; max_epochs: training epochs.
        remove_background: drop the support plane of raw ``DepthBatch`` inputs (anomalib's MVTec3D).
        seed: seeds everything random in the model.
    """

    requires_organized = True  # scores organized grids only; predict refuses unorganized clouds by name

    def __init__(
        self,
        grid_size: int = 224,
        patch_size: int = 8,
        rgb_backbone: str | None = None,
        rgb_weights: str | None = None,
        use_fpfh: bool = True,
        fpfh_radius: float = 0.25,
        fpfh_normal_k: int = 30,
        fpfh_max_nn: int = 100,
        learned_branch: bool = True,
        feature_dim: int = 32,
        pointnet_centroids: int = 16,
        pointnet_group_size: int = 8,
        pointnet_widths: tuple[int, int] = (32, 64),
        classifier: bool = True,
        interest_source: str = "cnn",
        generator_backbone: str = "resnet50",
        generator_pretrained: bool | str = False,
        top_fraction: float = 0.001,
        region_size: int = 32,
        adding_ratio: float = 0.5,
        negative_ratio: float = 1.0,
        drop_fraction: tuple[float, float] = (0.3, 0.7),
        adding_scale: float = 1.0,
        removal: str = "hole",
        negative_patch: str = "cell",
        pseudo_anomalies: str = "grid",
        pseudo_kinds: list[str] | tuple[str, ...] = ("attach", "bulge", "dent", "hole"),
        defect_cells: tuple[float, float] = (0.5, 2.0),
        defect_height: tuple[float, float] = (0.1, 0.4),
        min_affected: int = 8,
        count_matched: bool = True,
        positives_per_sample: int = 64,
        min_patch_points: int = 4,
        rotation_augment: bool = True,
        irrelevant_positives: int = 0,
        contrastive_loss: bool = True,
        disentanglement_loss: bool = True,
        lambda_contrastive: float = 1.0,
        lambda_disentanglement: float = 100.0,
        temperature: float = 0.07,
        disentanglement_mode: str = "squared",
        denoising_loss: bool = False,
        lambda_denoising: float = 1.0,
        denoising_noise: float = 0.1,
        perturbation: bool = True,
        epsilon: float = 0.1,
        perturbation_direction: str = "paper",
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int | None = 128,
        num_neighbors: int = 3,
        blur_sigma: float = 4.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        learned_weight: float = 1.0,
        map_centering: bool = False,
        normalize_learned: bool = False,
        depth_consistent: bool = False,
        task_irrelevant: list[dict[str, Any]] | dict[str, Any] | None = None,
        max_task_irrelevant: int = 64,
        learning_rate: float = 1e-3,
        max_epochs: int = 10,
        remove_background: bool = True,
        seed: int = 0,
        pre_processor: torch.nn.Module | bool = True,
        post_processor: torch.nn.Module | bool = True,
        evaluator: Any = True,  # noqa: ANN401
        visualizer: Any = True,  # noqa: ANN401
    ) -> None:
        task_irrelevant = source_dicts(task_irrelevant)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.model = ThreeDzALModel(
            grid_size=grid_size, patch_size=patch_size, rgb_backbone=rgb_backbone, rgb_weights=rgb_weights,
            use_fpfh=use_fpfh, fpfh_radius=fpfh_radius, fpfh_normal_k=fpfh_normal_k, fpfh_max_nn=fpfh_max_nn,
            learned_branch=learned_branch, feature_dim=feature_dim, pointnet_centroids=pointnet_centroids,
            pointnet_group_size=pointnet_group_size, pointnet_widths=tuple(pointnet_widths), classifier=classifier,
            interest_source=interest_source, generator_backbone=generator_backbone,
            generator_pretrained=generator_pretrained, top_fraction=top_fraction, region_size=region_size,
            adding_ratio=adding_ratio, negative_ratio=negative_ratio, drop_fraction=tuple(drop_fraction),
            adding_scale=adding_scale, removal=removal, negative_patch=negative_patch, pseudo_anomalies=pseudo_anomalies,
            pseudo_kinds=tuple(pseudo_kinds), defect_cells=tuple(defect_cells), defect_height=tuple(defect_height),
            min_affected=min_affected, count_matched=count_matched, positives_per_sample=positives_per_sample,
            min_patch_points=min_patch_points, rotation_augment=rotation_augment,
            irrelevant_positives=irrelevant_positives, contrastive_loss=contrastive_loss,
            disentanglement_loss=disentanglement_loss, lambda_contrastive=lambda_contrastive,
            lambda_disentanglement=lambda_disentanglement, temperature=temperature,
            disentanglement_mode=disentanglement_mode, denoising_loss=denoising_loss, lambda_denoising=lambda_denoising,
            denoising_noise=denoising_noise, perturbation=perturbation, epsilon=epsilon,
            perturbation_direction=perturbation_direction, coreset_ratio=coreset_ratio,
            coreset_projection_dim=coreset_projection_dim, num_neighbors=num_neighbors, blur_sigma=blur_sigma,
            alpha=alpha, beta=beta, learned_weight=learned_weight, map_centering=map_centering,
            normalize_learned=normalize_learned, depth_consistent=depth_consistent, seed=seed,
        )
        self.task_irrelevant = task_irrelevant
        self.max_task_irrelevant = int(max_task_irrelevant)
        self.learning_rate = float(learning_rate)
        self.max_epochs = int(max_epochs)
        self.remove_background = remove_background
        self.seed = int(seed)
        self._statistics_stale = True  # the memory bank (TrainingStatisticsMixin)
        #: paths of every sample read for fitting (normal training + task-irrelevant), for audits.
        self.fit_paths: list[str] = []

    @classmethod
    def small(cls, **overrides: Any) -> ThreeDzAL:  # noqa: ANN401
        """The CPU preset (see :data:`SMALL_PRESET`)."""
        return cls(**{**SMALL_PRESET, **overrides})

    # ------------------------------------------------------------------------------------------
    # anomalib contract
    @property
    def learning_type(self) -> LearningType:
        """Normal data of a non-target category (+ task-irrelevant data): anomalib runs ``fit``."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Epochs of f_theta / g_phi; one validation after the last (the bank is built then)."""
        epochs = self.max_epochs if self.model.trainable else 1
        return {"max_epochs": epochs, "num_sanity_val_steps": 0, "check_val_every_n_epoch": max(1, epochs),
                "gradient_clip_val": 0}

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        """Adam on f_theta and g_phi (None for the BTF-style configuration: nothing to learn)."""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if not self.model.trainable or not parameters:
            return None
        return torch.optim.Adam(parameters, lr=self.learning_rate)

    # ------------------------------------------------------------------------------------------
    # data
    def _datamodule(self) -> Any:  # noqa: ANN401
        """The datamodule of the trainer this module is attached to (``None`` when there is none)."""
        try:
            return self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return None

    def task_irrelevant_dataset(self) -> Any:  # noqa: ANN401
        """The task-irrelevant samples (see :func:`anomalib_3d.data.zero_shot.task_irrelevant_dataset`)."""
        return task_irrelevant_dataset(self.task_irrelevant, self._datamodule(), self.model.grid_size)

    def load_task_irrelevant(self) -> int:
        """Read (at most ``max_task_irrelevant``) task-irrelevant samples and compute their interest regions."""
        dataset = self.task_irrelevant_dataset()
        scans = read_organized_scans(dataset, self.max_task_irrelevant, self.model.grid_size)
        if not scans:
            msg = "no task-irrelevant sample found; give task_irrelevant sources or set adding_ratio: 0."
            raise ValueError(msg)
        self.fit_paths.extend(scan.path for scan in scans)
        found = self.model.set_task_irrelevant([(scan.xyz, scan.valid) for scan in scans])
        logger.info("3DzAL: %d interest regions from %d task-irrelevant samples (categories: %s).",
                    found, len(scans), ", ".join(sorted(set(dataset.samples.category))))
        return found

    def setup(self, stage: str | None = None) -> None:
        """On ``fit``: compute the task-irrelevant interest regions (adding / attach material)."""
        if stage == "fit" and self.model.uses_task_irrelevant and not self.model.regions:
            self.load_task_irrelevant()

    # ------------------------------------------------------------------------------------------
    # batches → organized clouds
    def organized_clouds(self, batch: Any, keyed: bool = False) -> tuple[PointCloudBatch, list[OrganizedCloud]]:  # noqa: ANN401
        """The batch as points and as clouds on the model grid (support plane dropped for raw ``DepthBatch``)."""
        points = self.as_point_batch(batch)
        if points.grid_index is None or points.grid_shape is None:
            msg = ("3DzAL needs organized clouds (grid_index / grid_shape): MVTec 3D-AD, anomalib's MVTec3D, "
                   "or Synthetic3D with layout: mvtec3d.")
            raise TypeError(msg)
        device = points.points.device
        batch_index = points.batch_index.to(device)
        grid_index = points.grid_index.to(device)
        foreground = None
        if getattr(batch, "depth_map", None) is not None and self.remove_background:
            foreground = foreground_mask(points).to(device)
        keys = None
        if keyed and points.point_path is not None:
            keys = [str(p) for p in points.point_path]
        image = None if points.image is None else points.image.as_subclass(torch.Tensor).to(device)
        clouds = self.model.organize(points.points, batch_index, grid_index, points.grid_shape, points.batch_size,
                                     image=image, foreground=foreground, keys=keys)
        return points, clouds

    # ------------------------------------------------------------------------------------------
    # steps
    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Losses of f_theta / g_phi on normal clouds + their pseudo-anomalies (nothing when not trainable)."""
        del args, kwargs
        points, clouds = self.organized_clouds(batch, keyed=True)
        if points.point_path is not None:
            self.fit_paths.extend(str(p) for p in points.point_path)
        self.mark_statistics_stale()
        if not self.model.trainable:
            return None
        losses = self.model.training_losses(clouds)
        if "loss" not in losses:
            return None
        for name, value in losses.items():
            self.log(f"train_{name}", value, prog_bar=name == "loss", batch_size=points.batch_size)
        return losses["loss"]

    @torch.no_grad()
    def build_memory_bank(self, dataloader: Any = None) -> int:  # noqa: ANN401
        """Features of the training split (final weights) → coreset memory bank.

        Args:
            dataloader: batches to build from; default: this rank's share of the training split
                (:meth:`~anomalib_3d.models.TrainingStatisticsMixin.training_batches`).

        Returns:
            number of training patch features (over all ranks).
        """
        batches = list(dataloader) if dataloader is not None else self.training_batches()
        if not batches:
            msg = "no training data to build the memory bank from: fit on a datamodule, or pass a dataloader."
            raise RuntimeError(msg)
        was_training = self.model.training
        self.model.eval()
        try:
            count = self._fit_bank(batches)
        finally:
            self.model.train(was_training)
        self._statistics_stale = False
        return count

    @torch.no_grad()
    def fit_training_statistics(self, batches: list[Any]) -> None:
        """The coreset memory bank of the training patch features (TrainingStatisticsMixin)."""
        self._fit_bank(batches)

    def training_statistics_fitted(self) -> bool:
        """Whether the memory bank was fitted (or loaded)."""
        return bool(self.model.memory_bank.is_fitted)

    def _fit_bank(self, batches: list[Any]) -> int:
        clouds = []
        for batch in batches:
            batch = batch.to(self.device) if hasattr(batch, "to") else batch
            points, organized = self.organized_clouds(batch, keyed=True)
            if points.point_path is not None:
                self.fit_paths.extend(str(p) for p in points.point_path)
            clouds.extend(organized)
        if all(c.key is not None for c in clouds):
            # The coreset depends on the feature order: make the bank independent of the shuffling.
            clouds.sort(key=lambda c: c.key)
        count = self.model.fit_memory_bank(clouds)
        logger.info("3DzAL memory bank: %d of %d training patch features kept.", self.model.memory_bank.bank.shape[0], count)
        return count

    def predict_batch(self, batch: Any) -> tuple[Any, ThreeDzALPrediction]:  # noqa: ANN401
        """Scores of a batch: ``(batch with anomaly_map / pred_score, raw prediction)``."""
        points, clouds = self.organized_clouds(batch)
        prediction = self.model.predict_clouds(clouds)
        return self.write_predictions(batch, points, prediction.anomaly_map, prediction.pred_score), prediction

    def predict_points(self, batch: Any) -> PointScores:  # noqa: ANN401
        """Per-point and object scores of a batch (bank distance, normalcy classifier, learned feature)."""
        points, clouds = self.organized_clouds(batch)
        prediction = self.model.predict_clouds(clouds)
        return PointScores(points, prediction.anomaly_map, prediction.pred_score)


__all__ = ["SMALL_PRESET", "ThreeDzAL"]
