"""The one family of named errors for bad 3D input.

Every error says *which file* (when there is one), *what is wrong* and *how to fix it*, so a
user reading a traceback from ``anomalib train`` knows what to do without opening our code.
"""

from __future__ import annotations

from pathlib import Path


class PointCloudError(ValueError):
    """Base class of all bad-input errors raised by anomalib-3d.

    Args:
        problem: what is wrong, in one sentence.
        path: the file or folder concerned, if any.
        fix: what the user should do about it.
    """

    def __init__(self, problem: str, path: str | Path | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.fix = fix
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:")
        parts.append(problem)
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class DatasetRootNotFoundError(PointCloudError, FileNotFoundError):
    """The dataset root (or a required sub-folder of it) does not exist."""


class UnknownCategoryError(PointCloudError):
    """The requested category is not present under the dataset root."""


class CorruptFileError(PointCloudError):
    """A file exists but cannot be parsed (truncated, wrong magic, unreadable)."""


class UnsupportedFormatError(PointCloudError):
    """The file extension / encoding is not one we can read."""


class InvalidPointsError(PointCloudError):
    """Coordinates are NaN/inf, the array has the wrong shape, or the cloud is empty."""


class EmptyPointCloudError(InvalidPointsError):
    """A cloud has no (valid) points at all."""


class GroundTruthMismatchError(PointCloudError):
    """Ground truth does not line up with its cloud (length, shape or coordinates)."""


class MissingWeightsError(PointCloudError, FileNotFoundError):
    """Pretrained weights are neither cached nor at the given local path."""


__all__ = [
    "CorruptFileError",
    "DatasetRootNotFoundError",
    "EmptyPointCloudError",
    "GroundTruthMismatchError",
    "InvalidPointsError",
    "MissingWeightsError",
    "PointCloudError",
    "UnknownCategoryError",
    "UnsupportedFormatError",
]
