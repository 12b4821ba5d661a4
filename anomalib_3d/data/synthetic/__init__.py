"""Procedural synthetic 3D anomaly data: the embedded default dataset (no download needed).

Ten industrial-part-like families (:data:`SHAPE_FAMILIES`) with per-sample shape variation and
real CAD parts read from the meshes the optional ``pybullet`` package ships (:data:`CAD_PARTS`,
categories ``cad_<part>``, :mod:`.cad`), with the six Anomaly-ShapeNet defect types
(:data:`DEFECT_TYPES`) and exact per-point labels, written in the Real3D-AD layout (unorganized
``.pcd`` + ``gt/*.txt``) or the MVTec 3D-AD layout (organized depth-camera scans:
``xyz/*.tiff``, ``rgb/*.png``, ``gt/*.png``).

Example:
    >>> from anomalib_3d.data.synthetic import generate_synthetic_dataset, make_sample
    >>> root = generate_synthetic_dataset("datasets/synthetic", categories=["gear"])  # doctest: +SKIP
    >>> sample = make_sample("gear", "bulge", seed=0)
    >>> sample.points.shape
    (8192, 3)
    >>> bool(0.005 < sample.labels.mean() < 0.15)
    True
"""

from anomalib_3d.data.synthetic.cad import CAD_HELD_OUT, CAD_PARTS, CAD_VALIDATION, list_cad_categories
from anomalib_3d.data.synthetic.defects import DEFECT_TYPES, DefectResult, apply_defect
from anomalib_3d.data.synthetic.generator import (
    GENERATOR_VERSION,
    LAYOUTS,
    OrganizedSample,
    SyntheticSample,
    default_camera,
    derive_seed,
    generate_synthetic_dataset,
    list_categories,
    make_defect,
    make_mesh,
    make_sample,
    make_scan,
)
from anomalib_3d.data.synthetic.shapes import SHAPE_FAMILIES, Mesh, sample_surface

__all__ = [
    "CAD_HELD_OUT",
    "CAD_PARTS",
    "CAD_VALIDATION",
    "DEFECT_TYPES",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "SHAPE_FAMILIES",
    "DefectResult",
    "Mesh",
    "OrganizedSample",
    "SyntheticSample",
    "apply_defect",
    "default_camera",
    "derive_seed",
    "generate_synthetic_dataset",
    "list_cad_categories",
    "list_categories",
    "make_defect",
    "make_mesh",
    "make_sample",
    "make_scan",
    "sample_surface",
]
