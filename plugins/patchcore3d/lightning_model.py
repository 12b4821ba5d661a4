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

from typing import Any

from anomalib.models.components import AnomalibModule, MemoryBankMixin

from anomalib_3d.models import FeatureBankModule, PointCloudModelMixin
from anomalib_3d.settings import switches_from

from .settings import PatchCore3DSettings
from .torch_model import PatchCore3DModel


@switches_from(PatchCore3DSettings)
class PatchCore3D(PointCloudModelMixin, FeatureBankModule, MemoryBankMixin, AnomalibModule):
    """PatchCore on point-patch features (Point-MAE encoder, FPFH, raw centres).

    Every switch is a field of :class:`~anomalib_3d_plugins.patchcore3d.settings.PatchCore3DSettings`
    (documented there, same name and default here: ``--model.feature_sources '[fpfh, raw]'``).

    Args:
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    def init_from_settings(
        self,
        settings: PatchCore3DSettings,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = PatchCore3DModel(settings)
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
