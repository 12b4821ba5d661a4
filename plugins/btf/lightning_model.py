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

from typing import Any

from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin
from anomalib_3d.settings import document_switches, settings_from

from .settings import BTFSettings
from .torch_model import BTFModel


@document_switches(BTFSettings)
class BTF(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """Back to the Feature (Horwitz & Hoshen, CVPR-W 2023): classical 3D features + PatchCore.

    Every switch is a field of :class:`~anomalib_3d_plugins.btf.settings.BTFSettings` (documented
    there, same name and default here: ``--model.feature_mode raw``).

    Args:
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    settings_class = BTFSettings  # the switches of the torch model, one field each

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
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(**kwargs)
        self.model = BTFModel(settings_from(BTFSettings, locals()))
        self._init_bank_state()


__all__ = ["BTF"]
