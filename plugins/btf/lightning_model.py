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

from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin
from anomalib_3d.settings import switches_from

from .settings import BTFSettings
from .torch_model import BTFModel


@switches_from(BTFSettings)
class BTF(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Back to the Feature (Horwitz & Hoshen, CVPR-W 2023): classical 3D features + PatchCore.

    Every switch is a field of :class:`~anomalib_3d_plugins.btf.settings.BTFSettings` (documented
    there, same name and default here: ``--model.feature_mode raw``).

    Args:
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    def init_from_settings(
        self,
        settings: BTFSettings,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = BTFModel(settings)
        self._init_bank_state()


__all__ = ["BTF"]
