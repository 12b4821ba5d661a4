"""BTF as an anomalib model (Lightning module).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    >>> from anomalib_3d_plugins.btf import BTF
    >>> model = BTF(feature_mode="fpfh")
    >>> engine = Engine()                        # max_epochs=1 comes from the model
    >>> engine.fit(model, datamodule=Synthetic3D())
    >>> engine.test(model, datamodule=Synthetic3D())

One epoch over the normal training clouds fills the memory bank (greedy coreset at the end of the
epoch); the bank is a buffer, so every checkpoint carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin

from .torch_model import BTFModel


class BTF(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Back to the Feature (Horwitz & Hoshen, CVPR-W 2023): classical 3D features + PatchCore.

    Args:
        feature_mode: ``"raw"``, ``"fpfh"`` (default) or ``"rgb_fpfh"``.
        use_grid ... seed: see :class:`~anomalib_3d_plugins.btf.torch_model.BTFModel`.
        pre_processor, post_processor, evaluator, visualizer: as in anomalib.
    """

    def __init__(
        self,
        feature_mode: str = "fpfh",
        use_grid: bool = True,
        grid_size: int | None = 224,
        patch_grid: int = 28,
        pool_kernel: int = 3,
        pool_k: int = 8,
        max_points: int | None = 16384,
        normalization: str = "bbox",
        fpfh_radius: float = 0.08,
        fpfh_max_nn: int = 100,
        normal_k: int = 30,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        num_neighbors: int = 3,
        smoothing: bool = True,
        smoothing_sigma: float | None = None,
        smoothing_k: int = 16,
        pretrained_backbone: bool = True,
        backbone_weights: str | None = None,
        seed: int = 0,
        pre_processor: torch.nn.Module | bool = True,
        post_processor: torch.nn.Module | bool = True,
        evaluator: Any = True,  # noqa: ANN401 - anomalib's Evaluator | bool
        visualizer: Any = True,  # noqa: ANN401 - anomalib's Visualizer | bool
    ) -> None:
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = BTFModel(
            feature_mode=feature_mode,
            use_grid=use_grid,
            grid_size=grid_size,
            patch_grid=patch_grid,
            pool_kernel=pool_kernel,
            pool_k=pool_k,
            max_points=max_points,
            normalization=normalization,
            fpfh_radius=fpfh_radius,
            fpfh_max_nn=fpfh_max_nn,
            normal_k=normal_k,
            coreset_ratio=coreset_ratio,
            projection_dim=projection_dim,
            num_neighbors=num_neighbors,
            smoothing=smoothing,
            smoothing_sigma=smoothing_sigma,
            smoothing_k=smoothing_k,
            pretrained_backbone=pretrained_backbone,
            backbone_weights=Path(backbone_weights) if backbone_weights else None,
            seed=seed,
        )
        self._init_bank_state()


__all__ = ["BTF"]
