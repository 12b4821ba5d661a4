"""Synthetic3D: the embedded default dataset (procedural parts with exact defect labels)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.datasets import PointCloudDataset, scan_mvtec3d, scan_real3d_ad


class Synthetic3D(PointCloudDataModule):
    """Procedurally generated industrial parts with the six Anomaly-ShapeNet defect types.

    Needs no download: :meth:`prepare_data` writes the dataset once into a cache folder under
    ``root`` (named after the generation parameters, so different settings never collide) and
    the data then goes through the *real* loaders: the Real3D-AD layout (``layout="real3d"``,
    unorganized clouds) or the MVTec 3D-AD layout (``layout="mvtec3d"``, organized depth-camera
    scans of the part on a plane, with shaded RGB and GT masks).

    Args:
        root: cache folder.
        category: shape family / families (see ``anomalib_3d.data.synthetic.list_categories()``)
            and/or real CAD parts ``cad_<part>`` (``list_cad_categories()``; needs ``pybullet``).
        layout: ``"real3d"`` or ``"mvtec3d"``.
        num_train: good training samples per category.
        num_test_good: good test samples per category.
        num_test_per_defect: defective test samples per defect type and category.
        defect_types: subset of ``bulge, concavity, hole, break, bending, crack``.
        num_points: points per cloud (``real3d`` layout).
        image_size: (H, W) of the organized scans (``mvtec3d`` layout).
        generator_seed: seed of the generator (same seed ⇒ byte-identical files).
        noise_std: Gaussian scanner noise (``real3d``: object units on the points, parts are
            about 1 unit; ``mvtec3d``: metres of depth along each ray). 0 = noise-free.
        remove_background: ``mvtec3d`` layout: drop the ground plane as for MVTec 3D-AD.
        **kwargs: see :class:`PointCloudDataModule`.
    """

    def __init__(
        self,
        root: str | Path = "./datasets/Synthetic3D",
        category: str | Sequence[str] = ("bottle", "cup", "gear", "bracket"),
        layout: str = "real3d",
        num_train: int = 8,
        num_test_good: int = 6,
        num_test_per_defect: int = 2,
        defect_types: Sequence[str] | None = None,
        num_points: int = 4096,
        image_size: tuple[int, int] = (128, 128),
        generator_seed: int = 0,
        noise_std: float = 0.0,
        remove_background: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, category=category, **kwargs)
        if layout not in {"real3d", "mvtec3d"}:
            msg = f"layout must be 'real3d' or 'mvtec3d', got {layout!r}."
            raise ValueError(msg)
        from anomalib_3d.data.synthetic import DEFECT_TYPES, list_cad_categories, list_categories

        unknown = [c for c in self.categories if c not in list_categories() + list_cad_categories()]
        if unknown:
            from anomalib_3d.data.errors import UnknownCategoryError

            raise UnknownCategoryError(
                f"unknown synthetic categories {unknown}.",
                fix=f"choose from {', '.join(list_categories())} or a CAD part ({', '.join(list_cad_categories())})",
            )
        if any(c in list_cad_categories() for c in self.categories):
            from anomalib_3d.data.synthetic.cad import cad_data_folder

            cad_data_folder()  # a missing pybullet fails here, with its fix, not in a worker later
        self.defect_types = tuple(defect_types) if defect_types is not None else tuple(DEFECT_TYPES)
        bad = [d for d in self.defect_types if d not in DEFECT_TYPES]
        if bad:
            msg = f"unknown defect types {bad}; choose from {DEFECT_TYPES}."
            raise ValueError(msg)
        self.layout = layout
        self.generation = {
            "layout": layout,
            "num_train": num_train,
            "num_test_good": num_test_good,
            "num_test_per_defect": num_test_per_defect,
            "defect_types": list(self.defect_types),
            "num_points": num_points,
            "image_size": list(image_size),
            "seed": generator_seed,
        }
        if noise_std:  # only when set, so that the cache folders of noise-free data keep their names
            self.generation["noise_std"] = float(noise_std)
        self.remove_background = remove_background

    @property
    def dataset_root(self) -> Path:
        """The cache folder of these generation parameters (categories are sub-folders)."""
        key = hashlib.sha1(json.dumps(self.generation, sort_keys=True).encode()).hexdigest()[:10]
        return self.root / f"{self.layout}_{key}"

    def prepare_data(self) -> None:
        """Generate (or reuse) the cached dataset of the selected categories."""
        from anomalib_3d.data.synthetic import generate_synthetic_dataset

        params = dict(self.generation)
        params["image_size"] = tuple(params["image_size"])
        params["defect_types"] = tuple(params["defect_types"])
        generate_synthetic_dataset(self.dataset_root, categories=self.categories, **params)

    def scan(self) -> pd.DataFrame:
        self.prepare_data()  # cheap when cached; makes setup() work without a Trainer too
        scanner = scan_real3d_ad if self.layout == "real3d" else scan_mvtec3d
        return pd.concat([scanner(self.dataset_root, c) for c in self.categories], ignore_index=True)

    def make_dataset(self, samples: pd.DataFrame, split: str) -> PointCloudDataset:
        return PointCloudDataset(
            samples,
            split,
            remove_background=self.layout == "mvtec3d" and self.remove_background,
            name=self.name,
        )
