"""PatchCore3D as an anomalib model (Lightning module).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    >>> from anomalib_3d_plugins.patchcore3d import PatchCore3D
    >>> model = PatchCore3D(feature_sources=["point_mae"])     # or ["fpfh", "raw"]
    >>> engine = Engine()
    >>> engine.fit(model, datamodule=Synthetic3D())
    >>> engine.test(model, datamodule=Synthetic3D())
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin

from .torch_model import PatchCore3DModel


class PatchCore3D(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """PatchCore on point-patch features (Point-MAE encoder, FPFH, raw centres).

    Args:
        feature_sources ... seed: see :class:`~anomalib_3d_plugins.patchcore3d.torch_model.PatchCore3DModel`.
        pre_processor, post_processor, evaluator, visualizer: as in anomalib.
    """

    def __init__(
        self,
        feature_sources: Sequence[str] = ("point_mae",),
        num_points: int = 2048,
        num_groups: int = 128,
        group_size: int = 32,
        embed_dim: int = 128,
        tokenizer_width: int = 128,
        encoder_depth: int = 4,
        num_heads: int = 4,
        feature_layers: Sequence[int] = (2, 4),
        pretrained_path: str | None = None,
        fpfh_radius: float = 0.15,
        fpfh_max_nn: int = 100,
        balance_sources: bool = True,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        num_neighbors: int = 3,
        interpolation_k: int = 3,
        smoothing_k: int = 0,
        smoothing_sigma: float = 0.03,
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
        self.model = PatchCore3DModel(
            feature_sources=feature_sources,
            num_points=num_points,
            num_groups=num_groups,
            group_size=group_size,
            embed_dim=embed_dim,
            tokenizer_width=tokenizer_width,
            encoder_depth=encoder_depth,
            num_heads=num_heads,
            feature_layers=feature_layers,
            pretrained_path=pretrained_path,
            fpfh_radius=fpfh_radius,
            fpfh_max_nn=fpfh_max_nn,
            balance_sources=balance_sources,
            coreset_ratio=coreset_ratio,
            projection_dim=projection_dim,
            num_neighbors=num_neighbors,
            interpolation_k=interpolation_k,
            smoothing_k=smoothing_k,
            smoothing_sigma=smoothing_sigma,
            seed=seed,
        )
        self._init_bank_state()

    @classmethod
    def point_mae(cls, pretrained_path: str | None = None, **overrides: Any) -> PatchCore3D:  # noqa: ANN401
        """Real3D-AD's "PatchCore + PointMAE" sizes: width 384, 12 blocks, 6 heads, layers 3/7/11,
        1024 patches of 128 points on 8192 points... reduced here to 512 x 32 on 8192 points for CPUs."""
        sizes = {
            "num_points": 8192,
            "num_groups": 512,
            "group_size": 32,
            "embed_dim": 384,
            "tokenizer_width": 256,
            "encoder_depth": 12,
            "num_heads": 6,
            "feature_layers": (3, 7, 11),
        }
        return cls(**{**sizes, "pretrained_path": pretrained_path, **overrides})


__all__ = ["PatchCore3D"]
