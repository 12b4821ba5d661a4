"""PointAD: zero-shot 3D (and multimodal) anomaly detection with CLIP (anomalib Lightning module).

Paper: Qihang Zhou, Jiangtao Yan, Shibo He, Wenchao Meng, Jiming Chen. "PointAD: Comprehending 3D
Anomalies from Points and Pixels for Zero-shot 3D Anomaly Detection", NeurIPS 2024.

Zero-shot means the model never sees the target objects: it learns its prompts on an *auxiliary*
annotated set (another MVTec 3D-AD category's test split, another dataset, or by default the
built-in synthetic parts with defects) and is then evaluated on the target. The data layer
(:mod:`anomalib_3d.data.zero_shot`) picks and checks that set; the module states it as its own
``train_dataloader``, and in anomalib's flow (``anomalib train --model PointAD --data MVTec3D
--data.category bagel``) the data layer's :class:`~anomalib_3d.data.zero_shot.ModelTrainData`
callback makes the fit read it instead of the target's train split, which is never read. The
module then tests on the target as usual.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib.data import MVTec3D
    >>> from anomalib_3d_plugins.pointad import PointAD
    >>> model = PointAD(auxiliary={"dataset": "mvtec3d", "root": "datasets/MVTec3D", "categories": ["carrot"]})
    >>> Engine().train(model, datamodule=MVTec3D(category="bagel"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.models.components import AnomalibModule
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor
from torch.utils.data import DataLoader

from anomalib_3d.data.dataclasses import PointCloudBatch
from anomalib_3d.data.zero_shot import (
    ModelTrainData,
    auxiliary_loader,
    auxiliary_sources,
    foreground_mask,
    source_dicts,
    target_categories,
)
from anomalib_3d.errors import GroundTruthMismatchError
from anomalib_3d.models import PointCloudModelMixin, PointScores
from anomalib_3d.settings import switches_from
from anomalib_3d_plugins.pointad.loss import HybridLoss
from anomalib_3d_plugins.pointad.scoring import PointADPrediction, segment_max
from anomalib_3d_plugins.pointad.settings import PointADSettings
from anomalib_3d_plugins.pointad.torch_model import PointADModel


def _clean_depth_maps(depth: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, 3, H, W)`` organized xyz maps with the support plane and every fragment outside the
    largest DBSCAN cluster zeroed (:func:`~anomalib_3d.data.background.clean_organized_scan`), and
    ``(B, H, W)`` bool the pixels removed (valid before, zero now). A map where (almost) nothing
    would be left is kept whole."""
    from anomalib_3d.data.adapters import channels_last, valid_pixel_mask
    from anomalib_3d.data.background import clean_organized_scan

    cleaned, removed = [], []
    for xyz in depth:
        grid = channels_last(xyz).float()
        valid = valid_pixel_mask(grid)
        keep = torch.from_numpy(clean_organized_scan(grid.cpu().numpy(), largest_cluster=True)).to(grid.device)
        if int(keep.sum()) < _MIN_OBJECT_PIXELS:
            keep = valid
        cleaned.append(torch.where(keep.unsqueeze(-1), grid, torch.zeros_like(grid)).permute(2, 0, 1))
        removed.append(valid & ~keep)
    return torch.stack(cleaned).to(depth.dtype), torch.stack(removed)


#: Fewer object pixels than this after cleaning: the scan is kept whole (cleaning failed).
_MIN_OBJECT_PIXELS = 16


def _on_one_device(points: PointCloudBatch) -> PointCloudBatch:
    """Collating builds ``batch_index`` on the CPU; keep it with the (possibly CUDA) points."""
    device = points.points.device
    if points.batch_index.device != device:
        points.batch_index = points.batch_index.to(device)
    if points.grid_index is not None and points.grid_index.device != device:
        points.grid_index = points.grid_index.to(device)
    return points


# Plain dicts before the hyper-parameters are saved: checkpoints stay weights_only-safe.
@switches_from(PointADSettings, prepare={"auxiliary": source_dicts})
class PointAD(PointCloudModelMixin, AnomalibModule):
    """PointAD with anomalib's components (3D metrics and visualizer from ``anomalib_3d``).

    Every switch of the model (backbone, prompts, views and drawing, loss, smoothing, RGB fusion,
    feature cache) is a field of :class:`~anomalib_3d_plugins.pointad.settings.PointADSettings`
    (documented there, same name and default here: ``--model.num_views 3``). The arguments of the
    fit and of reading the data:

    Args:
        class_name: class name for object-aware prompts when batches carry no category.
        keep_largest_cluster: organized scans keep only their largest DBSCAN cluster after the
            support plane is removed (eps 6 mm, 30 points, at the native resolution), as the authors
            clean MVTec 3D-AD; applies to anomalib ``MVTec3D`` batches and the auxiliary set.
            ``None`` = on with the official style.
        learning_rate: Adam learning rate (1e-3).
        max_epochs: epochs on the auxiliary set (15); forwarded to the trainer.
        use_rgb: fuse the RGB image of organized clouds (multimodal, plug-and-play).
        organized_grid_size: organized inputs from anomalib's ``MVTec3D`` are resized (nearest) to
            this grid first, as the paper resizes clouds to 336 x 336 (``None`` keeps them).
        remove_background: drop the support plane of anomalib ``MVTec3D`` inputs before rendering
            (the paper removes it like BTF); plane points get the cloud's lowest score.
        auxiliary: the fitting data: a ``DataSource``-like dict (``dataset``, ``root``, ``categories``,
            ``split``, ``exclude``, ``options``) or a list of them. ``None`` = the ``fit_sources`` of a
            ``ZeroShot3D`` target, else good + defective samples (test split) of the built-in
            ``Synthetic3D`` generator.
        auxiliary_batch_size: batch size of the auxiliary loader (4).
        auxiliary_num_workers: workers of the auxiliary loader.
        auxiliary_grid_size: organized auxiliary sources are resized to this grid (336).
        seed: seed of the auxiliary loader's shuffling.
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    def init_from_settings(
        self,
        settings: PointADSettings,
        class_name: str | None = None,
        keep_largest_cluster: bool | None = None,
        learning_rate: float = 1e-3,
        max_epochs: int = 15,
        use_rgb: bool = True,
        organized_grid_size: int | None = 336,
        remove_background: bool = True,
        auxiliary: list[dict[str, Any]] | dict[str, Any] | None = None,
        auxiliary_batch_size: int = 4,
        auxiliary_num_workers: int = 0,
        auxiliary_grid_size: int | None = 336,
        seed: int = 0,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = PointADModel.from_settings(settings)
        render = self.model.render_settings
        self.keep_largest_cluster = render.official if keep_largest_cluster is None else bool(keep_largest_cluster)
        self.class_name = class_name
        self.learning_rate = learning_rate
        self.max_epochs = int(max_epochs)
        self.use_rgb = use_rgb
        self.organized_grid_size = organized_grid_size
        self.remove_background = remove_background
        self.auxiliary = auxiliary
        self.auxiliary_batch_size = auxiliary_batch_size
        self.auxiliary_num_workers = auxiliary_num_workers
        self.auxiliary_grid_size = auxiliary_grid_size
        self.seed = seed
        # Random weights cannot be rebuilt from the hyper-parameters, so they go into checkpoints.
        self.save_backbone = settings.pretrained is None

    # ------------------------------------------------------------------------------------------
    # anomalib contract
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Epochs on the auxiliary set. Validation (thresholds on the target) runs once after the
        last epoch by default (:class:`~anomalib_3d.models.ValidateAfterLastEpoch`), and an explicit
        ``--trainer.check_val_every_n_epoch`` is honoured."""
        return {
            "max_epochs": self.max_epochs,
            "num_sanity_val_steps": 0,
            "gradient_clip_val": 0,
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the prompt parameters only (betas of the authors' release)."""
        return torch.optim.Adam(self.model.prompt_learner.parameters(), lr=self.learning_rate, betas=(0.5, 0.999))

    # ------------------------------------------------------------------------------------------
    # fitting data: the auxiliary set (anomalib_3d.data.zero_shot)
    def _target_datamodule(self) -> Any:  # noqa: ANN401
        """The datamodule of the trainer this module is attached to (``None`` when there is none)."""
        try:
            return self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return None

    def _target_categories(self) -> list[str]:
        return target_categories(self._target_datamodule())

    def auxiliary_sources(self) -> list[dict[str, Any]]:
        """The auxiliary sources (see :func:`anomalib_3d.data.zero_shot.auxiliary_sources`): the
        ``auxiliary`` argument, else a ``ZeroShot3D`` target's ``fit_sources``, else synthetic parts."""
        return auxiliary_sources(self.auxiliary, self._target_datamodule())

    def train_dataloader(self) -> DataLoader:
        """The fitting data: the shuffled auxiliary loader, checked against the target's samples.

        A fit through a datamodule reads it through :class:`~anomalib_3d.data.zero_shot.ModelTrainData`;
        loaders passed straight to ``fit`` replace it (Lightning's rule).
        """
        return auxiliary_loader(
            self.auxiliary_sources(),
            datamodule=self._target_datamodule(),
            batch_size=self.auxiliary_batch_size,
            num_workers=self.auxiliary_num_workers,
            grid_size=self.auxiliary_grid_size,
            seed=self.seed,
            keep_largest_cluster=self.keep_largest_cluster,
        )

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """The mixin's callbacks and :class:`~anomalib_3d.data.zero_shot.ModelTrainData` (fit on the auxiliary set)."""
        callbacks = super().configure_callbacks()
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [*callbacks, ModelTrainData()]

    # ------------------------------------------------------------------------------------------
    # steps
    def training_step(self, batch: PointCloudBatch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Hybrid loss on a batch of auxiliary clouds."""
        del args, kwargs
        points = _on_one_device(self.as_point_batch(batch))
        if points.gt_mask is None or points.gt_label is None:
            raise GroundTruthMismatchError(
                "auxiliary samples need object labels and per-point labels (gt_mask).",
                fix="use annotated auxiliary data: a test split with ground truth",
            )
        losses = self.model.compute_loss(
            points.points,
            points.batch_index,
            points.gt_label,
            points.gt_mask,
            num_clouds=points.batch_size,
            normals=points.normals,
            colors=points.colors,
            class_names=self._class_names(points),
            paths=points.point_path,
            grid_index=points.grid_index,
            grid_shape=points.grid_shape if points.grid_index is not None else None,
            categories=self._categories(points),
        )
        size = points.batch_size
        self.log("train_loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name in HybridLoss.TERMS:
            if name in losses:
                self.log(f"train_{name}", losses[name], on_step=False, on_epoch=True, batch_size=size)
        return losses["loss"]

    # ------------------------------------------------------------------------------------------
    # inference helpers
    def _class_names(self, points: PointCloudBatch) -> list[str] | None:
        if self.model.prompt_learner.object_agnostic:
            return None
        if points.category is not None:
            return list(points.category)
        name = self.class_name
        if name is None:
            categories = self._target_categories()
            name = categories[0] if len(categories) == 1 else "object"
        return [name] * points.batch_size

    def _categories(self, points: PointCloudBatch) -> list[str | None]:
        """The category of every cloud (the official style sizes points by it): the batch's, else
        the target's when it has one, else unknown."""
        if points.category is not None:
            return list(points.category)
        categories = self._target_categories()
        return [categories[0] if len(categories) == 1 else None] * points.batch_size

    def to_point_batch(self, batch: Any) -> tuple[PointCloudBatch, Tensor | None]:  # noqa: ANN401
        """The batch as points, and the foreground mask of raw organized (``DepthBatch``) inputs.

        ``DepthBatch`` grids are nearest-resized to ``organized_grid_size`` first and, with
        ``remove_background``, their support plane is found (BTF's RANSAC on the border) so only
        the object is rendered. With ``keep_largest_cluster`` the plane and every fragment outside
        the largest DBSCAN cluster are removed at the native resolution *before* the resize (the
        authors' order); the mask is then ``None``.
        """
        points, foreground, _ = self._points_of(batch)
        return points, foreground

    def _points_of(self, batch: Any) -> tuple[PointCloudBatch, Tensor | None, Tensor | None]:  # noqa: ANN401
        """:meth:`to_point_batch` and ``(B, H, W)`` the pixels its cleaning removed at the native
        resolution (``None`` without the largest-cluster cleaning), for the RGB blackout."""
        if isinstance(batch, PointCloudBatch) or getattr(batch, "depth_map", None) is None:
            return _on_one_device(self.as_point_batch(batch)), None, None
        from types import SimpleNamespace

        from anomalib_3d.data.adapters import (
            channels_last,
            depth_batch_to_point_batch,
            resize_organized,
        )

        depth = torch.as_tensor(batch.depth_map).as_subclass(torch.Tensor)
        cleaned = self.remove_background and self.keep_largest_cluster
        removed = None
        if cleaned:
            depth, removed = _clean_depth_maps(depth)
        size = self.organized_grid_size
        if size is not None and tuple(depth.shape[-2:]) != (size, size):
            depth = torch.stack([resize_organized(channels_last(d), (size, size)).permute(2, 0, 1) for d in depth])
        view = SimpleNamespace(
            depth_map=depth,
            image=getattr(batch, "image", None),
            gt_mask=getattr(batch, "gt_mask", None),
            gt_label=getattr(batch, "gt_label", None),
            depth_path=getattr(batch, "depth_path", None),
            image_path=getattr(batch, "image_path", None),
        )
        points = _on_one_device(depth_batch_to_point_batch(view))
        if not self.remove_background or cleaned:
            return points, None, removed
        return points, foreground_mask(points), None

    def predict_batch(self, batch: Any, *, return_views: bool = False) -> tuple[Any, PointADPrediction]:  # noqa: ANN401
        """Run PointAD on a ``PointCloudBatch`` or ``DepthBatch`` and write anomalib's outputs.

        Returns:
            ``(batch with anomaly_map / pred_score, the raw PointADPrediction on the rendered points)``.
        """
        points, anomaly_map, prediction = self._score(batch, return_views=return_views)
        return self.write_predictions(batch, points, anomaly_map, prediction.pred_score), prediction

    def predict_points(self, batch: Any) -> PointScores:  # noqa: ANN401
        """Per-point and object scores of a batch (every input point scored)."""
        points, anomaly_map, prediction = self._score(batch)
        return PointScores(points, anomaly_map, prediction.pred_score)

    def _score(self, batch: Any, *, return_views: bool = False) -> tuple[PointCloudBatch, Tensor, PointADPrediction]:  # noqa: ANN401
        """``(points, per-point scores of every input point, raw prediction on the rendered points)``."""
        points, foreground, removed = self._points_of(batch)
        cloud_points, cloud_batch = points.points, points.batch_index
        normals, colors, grid_index = points.normals, points.colors, points.grid_index
        if foreground is not None:
            cloud_points, cloud_batch = cloud_points[foreground], cloud_batch[foreground]
            normals = None if normals is None else normals[foreground]
            colors = None if colors is None else colors[foreground]
            grid_index = None if grid_index is None else grid_index[foreground]
        organized = grid_index is not None and points.grid_shape is not None
        use_rgb = self.use_rgb and points.image is not None and organized
        prediction = self.model.predict(
            cloud_points,
            cloud_batch,
            points.batch_size,
            normals=normals,
            colors=colors,
            class_names=self._class_names(points),
            rgb=points.image.as_subclass(torch.Tensor).to(cloud_points.device) if use_rgb else None,
            grid_index=grid_index if organized else None,
            grid_shape=points.grid_shape if organized else None,
            return_views=return_views,
            categories=self._categories(points),
            rgb_background=removed if use_rgb else None,
        )
        anomaly_map = prediction.anomaly_map
        if foreground is not None:
            lowest = -segment_max(-anomaly_map, cloud_batch, points.batch_size)
            full = lowest[points.batch_index].clone()
            full[foreground] = anomaly_map
            anomaly_map = full
        return points, anomaly_map, prediction

    # ------------------------------------------------------------------------------------------
    # checkpoints: the frozen backbone is rebuilt from its name + weights, not stored
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen CLIP weights (hundreds of MB) unless they are random."""
        super().on_save_checkpoint(checkpoint)
        if not self.save_backbone:
            state = checkpoint.get("state_dict", {})
            for key in [k for k in state if k.startswith("model.backbone.")]:
                del state[key]

    def load_state_dict(  # noqa: D417
        self,
        state_dict: dict[str, Tensor],
        strict: bool = True,
        assign: bool = False,
    ) -> Any:  # noqa: ANN401
        """Accept checkpoints without the backbone (filled from the freshly loaded one)."""
        if not any(k.startswith("model.backbone.") for k in state_dict):
            state_dict = dict(state_dict)
            for key, value in super().state_dict().items():
                if key.startswith("model.backbone."):
                    state_dict[key] = value
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.model.clear_text_cache()
        return result


__all__ = ["PointAD"]
