"""Every switch of Reg3DAD's templates, registration and scoring, once.

:class:`~anomalib_3d_plugins.reg3dad.lightning_model.Reg3DAD` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds a :class:`Reg3DADSettings` from them; the torch model reads
``self.settings``. See ``README.md`` for the Real3D-AD baseline these reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomalib_3d.settings import ModelSettings, check_choice

REGISTRATION_METHODS = ("global+icp", "icp", "none")
OBJECT_SCORES = ("max", "topk")
NORMALIZATIONS = ("rms", "bbox", "none")


@dataclass(frozen=True)
class Reg3DADSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.reg3dad.torch_model.Reg3DADModel`."""

    #: ``"global+icp"`` (FPFH-RANSAC then ICP; any pose), ``"icp"`` (from the centroid shift;
    #: poses within ~30°), ``"none"`` (clouds already aligned).
    registration: str = "global+icp"
    #: training clouds kept as templates (the first ones, over all ranks); None keeps all.
    #: Registration time grows linearly with it.
    num_templates: int | None = 4
    #: each template is FPS-subsampled to this many points (None: whole).
    template_points: int | None = 4096
    #: the test cloud is FPS-subsampled to this many points for registration (the transform is
    #: then applied to every point).
    registration_points: int | None = 2048
    #: ICP iterations.
    max_iterations: int = 50
    #: ``"rms"`` (every cloud on its centroid, RMS radius 1/2; scores in those units;
    #: pose-invariant, unlike ``"bbox"``) or ``"none"`` (original units).
    normalization: str = "rms"
    #: Reg3D-AD's coordinate + feature banks instead of the plain distance to the best template.
    dual_memory_bank: bool = False
    #: FPFH radius as a fraction of the reference template's bounding-box diagonal.
    feature_radius: float = 0.08
    #: dual bank: a test cloud larger than this gets its descriptors on an FPS subsample of this
    #: size, the feature distances carried back to every point (inverse distance, 3 nearest); None
    #: describes every point (cost grows with the cloud).
    feature_points: int | None = 4096
    #: coreset of both dual banks.
    coreset_ratio: float = 0.25
    #: weights of the two normalised dual scores.
    point_weight: float = 1.0
    feature_weight: float = 1.0
    #: ``"max"`` point score or ``"topk"`` mean of the top ``object_topk`` fraction.
    object_score: str = "max"
    object_topk: float = 0.01
    #: Gaussian smoothing of point scores (``smoothing_k`` neighbours, 0 = off; sigma as a fraction
    #: of the reference template's bounding-box diagonal).
    smoothing_k: int = 0
    smoothing_sigma: float = 0.02
    #: RANSAC and coreset seed.
    seed: int = 0

    def validate(self) -> None:
        """Refuse values the model cannot run with, naming the switch."""
        check_choice("registration", self.registration, REGISTRATION_METHODS)
        check_choice("object_score", self.object_score, OBJECT_SCORES)
        if self.normalization not in NORMALIZATIONS:
            msg = f"normalization must be 'rms', 'bbox' or 'none', got {self.normalization!r}."
            raise ValueError(msg)


__all__ = ["NORMALIZATIONS", "OBJECT_SCORES", "REGISTRATION_METHODS", "Reg3DADSettings"]
