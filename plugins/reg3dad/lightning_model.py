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

from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin
from anomalib_3d.settings import document_switches, settings_from

from .settings import Reg3DADSettings
from .torch_model import Reg3DADModel


@document_switches(Reg3DADSettings)
class Reg3DAD(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Registration to training templates + point distance (Real3D-AD's Reg3D-AD baseline).

    Every switch is a field of :class:`~anomalib_3d_plugins.reg3dad.settings.Reg3DADSettings`
    (documented there, same name and default here: ``--model.registration icp``).

    Args:
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    settings_class = Reg3DADSettings  # the switches of the torch model, one field each

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
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(**kwargs)
        self.model = Reg3DADModel(settings_from(Reg3DADSettings, locals()))
        self._init_bank_state()


__all__ = ["Reg3DAD"]
