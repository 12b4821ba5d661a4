"""Every switch of the 3DzAL network, pseudo-anomalies, losses, memory bank and scoring, once.

:class:`~anomalib_3d_plugins.threedzal.lightning_model.ThreeDzAL` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds a :class:`ThreeDzALSettings` from them; the torch
model reads ``self.settings``. Defaults are the paper's where it gives a number (see ``README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from anomalib_3d.settings import ModelSettings, check_choice

from .grid_defects import KINDS

PSEUDO_ANOMALIES = ("grid", "paper")


@dataclass(frozen=True)
class ThreeDzALSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.threedzal.torch_model.ThreeDzALModel`."""

    # -- organized input and patches
    #: organized grids are nearest-resized to ``grid_size``² (224).
    grid_size: int = 224
    #: pixels per patch side (8 → 28 x 28 patches); divides ``grid_size``.
    patch_size: int = 8
    # -- feature branches
    #: ``"wide_resnet50_2"`` (needs local weights, else ``MissingWeightsError``) or ``None`` (xyz only).
    rgb_backbone: str | None = None
    #: local WideResNet-50-2 state dict (``None``: torchvision's cache).
    rgb_weights: str | None = None
    #: FPFH branch.
    use_fpfh: bool = True
    #: FPFH feature radius in the scan's units (BTF: 0.25).
    fpfh_radius: float = 0.25
    #: neighbours of the normals FPFH is computed from (the ops' way).
    fpfh_normal_k: int = 30
    #: at most this many FPFH neighbours.
    fpfh_max_nn: int = 100
    #: f_theta: a PointNet++ per patch, ``feature_dim`` wide.
    learned_branch: bool = True
    feature_dim: int = 32
    #: PointNet++ size (f_theta and g_phi): centroids, points per group, the two layer widths.
    pointnet_centroids: int = 16
    pointnet_group_size: int = 8
    pointnet_widths: tuple[int, int] = (32, 64)
    #: the normalcy classifier g_phi (a second PointNet++, 2-way).
    classifier: bool = True
    # -- points of interest on task-irrelevant samples
    #: ``"cnn"`` (random-CNN points of interest, the paper) or ``"random"`` (random anchors: "generator off").
    interest_source: str = "cnn"
    #: generator CNN: ``resnet50`` (paper), ``resnet18`` or ``small``.
    generator_backbone: str = "resnet50"
    #: ``False`` (He init: the paper), ``True`` (torchvision cache) or a weights path.
    generator_pretrained: bool | str = False
    #: share of a sample's points that are points of interest (paper 0.1 %).
    top_fraction: float = 0.001
    #: points of an interest region (the seeds' surroundings).
    region_size: int = 32
    # -- pseudo-anomalies
    #: share of adding-point pseudo-anomalies (the rest remove points).
    adding_ratio: float = 0.5
    #: pseudo-anomalous patches per normal patch.
    negative_ratio: float = 1.0
    #: range of the share of a patch's points removed.
    drop_fraction: tuple[float, float] = (0.3, 0.7)
    #: added region's size relative to the patch.
    adding_scale: float = 1.0
    #: ``"hole"`` (contiguous: the points nearest a random patch point) or ``"random"``.
    removal: str = "hole"
    #: ``"cell"`` (the anchor's grid cell ∪ added points) or ``"knn"`` (the paper's kNN patch).
    negative_patch: str = "cell"
    #: ``"grid"`` (pseudo-defects made on the whole organized grid, then cut into cells: one
    #: surface per pixel) or ``"paper"`` (the paper's per-cell adding / removing).
    pseudo_anomalies: str = "grid"
    #: grid kinds used (``attach``, ``bulge``, ``dent``, ``hole``).
    pseudo_kinds: tuple[str, ...] = KINDS
    #: range of a grid defect's diameter in cells.
    defect_cells: tuple[float, float] = (0.5, 2.0)
    #: range of a bump's / attachment's height as a fraction of its radius.
    defect_height: tuple[float, float] = (0.1, 0.4)
    #: pixels of a cell a grid defect must touch for the cell to be pseudo-anomalous.
    min_affected: int = 8
    #: positives drawn with exactly the negatives' point-count distribution.
    count_matched: bool = True
    #: normal patches drawn per training cloud and step.
    positives_per_sample: int = 64
    #: cells with fewer points are never anchors / positives.
    min_patch_points: int = 4
    #: random rotations about the view axis of every training patch.
    rotation_augment: bool = True
    #: extension, 0 (paper) = off: per step, this many task-irrelevant scans also give normal
    #: (positive) patches and pseudo-anomalies.
    irrelevant_positives: int = 0
    #: adding-point pseudo-anomalous cells keep only the camera-visible points (one per pixel ray,
    #: as an organized scan would), not two layers.
    depth_consistent: bool = False
    # -- losses
    #: Eq. 1, contrastive loss of f_theta (normal patch vs its pseudo-anomaly), weight ``lambda_contrastive``.
    contrastive_loss: bool = True
    lambda_contrastive: float = 1.0
    #: Eq. 2, disentanglement of f_theta from the FPFH branch, weight ``lambda_disentanglement`` (100).
    disentanglement_loss: bool = True
    lambda_disentanglement: float = 100.0
    #: temperature of the contrastive loss.
    temperature: float = 0.07
    #: ``"squared"`` (mean squared cosine) or ``"signed"`` (the literal mean cosine).
    disentanglement_mode: str = "squared"
    #: self-supervised f_theta (a control): rebuild jittered normal patches (noise
    #: ``denoising_noise`` in patch units), weight ``lambda_denoising``.
    denoising_loss: bool = False
    lambda_denoising: float = 1.0
    denoising_noise: float = 0.1
    # -- memory bank and scores
    #: input perturbation before g_phi (Eq. 8): step ``epsilon``, direction ``"paper"`` or ``"odin"``.
    perturbation: bool = True
    epsilon: float = 0.1
    perturbation_direction: str = "paper"
    #: kept share of the bank and the coreset's random projection width.
    coreset_ratio: float = 0.1
    coreset_projection_dim: int | None = 128
    #: support of the object-score re-weighting.
    num_neighbors: int = 3
    #: Gaussian sigma in model-grid pixels (4 at 224).
    blur_sigma: float = 4.0
    #: weights of the distance and classification scores.
    alpha: float = 1.0
    beta: float = 1.0
    #: weight of the (norm-equalised) learned branch in the bank feature.
    learned_weight: float = 1.0
    #: subtract each object's median patch score from its maps.
    map_centering: bool = False
    #: L2-normalise f_theta before the bank (Eq. 1 only shapes its direction).
    normalize_learned: bool = False
    #: seeds everything random in the model.
    seed: int = 0

    def validate(self) -> None:
        """Refuse values the model cannot run with, naming the switch."""
        if self.grid_size % self.patch_size:
            msg = f"grid_size ({self.grid_size}) must be a multiple of patch_size ({self.patch_size})."
            raise ValueError(msg)
        if self.rgb_backbone not in {None, "wide_resnet50_2"}:
            msg = f"rgb_backbone must be 'wide_resnet50_2' or null, got {self.rgb_backbone!r}."
            raise ValueError(msg)
        if self.interest_source not in {"cnn", "random"}:
            msg = f"interest_source must be 'cnn' (random-CNN points of interest) or 'random', got {self.interest_source!r}."
            raise ValueError(msg)
        if self.negative_patch not in {"cell", "knn"}:
            msg = f"negative_patch must be 'cell' or 'knn', got {self.negative_patch!r}."
            raise ValueError(msg)
        check_choice("pseudo_anomalies", self.pseudo_anomalies, PSEUDO_ANOMALIES)
        unknown = sorted(set(self.pseudo_kinds) - set(KINDS))
        if unknown or not self.pseudo_kinds:
            msg = f"pseudo_kinds must be a non-empty subset of {KINDS}, got {list(self.pseudo_kinds)!r}."
            raise ValueError(msg)
        if self.denoising_loss and not self.learned_branch:
            msg = "denoising_loss trains f_theta: it needs learned_branch: true."
            raise ValueError(msg)
        if not 0 <= self.adding_ratio <= 1:
            msg = f"adding_ratio must be in [0, 1], got {self.adding_ratio}."
            raise ValueError(msg)
        if not (self.use_fpfh or self.learned_branch or self.rgb_backbone):
            msg = "at least one feature branch (rgb_backbone, use_fpfh, learned_branch) must be on."
            raise ValueError(msg)


__all__ = ["PSEUDO_ANOMALIES", "ThreeDzALSettings"]
