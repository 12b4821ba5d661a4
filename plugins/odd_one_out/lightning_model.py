"""Odd-One-Out as an anomalib model (switches and measured results in README.md).

Training follows the paper's two stages: for the first ``render_epochs`` epochs only the rendering
loss (RGB + silhouette + feature distillation into the supervising views); afterwards the object
classification loss (class-weighted BCE) plus ``render_loss_weight`` x the rendering loss. Each
training scene is moved by the official code's random scene augmentation (:mod:`.augmentation`).

Outputs per scene: ``object_scores`` (sigmoid of the object logits, one per ground-truth box),
``pred_score`` = the highest object score, ``anomaly_map`` = each object's score painted on its
segmentation in every view (for anomalib's post-processor and the pictures: it paints object scores,
it localises nothing inside an object, so no pixel metric is computed from it); with
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
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.data.scenes import SceneBatch
from anomalib_3d.metrics.objects import ObjectAccuracy, SceneObjectAUROC, ground_truth_scores
from anomalib_3d.settings import check_choice, switches_from
from anomalib_3d.visualization.scenes import SceneVisualizer

from .augmentation import augment_scene
from .backbones import build_teacher
from .proposals import density_proposals
from .settings import OddOneOutSettings
from .teachers import ContrastiveTeacher
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


# pre_processor listed with default False: the CLI would otherwise fill in anomalib's default (True:
# a resize to 256 x 256) for the scenes, which are used as loaded.
@switches_from(OddOneOutSettings, parent_defaults={"pre_processor": False})
class OddOneOut(AnomalibModule):
    """Odd-One-Out (Bhunia et al., CVPR 2025) for :class:`~anomalib_3d.data.datamodules.multiview_scenes.MultiViewScenes`.

    Every switch of the network (voxel grid, 2D encoder, 3D backbone, heads, attention) is a field of
    :class:`~anomalib_3d_plugins.odd_one_out.settings.OddOneOutSettings` (documented there, same name
    and default here: ``--model.feature_dim 16``). The arguments of the training:

    Args:
        render_size: ``(h, w)`` of the rendered supervision (paper: 32 x 32).
        num_samples: samples per ray (paper: 128).
        render_epochs: epochs of the first (rendering-only) stage.
        distillation: render β and match it to the teacher's features (ablation switch).
        teacher: distillation teacher, ``"dinov2_vits14"`` (the paper; weights from a local file or
            torch hub's cache, else :class:`~anomalib_3d.data.errors.MissingWeightsError`),
            ``"contrastive"`` (a small CNN trained self-supervised on the training renders by dense
            multi-view contrast before training starts, unless ``teacher_weights`` names a fitted one;
            needs depth: ``MultiViewScenes(load_depth=True)``), ``"canonical"`` (privileged upper
            bound: object-frame coordinates and normals from depth and object poses) or ``"random"``
            (a frozen, randomly initialised small CNN). See :mod:`.teachers`. ``teacher_weights`` as
            for the encoder; ``teacher_image_size``: DINOv2 input size (official code: 14 x render
            size); ``pca_fit_batches``: training batches used to fit DINOv2's PCA to ``projection_dim``;
            ``teacher_epochs``: passes over the training data that fit the contrastive teacher.
        feature_loss: distillation loss, ``"cosine"`` (the paper: cosine distance per pixel) or ``"mse"``.
        image_loss: ``"l2"`` (the paper's Eq. 3: squared error of RGB and silhouette) or ``"l1_bce"``
            (L1 on RGB, binary cross-entropy on the silhouette).
        feature_loss_region: ``"silhouette"`` (the distillation loss averages over the pixels of the
            objects only) or ``"image"`` (every pixel, as the official code).
        rgb_target: ``"masked"`` (the RGB target is the image times the silhouette, the official code:
            the rendered colour of empty space is black, consistent with its zero opacity) or
            ``"full"`` (the whole image, floor and sky included).
        scene_augmentation: move each training scene by the official code's random turn / mirror /
            shift / scale (rendering stage) or scale (classification stage), see :mod:`.augmentation`.
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
        gradient_clip_val: clip the gradient norm at this value (the CPU preset: 1, because it trains at
            100x the paper's rate, which can diverge late in training). 0 leaves Lightning's own
            ``--trainer.gradient_clip_val`` in charge.
        pre_processor: ``False`` (default): the scenes are used as loaded; or an anomalib pre-processor.
        **kwargs: anomalib's other components (``post_processor``, ``evaluator``, ``visualizer``),
            passed to ``AnomalibModule``. ``visualizer=True`` (default):
            :class:`~anomalib_3d.visualization.scenes.SceneVisualizer` writes one picture per test /
            predict scene; ``False`` for none; or any anomalib ``Visualizer``.
    """

    def init_from_settings(
        self,
        settings: OddOneOutSettings,
        render_size: Sequence[int] = (32, 32),
        num_samples: int = 64,
        render_epochs: int = 1,
        distillation: bool = True,
        teacher: str = "random",
        teacher_weights: str | None = "default",
        teacher_image_size: Sequence[int] | None = None,
        pca_fit_batches: int = 8,
        teacher_epochs: int = 4,
        feature_loss: str = "cosine",
        image_loss: str = "l2",
        feature_loss_region: str = "silhouette",
        rgb_target: str = "masked",
        scene_augmentation: bool = True,
        boxes: str = "ground_truth",
        proposal_method: str = "dbscan",
        proposal_threshold: float = 0.2,
        proposal_count: str = "estimate",
        render_loss_weight: float = 0.1,
        positive_weight: float = 0.7,
        learning_rate: float = 2e-4,
        lr_schedule: str = "constant",
        gradient_clip_val: float = 0.0,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = OddOneOutModel(settings)
        self.grid = self.model.grid
        check_choice("feature_loss", feature_loss, ("cosine", "mse"))
        self.feature_loss = feature_loss
        check_choice("image_loss", image_loss, ("l2", "l1_bce"))
        self.image_loss = image_loss
        check_choice("feature_loss_region", feature_loss_region, ("silhouette", "image"))
        check_choice("rgb_target", rgb_target, ("masked", "full"))
        self.feature_loss_region = feature_loss_region
        self.rgb_target = rgb_target
        self.scene_augmentation = bool(scene_augmentation)
        self.teacher = (build_teacher(teacher, settings.projection_dim, teacher_weights, image_size=teacher_image_size)
                        if distillation else None)
        self.pca_fit_batches = int(pca_fit_batches)
        self.teacher_epochs = int(teacher_epochs)
        self.teacher_history: list[float] = []
        check_choice("boxes", boxes, ("ground_truth", "proposals"))
        # Checked here, not at the first proposal: a typo must not surface only after training.
        check_choice("proposal_count", proposal_count, ("estimate", "ground_truth"))
        check_choice("proposal_method", proposal_method, ("dbscan", "spectral"))
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
        check_choice("lr_schedule", lr_schedule, ("constant", "cosine"))
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
        """Scene AUROC (max object score vs 'scene holds an odd object'), object AUROC pooled over all
        objects and per scene (mean over scenes with a normal and an odd object), the paper's object
        accuracy (IoU > 0.5 and the right label, mean over scenes) with the official code's pooled
        variant (max-IoU box, pooled over objects)."""
        scene = AUROC(fields=["pred_score", "gt_label"], prefix="image_")
        objects = AUROC(fields=["object_scores", "object_labels"], prefix="object_")
        per_scene = SceneObjectAUROC(fields=["object_scores", "object_labels"])
        accuracy = ObjectAccuracy(fields=["object_scores", "object_labels"], iou_threshold=0.5, threshold=0.5)
        pooled = ObjectAccuracy(fields=["object_scores", "object_labels"], threshold=0.5, pooled=True)
        return Evaluator(test_metrics=[scene, objects, per_scene, accuracy, pooled])

    @classmethod
    def configure_visualizer(cls) -> SceneVisualizer:
        """One PNG per test / predict scene: boxes coloured by object score above the ground truth."""
        return SceneVisualizer()

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """anomalib's component callbacks and the fault handling of every anomalib-3d model
        (:class:`~anomalib_3d.runtime.callback.FaultGuard`: SIGTERM, checkpoint errors, ``last.ckpt``)."""
        from anomalib_3d.runtime.callback import FaultGuard

        callbacks = super().configure_callbacks()
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [*callbacks, FaultGuard()]

    def on_train_start(self) -> None:
        """Fit what the teacher needs once, on the training data: DINOv2's fixed PCA (384 ->
        ``projection_dim``) on the first training views, or the contrastive teacher itself."""
        if self.teacher is None or not getattr(self.teacher, "needs_fit", False):
            return
        loader = self.trainer.train_dataloader
        if isinstance(self.teacher, ContrastiveTeacher):
            self.teacher_history = self.teacher.fit(loader, epochs=self.teacher_epochs, seed=torch.initial_seed() % 2**31)
            if self.trainer.world_size > 1:
                # Every rank fitted on its own shard: all keep rank 0's teacher.
                state = self.trainer.strategy.broadcast(self.teacher.state_dict(), src=0)
                self.teacher.load_state_dict(state)
            return
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

    def _downsample_masked(self, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(B, V, C, H, W)`` averaged over the ``weight > 0`` pixels of each render cell (0 where none)."""
        total = self._downsample(values * weight.unsqueeze(2))
        share = self._downsample(weight.unsqueeze(2).float())
        return total / share.clamp(min=1e-6)

    def teacher_targets(self, batch: SceneBatch, views: torch.Tensor) -> torch.Tensor:
        """The teacher's features of the supervising ``views``, ``(B, v, C, h, w)`` at the render size."""
        with torch.no_grad():
            if getattr(self.teacher, "uses_scene_geometry", False):
                targets = self.teacher.scene_targets(batch, views)
                objects = batch.object_index[:, views] >= 0
                return self._downsample_masked(targets, objects.float())
            images = batch.image[:, views]
            teacher = self.teacher(images.flatten(0, 1))
            teacher = F.interpolate(teacher, size=self.render_size, mode="bilinear", align_corners=False)
            return teacher.view(*images.shape[:2], *teacher.shape[1:])

    def render_losses(self, batch: SceneBatch, render: Any, views: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN401
        """Paper Eq. 3-4 in the supervising ``views``, term by term: ``rgb`` and ``silhouette`` (squared
        errors for ``image_loss="l2"``, lambda_sigma = 1) and ``feature`` (the distillation loss,
        lambda_f = 1) when there is a teacher.

        The RGB target is the image times the silhouette (``rgb_target="masked"``); the feature loss
        averages over the objects' pixels (``feature_loss_region="silhouette"``) or the whole image.
        """
        silhouette = None
        if batch.silhouette is not None:
            silhouette = self._downsample(batch.silhouette[:, views].unsqueeze(2).float())[:, :, 0]
        images = batch.image[:, views]
        if self.rgb_target == "masked":
            if batch.silhouette is None:
                msg = "rgb_target='masked' needs the silhouettes (load the scenes with masks) or rgb_target='full'."
                raise ValueError(msg)
            images = images * batch.silhouette[:, views].unsqueeze(2).to(images.dtype)
        l2 = self.image_loss == "l2"
        losses = {"rgb": (F.mse_loss if l2 else F.l1_loss)(render.features[:, :, :3], self._downsample(images))}
        if silhouette is not None:
            opacity = render.opacity if l2 else render.opacity.clamp(1e-5, 1 - 1e-5)
            losses["silhouette"] = (F.mse_loss if l2 else F.binary_cross_entropy)(opacity, silhouette)
        if self.teacher is not None:
            teacher = self.teacher_targets(batch, views)
            rendered = render.features[:, :, 3:]
            if self.feature_loss == "cosine":
                per_pixel = 1.0 - F.cosine_similarity(rendered, teacher, dim=2, eps=1e-6)
            else:
                per_pixel = (rendered - teacher).pow(2).mean(dim=2)
            if self.feature_loss_region == "silhouette":
                if silhouette is None:
                    msg = "feature_loss_region='silhouette' needs the silhouettes (load the scenes with masks)."
                    raise ValueError(msg)
                losses["feature"] = (per_pixel * silhouette).sum() / silhouette.sum().clamp(min=1e-6)
            else:
                losses["feature"] = per_pixel.mean()
        return losses

    def render_loss(self, batch: SceneBatch, render: Any, views: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        """The sum of :meth:`render_losses`."""
        return sum(self.render_losses(batch, render, views).values())

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
        world_to_camera, boxes = batch.world_to_camera, batch.boxes
        if self.scene_augmentation:
            world_to_camera, boxes = augment_scene(world_to_camera, boxes, batch.object_batch, self.grid,
                                                   rendering_stage=self.current_epoch < self.render_epochs,
                                                   object_poses=batch.object_poses, object_sizes=batch.object_sizes)
        out = self.model(
            batch.image[:, source], batch.intrinsics[:, source], world_to_camera[:, source],
            boxes, batch.object_batch,
            self._render_cameras(batch.intrinsics[:, supervise], image_hw), world_to_camera[:, supervise],
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
