"""Pre-flight check of a dataset: every problem of every file, reported at once, before training.

A datamodule's ``setup()`` runs it (``validate=`` option of
:class:`~anomalib_3d.data.datamodules.base.PointCloudDataModule`):

* ``"header"`` (default): the layout scan plus every file's *header* — cloud headers (PCD/PLY
  fields, counts, and binary body sizes against the file size), TIFF shapes, PNG sizes against
  their xyz grid, GT files present and non-empty. Seconds on a Real3D-AD-size tree.
* ``"full"``: reads every sample as training would (values, GT content and labels).
* ``"off"``: the scan only (problems then surface when a file is read).

Problems are collected, not raised one by one: one :class:`DatasetValidationError` lists them
all (a single problem is raised as itself). ``python -m anomalib_3d check-data`` runs the same
check stand-alone.

Scanners report per-file problems through :func:`report_problem`: inside
:func:`collect_problems` they are collected (and the scan goes on), elsewhere raised at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.errors import (
    CorruptFileError,
    DatasetValidationError,
    EmptyPointCloudError,
    GroundTruthMismatchError,
    MisalignedFileError,
    PointCloudError,
)

logger = logging.getLogger(__name__)

VALIDATION_MODES = ("off", "header", "full")

_COLLECTOR: contextvars.ContextVar[list[PointCloudError] | None] = contextvars.ContextVar(
    "anomalib_3d_problem_collector", default=None
)


@contextlib.contextmanager
def collect_problems() -> Iterator[list[PointCloudError]]:
    """Collect the problems that scanners report (instead of raising the first one)."""
    problems: list[PointCloudError] = []
    token = _COLLECTOR.set(problems)
    try:
        yield problems
    finally:
        _COLLECTOR.reset(token)


def report_problem(error: PointCloudError) -> None:
    """Record ``error`` in the active :func:`collect_problems` block, or raise it if none."""
    problems = _COLLECTOR.get()
    if problems is None:
        raise error
    problems.append(error)


def raise_if_problems(problems: Sequence[PointCloudError], dataset: str = "the dataset") -> None:
    """Raise nothing, the one problem, or a :class:`DatasetValidationError` listing them all."""
    unique: dict[str, PointCloudError] = {}
    for problem in problems:
        unique.setdefault(str(problem), problem)
    problems = list(unique.values())
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DatasetValidationError(problems, dataset)


def check_mode(validate: str) -> str:
    """Normalise / check a ``validate=`` value."""
    mode = str(validate).lower()
    if mode not in VALIDATION_MODES:
        msg = f"validate must be one of {VALIDATION_MODES}, got {validate!r}."
        raise ValueError(msg)
    return mode


def _check_row_headers(row: pd.Series) -> tuple[list[PointCloudError], bool | None]:
    """Header-level problems of one sample row; and whether its cloud has colours (None: n/a)."""
    from anomalib_3d.data.io import (
        read_image_size,
        read_organized_xyz_header,
        read_point_cloud_header,
    )

    problems: list[PointCloudError] = []
    has_colors = None
    try:
        if row.kind == "organized":
            grid = read_organized_xyz_header(row.image_path)
            for column, what in (("mask_path", "GT mask"), ("rgb_path", "RGB image")):
                companion = getattr(row, column, "")
                if not companion:
                    continue
                try:
                    size = read_image_size(companion)
                except PointCloudError as err:
                    problems.append(err)
                    continue
                if size != grid:
                    problems.append(_size_mismatch(companion, what, size, grid, row.image_path))
        else:
            header = read_point_cloud_header(row.image_path)
            has_colors = header.has_colors
            if row.mask_path:
                gt = Path(row.mask_path)
                from anomalib_3d.data.io.files import require_file

                require_file(gt)
                if gt.stat().st_size == 0:
                    problems.append(EmptyPointCloudError(
                        "ground-truth file is empty.", gt, "restore the GT file from the dataset archive."
                    ))
    except PointCloudError as err:
        problems.append(err)
    except OSError as err:  # permissions, I/O errors: still a per-file problem, still named
        problems.append(CorruptFileError(f"cannot be read ({err}).", row.image_path, "check the file's permissions."))
    return problems, has_colors


def _size_mismatch(path: str, what: str, size: tuple[int, int], grid: tuple[int, int], cloud: str) -> MisalignedFileError:
    cls = GroundTruthMismatchError if what == "GT mask" else MisalignedFileError
    return cls(
        f"{what} is {size[0]}x{size[1]} (HxW) but its xyz grid {cloud} is {grid[0]}x{grid[1]}; "
        "resizing would move or invent labels/colours.",
        path,
        f"use the {what} that belongs to this scan (same size), from the same dataset release.",
    )


def check_samples(
    samples: pd.DataFrame,
    mode: str = "header",
    read_item: Callable[[int], object] | None = None,
    check_row: Callable[[object], list[PointCloudError]] | None = None,
) -> list[PointCloudError]:
    """All problems of the files of a samples table (see the module docstring for ``mode``).

    Args:
        samples: a samples table (:mod:`anomalib_3d.data.datasets` columns).
        mode: ``"off"`` | ``"header"`` | ``"full"``.
        read_item: ``"full"`` mode: reads row ``i`` of ``samples`` as training would
            (e.g. a dataset's ``__getitem__``), raising a named error for a bad sample.
        check_row: header check of rows whose ``kind`` is neither ``cloud`` nor ``organized``
            (a dataset's ``check_row_header(row) -> list[PointCloudError]``); such rows are
            skipped in header mode without it (``"full"`` still reads them).

    Returns:
        one named error per problem (empty when the files are fine).
    """
    mode = check_mode(mode)
    problems: list[PointCloudError] = []
    if mode == "off" or len(samples) == 0:
        return problems
    with_colors: list[str] = []
    without_colors: list[str] = []
    for i, row in enumerate(samples.itertuples(index=False)):
        if row.kind in ("cloud", "organized"):
            row_problems, has_colors = _check_row_headers(row)
        else:
            row_problems, has_colors = (list(check_row(row)) if check_row is not None else []), None
        problems.extend(row_problems)
        if has_colors is not None and not row_problems:
            (with_colors if has_colors else without_colors).append(row.image_path)
        if mode == "full" and not row_problems and read_item is not None:
            try:
                read_item(i)
            except PointCloudError as err:
                problems.append(err)
    if with_colors and without_colors:
        # Deliberate: not an error (colours are optional), but batches mixing both lose colours.
        logger.warning(
            "%d of %d clouds have no colours (e.g. %s) while the others have: colours are dropped "
            "for every batch that mixes both (see PointCloudBatch.collate).",
            len(without_colors), len(with_colors) + len(without_colors), ", ".join(without_colors[:3]),
        )
    return problems


__all__ = [
    "VALIDATION_MODES",
    "check_mode",
    "check_samples",
    "collect_problems",
    "raise_if_problems",
    "report_problem",
]
