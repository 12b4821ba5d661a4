"""Odd-One-Out as an anomalib model (switches and measured results in README.md).

Training follows the paper's two stages: for the first ``render_epochs`` epochs only the rendering
loss (RGB + silhouette + feature distillation into the supervising views); afterwards the object
classification loss (class-weighted BCE) plus ``render_loss_weight`` x the rendering loss.

Outputs per scene: ``object_scores`` (sigmoid of the object logits, one per ground-truth box),
``pred_score`` = the highest object score, ``anomaly_map`` = each object's score painted on its
segmentation in every view (so anomalib's post-processor and pixel metrics see per-view maps); with
``boxes="proposals"`` also ``pred_boxes`` / ``pred_object_scores`` / ``pred_object_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib import LearningType
from anomalib.metrics import AUROC, Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.data.scenes import SceneBatch
from anomalib_3d.metrics.objects import ObjectAccuracy, ground_truth_scores
from anomalib_3d.visualization.scenes import SceneVisualizer
from anomalib_3d.render.volume import VoxelGrid

from .backbones import build_encoder, build_teacher
from .proposals import density_proposals
from .torch_model import OddOneOutModel

__all__ = ["OddOneOut", "paint_object_scores"]


def paint_object_scores(object_scores: torch.Tensor, object_index: torch.Tensor, object_batch: torch.Tensor) -> torch.Tensor:
    """Per-view maps: each pixel gets the score of the object it shows (0 elsewhere).

    Args:
        object_scores: ``(ΣK,)``; object_index: ``(B, V, H, W)`` scene-local object of each pixel
            (-1 none); object_batch: ``(ΣK,)``.

    Returns:
        ``(B, V, H, W)`` float.
    """
    batch = object_index.shape[0]
    counts = torch.bincount(object_batch, minlength=batch)
    offset = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]]).view(batch, 1, 1, 1)
    shown = object_index >= 0
    flat = (object_index + offset).clamp(min=0, max=max(object_scores.shape[0] - 1, 0))
    if object_scores.numel() == 0:
        return torch.zeros(object_index.shape, device=object_index.device)
    return torch.where(shown, object_scores[flat], torch.zeros((), device=object_scores.device))


class OddOneOut(AnomalibModule):
    """Odd-One-Out (Bhunia et al., CVPR 2025) for :class:`~anomalib_3d.data.datamodules.multiview_scenes.MultiViewScenes`.

    Args:
        grid_shape, voxel_size, grid_center: the voxel grid (paper: 96 x 96 x 16, 4 cm, origin).
        feature_dim, projection_dim, crop_size, attention, topk, num_blocks, heads, token_dim:
            see :class:`~anomalib_3d_plugins.odd_one_out.torch_model.OddOneOutModel`.
        render_size: ``(h, w)`` of the rendered supervision (paper: 32 x 32).
        num_samples: samples per ray (paper: 128).
        render_epochs: epochs of the first (rendering-only) stage.
        distillation: render β and match it to the teacher's features (ablation switch).
        encoder: 2D encoder, ``"small"`` (CPU preset) or ``"resnet50_fpn"`` (the paper's ResNet-50 + FPN);
            ``encoder_weights``: ``"default"`` (ImageNet from torch hub's cache for ResNet-50), a local
            file, or ``None`` (random init).
        teacher: distillation teacher, ``"dinov2_vits14"`` (the paper; weights from a local file or
            torch hub's cache, else :class:`~anomalib_3d.data.errors.MissingWeightsError`) or
            ``"random"`` (a frozen, randomly initialised small CNN: the CPU stand-in used in tests and
            in our synthetic results, *not* the paper's teacher). ``teacher_weights`` as for the
            encoder; ``teacher_image_size``: DINOv2 input size (official code: 14 x render size);
            ``pca_fit_batches``: training batches used to fit DINOv2's PCA to ``projection_dim``.
        readout: ``"conv"`` (the paper) or ``"mean"``, see
            :class:`~anomalib_3d_plugins.odd_one_out.torch_model.ObjectReadout`.
        feature_loss: distillation loss, ``"cosine"`` (the paper: cosine distance per pixel) or ``"mse"``.
        image_loss: ``"l2"`` (the paper's Eq. 3: squared error of RGB and silhouette) or ``"l1_bce"``
            (L1 on RGB, binary cross-entropy on the silhouette).
        feature_stop_gradient: render β with the density detached (the paper).
        unet_scales: resolutions of the 3D encoder-decoder (the paper's "four-scale" backbone: 4, also the
            CPU preset; 3 is the network of the earlier presets).
        boxes: which boxes are scored at test/predict time: ``"ground_truth"`` (the dataset's boxes)
            or ``"proposals"`` (the paper: occupied voxels of the predicted density clustered into
            boxes, :func:`~anomalib_3d_plugins.odd_one_out.proposals.density_proposals`; each
            ground-truth object then takes the score of its best-overlapping proposal).
        proposal_method: ``"dbscan"`` (the paper) or ``"spectral"`` (the official code);
            ``proposal_threshold``: one-voxel opacity threshold; ``proposal_count``: ``"estimate"``
            (eigengap) or ``"ground_truth"`` (the official evaluation passes the true object count
            to the spectral clustering).
        render_loss_weight: weight of the rendering loss in the second stage (official code: 0.1).
        positive_weight: BCE weight of anomalous objects (normal ones get ``1 - positive_weight``).
        learning_rate: Adam learning rate.
        lr_schedule: ``"constant"`` (the paper: Adam at a fixed rate) or ``"cosine"`` (cosine decay to
            0 over ``max_epochs``).
        gradient_clip_val: clip the gradient norm at this value (the CPU preset: 1, because its rate,
            100x the paper's, diverged late in training on some seeds; see the README). 0 leaves
            Lightning's own ``--trainer.gradient_clip_val`` in charge.
        visualizer: ``True``: :class:`~anomalib_3d.visualization.scenes.SceneVisualizer` writes one
            picture per test / predict scene; ``False`` for none; or any anomalib ``Visualizer``.
    """

    def __init__(
        self,
        grid_shape: Sequence[int] = (96, 96, 16),
        voxel_size: float = 0.04,
        grid_center: Sequence[float] = (0.0, 0.0, 0.0),
        feature_dim: int = 32,
        projection_dim: int = 32,
        crop_size: int = 8,
        attention: str = "sparse",
        topk: int = 20,
        num_blocks: int = 3,
        heads: int = 8,
        token_dim: int = 64,
        render_size: Sequence[int] = (32, 32),
        num_samples: int = 64,
        render_epochs: int = 1,
        distillation: bool = True,
        encoder: str = "small",
        encoder_weights: str | None = "default",
        teacher: str = "random",
        teacher_weights: str | None = "default",
        teacher_image_size: Sequence[int] | None = None,
        pca_fit_batches: int = 8,
        readout: str = "conv",
        feature_loss: str = "cosine",
        image_loss: str = "l2",
        feature_stop_gradient: bool = True,
        unet_scales: int = 4,
        boxes: str = "ground_truth",
        proposal_method: str = "dbscan",
        proposal_threshold: float = 0.2,
        proposal_count: str = "estimate",
        render_loss_weight: float = 0.1,
        positive_weight: float = 0.7,
        learning_rate: float = 2e-4,
        lr_schedule: str = "constant",
        gradient_clip_val: float = 0.0,
        pre_processor: torch.nn.Module | bool = False,
        post_processor: torch.nn.Module | bool = True,
        evaluator: Any = True,  # noqa: ANN401 - anomalib's Evaluator | bool
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.grid = VoxelGrid(tuple(grid_shape), voxel_size, tuple(grid_center))
        self.model = OddOneOutModel(self.grid, feature_dim, projection_dim, crop_size, attention, topk, num_blocks,
                                    heads, token_dim, encoder=build_encoder(encoder, feature_dim, encoder_weights),
                                    readout=readout, feature_stop_gradient=feature_stop_gradient,
                                    unet_scales=unet_scales)
        if feature_loss not in ("cosine", "mse"):
            msg = f"feature_loss must be 'cosine' or 'mse', got {feature_loss!r}."
            raise ValueError(msg)
        self.feature_loss = feature_loss
        if image_loss not in ("l2", "l1_bce"):
            msg = f"image_loss must be 'l2' or 'l1_bce', got {image_loss!r}."
            raise ValueError(msg)
        self.image_loss = image_loss
        self.teacher = (build_teacher(teacher, projection_dim, teacher_weights, image_size=teacher_image_size)
                        if distillation else None)
        self.pca_fit_batches = int(pca_fit_batches)
        if boxes not in ("ground_truth", "proposals"):
            msg = f"boxes must be 'ground_truth' or 'proposals', got {boxes!r}."
            raise ValueError(msg)
        if proposal_count not in ("estimate", "ground_truth"):
            msg = f"proposal_count must be 'estimate' or 'ground_truth', got {proposal_count!r}."
            raise ValueError(msg)
        # Checked here, not at the first proposal: a typo must not surface only after training.
        if proposal_method not in ("dbscan", "spectral"):
            msg = f"proposal_method must be 'dbscan' or 'spectral', got {proposal_method!r}."
            raise ValueError(msg)
        if not 0.0 < float(proposal_threshold) < 1.0:
            msg = f"proposal_threshold is an opacity in (0, 1), got {proposal_threshold!r}."
            raise ValueError(msg)
        self.boxes = boxes
        self.proposal_method = proposal_method
        self.proposal_threshold = float(proposal_threshold)
        self.proposal_count = proposal_count
        self.render_size = tuple(int(s) for s in render_size)
        self.num_samples = int(num_samples)
        self.render_epochs = int(render_epochs)
        self.distillation = distillation
        self.render_loss_weight = float(render_loss_weight)
        self.positive_weight = float(positive_weight)
        self.learning_rate = float(learning_rate)
        if lr_schedule not in ("constant", "cosine"):
            msg = f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}."
            raise ValueError(msg)
        if gradient_clip_val < 0:
            msg = f"gradient_clip_val must be >= 0, got {gradient_clip_val!r}."
            raise ValueError(msg)
        self.lr_schedule = lr_schedule
        self.gradient_clip_val = float(gradient_clip_val)

    @property
    def learning_type(self) -> LearningType:
        # anomalib has no "supervised" type; ONE_CLASS selects its standard post-processor.
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        # anomalib lets these override the user's trainer arguments: pass clipping only when set here.
        arguments: dict[str, Any] = {"num_sanity_val_steps": 0}
        if self.gradient_clip_val > 0:
            arguments["gradient_clip_val"] = self.gradient_clip_val
        return arguments

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Scene AUROC (max object score vs 'scene holds an odd object'), object AUROC, the paper's
        object accuracy (IoU > 0.5 and the right label, mean over scenes) with the official code's
        pooled variant (max-IoU box, pooled over objects), and pixel AUROC of the per-view maps."""
        scene = AUROC(fields=["pred_score", "gt_label"], prefix="image_")
        objects = AUROC(fields=["object_scores", "object_labels"], prefix="object_")
        accuracy = ObjectAccuracy(fields=["object_scores", "object_labels"], iou_threshold=0.5, threshold=0.5)
        pooled = ObjectAccuracy(fields=["object_scores", "object_labels"], threshold=0.5, pooled=True)
        # Per-view maps (each object's score on its footprint) against the per-view anomaly masks.
        pixel = AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_")
        return Evaluator(test_metrics=[scene, objects, accuracy, pooled, pixel])

    @classmethod
    def configure_visualizer(cls) -> SceneVisualizer:
        """One PNG per test / predict scene: boxes coloured by object score above the ground truth."""
        return SceneVisualizer()

    def on_train_start(self) -> None:
        """Fit the teacher's fixed PCA (DINOv2 384 -> ``projection_dim``) once, on the first training views."""
        if self.teacher is None or not getattr(self.teacher, "needs_fit", False):
            return
        loader = self.trainer.train_dataloader
        images = (batch.image.flatten(0, 1).to(self.device) for batch, _ in zip(loader, range(self.pca_fit_batches), strict=False))
        self.teacher.fit_pca(images)

    def configure_optimizers(self) -> Any:  # noqa: ANN401 - an optimizer, or Lightning's optimizer dict
        optimizer = torch.optim.Adam((p for p in self.model.parameters() if p.requires_grad), lr=self.learning_rate)
        if self.lr_schedule == "constant":
            return optimizer
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        if not epochs or epochs < 1:
            msg = f"lr_schedule 'cosine' decays over trainer.max_epochs, which is {epochs!r}; set it (or use 'constant')."
            raise ValueError(msg)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- helpers ----------------------------------------------------------------------------
    def _render_cameras(self, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        scale = torch.tensor([self.render_size[1] / image_hw[1], self.render_size[0] / image_hw[0], 1.0],
                             device=intrinsics.device, dtype=intrinsics.dtype)
        return intrinsics * scale.view(1, 1, 3, 1)

    def _downsample(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, V, C, H, W)`` -> ``(B, V, C, h, w)`` (area average)."""
        batch, views = images.shape[:2]
        small = F.interpolate(images.flatten(0, 1).float(), size=self.render_size, mode="area")
        return small.view(batch, views, *small.shape[1:])

    def render_loss(self, batch: SceneBatch, render: Any, views: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        """Paper Eq. 3-4 in the supervising ``views``: squared error of the rendered RGB and silhouette
        (lambda_sigma = 1) plus the feature distillation loss (cosine distance, lambda_f = 1)."""
        target_rgb = self._downsample(batch.image[:, views])
        l2 = self.image_loss == "l2"
        loss = (F.mse_loss if l2 else F.l1_loss)(render.features[:, :, :3], target_rgb)
        if batch.silhouette is not None:
            target = self._downsample(batch.silhouette[:, views].unsqueeze(2).float())[:, :, 0]
            opacity = render.opacity if l2 else render.opacity.clamp(1e-5, 1 - 1e-5)
            loss = loss + (F.mse_loss if l2 else F.binary_cross_entropy)(opacity, target)
        if self.teacher is not None:
            with torch.no_grad():
                images = batch.image[:, views]
                teacher = self.teacher(images.flatten(0, 1))
                teacher = F.interpolate(teacher, size=self.render_size, mode="bilinear", align_corners=False)
                teacher = teacher.view(*images.shape[:2], *teacher.shape[1:])
            rendered = render.features[:, :, 3:]
            if self.feature_loss == "cosine":
                loss = loss + (1.0 - F.cosine_similarity(rendered, teacher, dim=2, eps=1e-6)).mean()
            else:
                loss = loss + F.mse_loss(rendered, teacher)
        return loss

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Class-weighted BCE (anomalous objects weigh ``positive_weight``)."""
        labels = labels.float()
        weight = labels * self.positive_weight + (1 - labels) * (1 - self.positive_weight)
        return F.binary_cross_entropy_with_logits(logits, labels, weight=weight)

    # -- steps ------------------------------------------------------------------------------
    def training_step(self, batch: SceneBatch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        del args, kwargs
        source = batch.source_views[0] if batch.source_views is not None else torch.ones(batch.num_views, dtype=torch.bool)
        supervise = ~source if bool((~source).any()) else source
        image_hw = tuple(batch.image.shape[-2:])
        out = self.model(
            batch.image[:, source], batch.intrinsics[:, source], batch.world_to_camera[:, source],
            batch.boxes, batch.object_batch,
            self._render_cameras(batch.intrinsics[:, supervise], image_hw), batch.world_to_camera[:, supervise],
            self.render_size, self.num_samples,
        )
        render = self.render_loss(batch, out.render, supervise)
        self.log("train_render_loss", render, prog_bar=True, batch_size=batch.batch_size)
        if self.current_epoch < self.render_epochs:
            return {"loss": render}
        classification = self.classification_loss(out.object_logits, batch.object_labels)
        self.log("train_cls_loss", classification, prog_bar=True, batch_size=batch.batch_size)
        return {"loss": classification + self.render_loss_weight * render}

    def _predict(self, batch: SceneBatch) -> SceneBatch:
        if self.boxes == "proposals":
            return self._predict_proposals(batch)
        out = self.model(batch.image, batch.intrinsics, batch.world_to_camera, batch.boxes, batch.object_batch)
        scores = torch.sigmoid(out.object_logits)
        scene_scores = torch.zeros(batch.batch_size, device=scores.device)
        scene_scores = scene_scores.scatter_reduce(0, batch.object_batch, scores, "amax", include_self=True)
        if batch.object_index is not None:
            maps = paint_object_scores(scores, batch.object_index, batch.object_batch)
        else:
            maps = torch.zeros(batch.image.shape[0], batch.num_views, *batch.image.shape[-2:], device=scores.device)
        return batch.update(object_scores=scores, pred_score=scene_scores, anomaly_map=maps)

    def _predict_proposals(self, batch: SceneBatch) -> SceneBatch:
        """Score density proposals; ground-truth objects read the score of their best-overlapping proposal."""
        features, density, _, projection = self.model.build_volume(batch.image, batch.intrinsics, batch.world_to_camera)
        count = batch.num_objects if self.proposal_method == "spectral" and self.proposal_count == "ground_truth" else None
        pred_boxes, pred_batch = density_proposals(density, self.grid, threshold=self.proposal_threshold,
                                                   method=self.proposal_method, num_clusters=count)
        pred_scores = torch.sigmoid(self.model.classify(features, density, projection, pred_boxes, pred_batch))
        scene_scores = torch.zeros(batch.batch_size, device=density.device)
        scene_scores = scene_scores.scatter_reduce(0, pred_batch, pred_scores, "amax", include_self=True)
        updates: dict[str, Any] = {"pred_score": scene_scores, "pred_boxes": pred_boxes,
                                   "pred_object_scores": pred_scores, "pred_object_batch": pred_batch}
        if batch.boxes is not None:
            scores = ground_truth_scores(pred_boxes, pred_scores, pred_batch, batch.boxes, batch.object_batch)
            updates["object_scores"] = scores
            if batch.object_index is not None:
                updates["anomaly_map"] = paint_object_scores(scores, batch.object_index, batch.object_batch)
        return batch.update(**updates)

    def validation_step(self, batch: SceneBatch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: SceneBatch, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        del args, kwargs, batch_idx
        return self._predict(batch)

    def predict_step(self, batch: SceneBatch, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        del batch_idx, dataloader_idx
        return self._predict(batch)

    def forward(self, batch: SceneBatch, *args: Any, **kwargs: Any) -> SceneBatch:  # noqa: ANN401
        del args, kwargs
        batch = self._predict(batch)
        return self.post_processor(batch) if self.post_processor else batch
