"""Reg3DAD as an anomalib model (Lightning module).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d.data.datamodules.real3d_ad import Real3DAD
    >>> from anomalib_3d_plugins.reg3dad import Reg3DAD
    >>> model = Reg3DAD()                              # registration + nearest template point
    >>> model = Reg3DAD(dual_memory_bank=True)         # Reg3D-AD's coordinate + feature banks
    >>> engine = Engine()
    >>> engine.fit(model, datamodule=Real3DAD(root="datasets/Real3D-AD", category="duck"))
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin

from .torch_model import Reg3DADModel


class Reg3DAD(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Registration to training templates + point distance (Real3D-AD's Reg3D-AD baseline).

    Args:
        registration ... seed: see :class:`~anomalib_3d_plugins.reg3dad.torch_model.Reg3DADModel`.
        pre_processor, post_processor, evaluator, visualizer: as in anomalib.
    """

    def __init__(
        self,
        registration: str = "global+icp",
        num_templates: int | None = 4,
        template_points: int | None = 4096,
        registration_points: int | None = 2048,
        max_iterations: int = 50,
        normalization: str = "rms",
        dual_memory_bank: bool = False,
        feature_radius: float = 0.08,
        feature_points: int | None = 4096,
        coreset_ratio: float = 0.25,
        point_weight: float = 1.0,
        feature_weight: float = 1.0,
        object_score: str = "max",
        object_topk: float = 0.01,
        smoothing_k: int = 0,
        smoothing_sigma: float = 0.02,
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
        self.model = Reg3DADModel(
            registration=registration,
            num_templates=num_templates,
            template_points=template_points,
            registration_points=registration_points,
            max_iterations=max_iterations,
            normalization=normalization,
            dual_memory_bank=dual_memory_bank,
            feature_radius=feature_radius,
            feature_points=feature_points,
            coreset_ratio=coreset_ratio,
            point_weight=point_weight,
            feature_weight=feature_weight,
            object_score=object_score,
            object_topk=object_topk,
            smoothing_k=smoothing_k,
            smoothing_sigma=smoothing_sigma,
            seed=seed,
        )
        self._init_bank_state()


__all__ = ["Reg3DAD"]
