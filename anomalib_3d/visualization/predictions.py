"""The files a predict run leaves for the user: one table of verdicts and one scored cloud per scan.

:class:`PredictionWriter` is a Lightning callback every anomalib-3d point model adds. After
anomalib's post-processor has normalised and thresholded a predict batch, it writes

* ``predictions/<scan path relative to the predict root>.ply``: the scan's points coloured by
  score, with a per-point ``anomaly_score`` property (Open3D reads it as the attribute
  ``anomaly_score``, CloudCompare as a scalar field);

and at the end of the run one ``predictions/predictions.csv`` with the columns ``file,
pred_score, pred_label, error``: a row per scored scan (``pred_label`` 1 = anomalous, from the
threshold fitted at training) and a row per file that could not be scored, ``error`` naming its
error (``CorruptFileError: ...``). Files are written atomically (temporary name, then rename).
The heatmap pictures come from the model's visualizer (``images/``), as for ``anomalib test``.

When no scan at all could be scored the run ends with :class:`~anomalib_3d.errors.NoScanScoredError`
(after writing the table), so scripts see a non-zero exit status; some bad files among good ones are
a success.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback

from anomalib_3d.errors import NoScanScoredError
from anomalib_3d.visualization.colormap import score_to_rgb
from anomalib_3d.visualization.visualizer import _item, _plain

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

CSV_NAME = "predictions.csv"
CSV_COLUMNS = ("file", "pred_score", "pred_label", "error")
#: Name of the per-point score property of the scored PLY files.
SCORE_PROPERTY = "anomaly_score"


class PredictionWriter(Callback):
    """Writes ``predictions.csv`` and one scored ``.ply`` per scan of a predict run.

    Args:
        output_dir: folder of the outputs; default ``<trainer.default_root_dir>/predictions``.
        export_ply: write the scored PLY files.
        score_range: colour range of the scores (anomalib's normalised scores lie in ``[0, 1]``).
        cmap: matplotlib colormap of the scores.
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        export_ply: bool = True,
        score_range: tuple[float, float] = (0.0, 1.0),
        cmap: str = "jet",
    ) -> None:
        super().__init__()
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.export_ply = export_ply
        self.score_range = (float(score_range[0]), float(score_range[1]))
        self.cmap = cmap
        self._rows: dict[str, tuple[str, str, str]] = {}
        self._ply_names: set[Path] = set()
        self._depth_warned = False

    def _folder(self, trainer: Trainer) -> Path:
        return self.output_dir if self.output_dir is not None else Path(trainer.default_root_dir) / "predictions"

    @staticmethod
    def _datasets(trainer: Trainer) -> list[Any]:
        from anomalib_3d.data.predict import predict_datasets

        return predict_datasets(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty table."""
        del trainer, pl_module
        self._rows = {}
        self._ply_names = set()

    # -- per batch ----------------------------------------------------------------------------
    def _ply_path(self, folder: Path, relative: Path) -> Path:
        """``<folder>/<relative stem>.ply``; a second scan of the same folder and stem keeps its suffix."""
        name = relative.with_suffix(".ply")
        if name in self._ply_names:
            name = relative.with_name(relative.name + ".ply")
            logger.warning("PredictionWriter: another scan of %s has the stem %r: this one's cloud is %s (the heatmap "
                           "pictures share one name; the later replaces the earlier).", relative.parent,
                           relative.stem, name)
        self._ply_names.add(name)
        return folder / name

    def _relative(self, trainer: Trainer, path: str, category: str | None, fallback: str) -> Path:
        for dataset in self._datasets(trainer):
            if Path(path).is_relative_to(dataset.root):
                return dataset.relative_name(path)
        from anomalib_3d.visualization.visualizer import relative_output_path

        return relative_output_path(path, category or "all", fallback)

    def _write_cloud(self, path: Path, points: torch.Tensor, scores: torch.Tensor) -> None:
        from anomalib_3d.data.io import write_ply

        scores = scores.detach().float().cpu()
        colours = score_to_rgb(scores, *self.score_range, cmap=self.cmap)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ply(path, points.detach().float().cpu().numpy(), colors=colours.numpy(),
                  scalars={SCORE_PROPERTY: scores.numpy()}, binary=True, scalar_prefix="")

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Record each scan's verdict and write its scored cloud (scores already post-processed)."""
        del pl_module, dataloader_idx
        from anomalib_3d.data.dataclasses import PointCloudBatch

        result = outputs if outputs is not None else batch
        scores = _plain(getattr(result, "pred_score", None))
        if scores is None:
            return
        is_points = isinstance(result, PointCloudBatch)
        if not is_points and self.export_ply and not self._depth_warned:
            self._depth_warned = True
            logger.info("PredictionWriter: %s batches get rows in %s but no scored PLY (point batches only).",
                        type(result).__name__, CSV_NAME)
        folder = self._folder(trainer)
        ptr = result.ptr.tolist() if is_points else None
        for b in range(int(scores.reshape(-1).shape[0])):
            path = None
            for name in ("point_path", "depth_path", "image_path"):
                path = _item(_plain(getattr(result, name, None)), b)
                if path:
                    break
            path = str(path) if path else f"batch{batch_idx:04d}_{b:02d}"
            label = _item(_plain(getattr(result, "pred_label", None)), b)
            self._rows[path] = (f"{float(scores.reshape(-1)[b]):.9g}", "" if label is None else str(int(label)), "")
            if is_points and self.export_ply and result.anomaly_map is not None:
                relative = self._relative(trainer, path, _item(result.category, b), f"batch{batch_idx:04d}_{b:02d}")
                lo, hi = ptr[b], ptr[b + 1]
                self._write_cloud(self._ply_path(folder, relative), _plain(result.points)[lo:hi],
                                  _plain(result.anomaly_map)[lo:hi])

    # -- end of run ---------------------------------------------------------------------------
    def _write_table(self, path: Path) -> None:
        from anomalib_3d.runtime.files import write_atomic

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for file in sorted(self._rows):
            writer.writerow((file, *self._rows[file]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``predictions.csv``; stop with :class:`NoScanScoredError` when nothing was scored."""
        del pl_module
        scored = len(self._rows)
        problems = []
        for dataset in self._datasets(trainer):
            for path, error in dataset.failures:
                self._rows.setdefault(str(path), ("", "", f"{type(error).__name__}: {error}"))
                problems.append(error)
        if not self._rows:
            return
        table = self._folder(trainer) / CSV_NAME
        self._write_table(table)
        anomalous = sum(row[1] == "1" for row in self._rows.values() if not row[2])
        logger.info("predict: %d scans scored (%d anomalous), %d not scored; table at %s", scored, anomalous,
                    len(problems), table)
        if scored == 0 and problems:
            raise NoScanScoredError(
                problems,
                "the scans given to predict",
                fix=f"fix the files listed (each line says how); the same errors are in {table}.",
            )


__all__ = ["CSV_COLUMNS", "CSV_NAME", "SCORE_PROPERTY", "PredictionWriter"]
