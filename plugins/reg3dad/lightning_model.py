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

from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin
from anomalib_3d.settings import switches_from

from .settings import Reg3DADSettings
from .torch_model import Reg3DADModel


@switches_from(Reg3DADSettings)
class Reg3DAD(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Registration to training templates + point distance (Real3D-AD's Reg3D-AD baseline).

    Every switch is a field of :class:`~anomalib_3d_plugins.reg3dad.settings.Reg3DADSettings`
    (documented there, same name and default here: ``--model.registration icp``).

    Args:
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    def init_from_settings(
        self,
        settings: Reg3DADSettings,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = Reg3DADModel(settings)
        self._init_bank_state()


__all__ = ["Reg3DAD"]
