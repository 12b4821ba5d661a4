"""Per-category result tables and curves, shaped like the papers' tables.

:class:`MetricsReport` is a Lightning callback. During ``test`` it feeds every batch, split by
sample category, to one fresh set of the test metrics per category (object I-AUROC, AP, point
P-AUROC, AUPRO — :func:`anomalib_3d.metrics.default_metrics`). At the end of the test epoch it
writes into the results folder (``trainer.default_root_dir`` unless ``output_dir`` is given):

* ``metrics_per_category.csv`` and ``metrics_per_category.md``: one row per category, columns
  I-AUROC, AP, P-AUROC, AUPRO, and a final ``mean`` row (mean over the categories where the value
  is defined);
* ``roc_curves.png`` (object-level and point-level ROC, one line per category) and
  ``pro_curves.png`` (PRO curves up to the AUPRO FPR limit);

and logs where they are. A metric that is undefined for a category (e.g. only one object class,
or no per-point labels) is NaN there, never silently 0.

The category of a sample is ``batch.category[i]``; batches without it (anomalib's ``DepthBatch``)
use the datamodule's ``category`` attribute, else ``"all"``.

Memory: the report keeps its own copy of the test scores (per category), the same amount the
``Evaluator`` keeps.

Multi-process runs: metrics are not synchronised across ranks (ranks may hold different
categories, and a sync would deadlock); the files written by rank 0 then cover rank 0's share
of the test set only, and a warning says so. Report numbers from single-device test runs.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from anomalib_3d.runtime.files import atomic_write, write_atomic

logger = logging.getLogger(__name__)

#: metric name -> table column.
COLUMNS: dict[str, str] = {
    "image_AUROC": "I-AUROC",
    "image_AP": "AP",
    "point_AUROC": "P-AUROC",
    "point_AUPRO": "AUPRO",
}

_PER_POINT = ("points", "colors", "normals", "gt_mask", "anomaly_map", "pred_mask", "grid_index")
_CURVE_POINTS = 2000  # vertices kept per plotted curve (the values themselves use every threshold)


def _plain(value: object) -> Any:  # noqa: ANN401
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def _field_names(batch: Any) -> list[str]:  # noqa: ANN401
    if is_dataclass(batch):
        return [f.name for f in fields(batch)]
    return list(vars(batch))


class BatchView(SimpleNamespace):
    """Some samples of a batch (see :func:`select_samples`); ``len()`` is the sample count."""

    batch_size: int

    def __len__(self) -> int:
        return self.batch_size


def select_samples(batch: Any, indices: Sequence[int]) -> BatchView:  # noqa: ANN401
    """A view of some samples of a batch, with every field the metrics read.

    Args:
        batch: a ``PointCloudBatch`` (per-point fields follow ``batch_index``) or any anomalib
            batch whose fields are indexed by sample.
        indices: samples to keep, in order.

    Returns:
        A namespace with the same field names (``batch_index`` renumbered ``0 .. len - 1``).
    """
    index = torch.as_tensor(list(indices), dtype=torch.long)
    batch_index = _plain(getattr(batch, "batch_index", None))
    point_keep = None
    new_batch_index = None
    if batch_index is not None:
        remap = torch.full((int(batch_index.max()) + 1 if batch_index.numel() else 1,), -1, dtype=torch.long)
        remap[index] = torch.arange(len(index))
        remap = remap.to(batch_index.device)
        mapped = remap[batch_index]
        point_keep = mapped >= 0
        new_batch_index = mapped[point_keep]
    out = BatchView()
    for name in _field_names(batch):
        value = _plain(getattr(batch, name, None))
        if name == "batch_index":
            value = new_batch_index
        elif value is None:
            pass
        elif point_keep is not None and name in _PER_POINT and isinstance(value, torch.Tensor):
            value = value[point_keep.to(value.device)]
        elif isinstance(value, torch.Tensor):
            value = value[index.to(value.device)] if value.ndim else value
        elif isinstance(value, (list, tuple)):
            value = [value[i] for i in index.tolist()]
        setattr(out, name, value)
    out.batch_size = len(index)
    return out


def _categories(batch: Any, trainer: Any) -> list[str]:  # noqa: ANN401
    size = len(batch)
    names = getattr(batch, "category", None)
    if names is not None and len(names) == size:
        return [str(n) for n in names]
    datamodule = getattr(trainer, "datamodule", None)
    fallback = getattr(datamodule, "category", None) if datamodule is not None else None
    return [str(fallback) if fallback else "all"] * size


def _label_counts(batch: Any) -> tuple[int, int, int, int]:  # noqa: ANN401
    """(normal objects, anomalous objects, normal points/pixels, anomalous points/pixels)."""
    counts = [0, 0, 0, 0]
    labels = _plain(getattr(batch, "gt_label", None))
    if labels is not None:
        labels = labels.bool().reshape(-1)
        counts[1] = int(labels.sum())
        counts[0] = labels.numel() - counts[1]
    masks = _plain(getattr(batch, "gt_mask", None))
    if masks is not None and getattr(batch, "anomaly_map", None) is not None:
        masks = masks.bool()
        counts[3] = int(masks.sum())
        counts[2] = masks.numel() - counts[3]
    return tuple(counts)  # type: ignore[return-value]


class MetricsReport(Callback):
    """Per-category metric tables and curves written at the end of ``test``.

    Args:
        output_dir: folder of the files; default ``trainer.default_root_dir``.
        metrics_factory: returns a fresh list of anomalib metrics for one category; default
            :func:`anomalib_3d.metrics.default_metrics`.
        curves: also write the ROC / PRO curve PNGs.
        file_stem: stem of the table files.
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        metrics_factory: Callable[[], list[Any]] | None = None,
        curves: bool = True,
        file_stem: str = "metrics_per_category",
    ) -> None:
        super().__init__()
        if metrics_factory is None:
            from anomalib_3d.metrics.evaluator import default_metrics

            metrics_factory = default_metrics
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.metrics_factory = metrics_factory
        self.curves = curves
        self.file_stem = file_stem
        self.reset()

    def reset(self) -> None:
        """Forget everything collected."""
        self._metrics: dict[str, list[Any]] = {}
        self._counts: dict[str, list[int]] = {}
        self.results: dict[str, dict[str, float]] = {}
        self.written: dict[str, Path] = {}

    # ----------------------------------------------------------------------------------------
    # collection
    # ----------------------------------------------------------------------------------------
    def update(self, batch: Any, categories: Sequence[str] | None = None) -> None:  # noqa: ANN401
        """Add a (post-processed) batch.

        Args:
            batch: ``PointCloudBatch`` or anomalib batch with predictions.
            categories: category of each sample; default ``batch.category`` (else ``"all"``).
        """
        if categories is None:
            categories = _categories(batch, None)
        if len(categories) != len(batch):
            msg = f"got {len(categories)} categories for a batch of {len(batch)} samples."
            raise ValueError(msg)
        for category in dict.fromkeys(categories):
            indices = [i for i, c in enumerate(categories) if c == category]
            part = batch if len(indices) == len(categories) else select_samples(batch, indices)
            if category not in self._metrics:
                metrics = self.metrics_factory()
                for metric in metrics:
                    # keep the collected scores in host memory, as the Evaluator does
                    metric.compute_on_cpu = True
                    # ranks may see different categories: a cross-rank sync could deadlock
                    metric.sync_on_compute = False
                    metric._to_sync = False  # noqa: SLF001 - torchmetrics copies the flag at init
                self._metrics[category] = metrics
                self._counts[category] = [0, 0, 0, 0]
            for metric in self._metrics[category]:
                metric.update(part)
            self._counts[category] = [a + b for a, b in zip(self._counts[category], _label_counts(part), strict=True)]

    def _defined(self, category: str, name: str) -> bool:
        neg_obj, pos_obj, neg_pt, pos_pt = self._counts[category]
        if name.startswith("image_"):
            return neg_obj > 0 and pos_obj > 0
        if name.startswith(("point_", "pixel_")):
            return neg_pt > 0 and pos_pt > 0
        return True

    def compute(self) -> dict[str, dict[str, float]]:
        """``{category: {column: value}}`` plus a ``"mean"`` row; NaN where undefined."""
        results: dict[str, dict[str, float]] = {}
        for category in sorted(self._metrics):
            row: dict[str, float] = {}
            for metric in self._metrics[category]:
                column = COLUMNS.get(metric.name, metric.name)
                value = None
                if self._defined(category, metric.name):
                    value = metric.compute()
                row[column] = float("nan") if value is None else float(value)
            results[category] = row
        if results:
            columns = list(next(iter(results.values())))
            mean_row = {}
            for column in columns:
                values = [row[column] for row in results.values() if not math.isnan(row[column])]
                mean_row[column] = float(np.mean(values)) if values else float("nan")
            results["mean"] = mean_row
        self.results = results
        return results

    # ----------------------------------------------------------------------------------------
    # writing
    # ----------------------------------------------------------------------------------------
    def write(self, output_dir: str | Path) -> dict[str, Path]:
        """Write the tables (and curves) for the collected data; returns ``{kind: path}``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        results = self.results or self.compute()
        written: dict[str, Path] = {}
        if not results:
            logger.warning("MetricsReport: no test batch was collected; nothing to write.")
            return written
        columns = list(results["mean"])
        csv_path = output_dir / f"{self.file_stem}.csv"
        with atomic_write(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["category", *columns])
            for category, row in results.items():
                writer.writerow([category, *(f"{row[c]:.6f}" for c in columns)])
        written["csv"] = csv_path
        md_path = output_dir / f"{self.file_stem}.md"
        write_atomic(md_path, self.markdown(results))
        written["markdown"] = md_path
        if self.curves:
            written.update(self._write_curves(output_dir))
        self.written = written
        return written

    @staticmethod
    def markdown(results: dict[str, dict[str, float]]) -> str:
        """The table in Markdown (values ×100 with one decimal, as in the papers)."""
        columns = list(results["mean"])
        lines = [
            "| Category | " + " | ".join(columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for category, row in results.items():
            name = f"**{category}**" if category == "mean" else category
            cells = ["–" if math.isnan(row[c]) else f"{100 * row[c]:.1f}" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        note = "\nValues in % (×100). I-AUROC / AP: object level; P-AUROC: point (or pixel) level; "
        note += "AUPRO: per-region overlap integrated to FPR 0.3. – : undefined for that category.\n"
        return "\n".join(lines) + "\n" + note

    def _write_curves(self, output_dir: Path) -> dict[str, Path]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        written: dict[str, Path] = {}
        fig = Figure(figsize=(10, 4.6), dpi=110)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        drew_roc = False
        for axis, name, title in ((axes[0], "image_AUROC", "object ROC"), (axes[1], "point_AUROC", "point ROC")):
            for category, metrics in sorted(self._metrics.items()):
                metric = next((m for m in metrics if m.name == name), None)
                if metric is None or not self._defined(category, name):
                    continue
                fpr, tpr = (t.detach().cpu().numpy() for t in metric._compute())  # noqa: SLF001
                fpr, tpr = _thin(fpr, tpr)
                axis.plot(fpr, tpr, lw=1.4, label=f"{category} ({self.results[category][COLUMNS[name]]:.3f})")
                drew_roc = True
            axis.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            axis.set(xlim=(0, 1), ylim=(0, 1.01), title=title)
            axis.set(xlabel="false positive rate", ylabel="true positive rate")
            if axis.lines[:-1]:
                axis.legend(fontsize=7, loc="lower right")
        if drew_roc:
            path = output_dir / "roc_curves.png"
            fig.tight_layout()
            with atomic_write(path) as handle:
                fig.savefig(handle, format="png")
            written["roc_curves"] = path

        fig = Figure(figsize=(5.4, 4.6), dpi=110)
        FigureCanvasAgg(fig)
        axis = fig.subplots()
        limit = None
        for category, metrics in sorted(self._metrics.items()):
            metric = next((m for m in metrics if m.name == "point_AUPRO"), None)
            if metric is None or math.isnan(self.results[category].get("AUPRO", float("nan"))):
                continue
            limit = metric.fpr_limit
            fpr, pro = (t.cpu().numpy() for t in metric.curve())
            fpr, pro = _thin(fpr, pro)
            axis.plot(fpr, pro, lw=1.4, label=f"{category} ({self.results[category]['AUPRO']:.3f})")
        if limit is not None:
            axis.set(xlim=(0, limit), ylim=(0, 1.01), xlabel="false positive rate", ylabel="per-region overlap",
                     title=f"PRO curves (AUPRO to FPR {limit:g})")
            axis.legend(fontsize=7, loc="lower right")
            path = output_dir / "pro_curves.png"
            fig.tight_layout()
            with atomic_write(path) as handle:
                fig.savefig(handle, format="png")
            written["pro_curves"] = path
        return written

    # ----------------------------------------------------------------------------------------
    # Lightning hooks
    # ----------------------------------------------------------------------------------------
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
        """Start a fresh report."""
        del trainer, pl_module
        self.reset()

    def on_test_batch_end(
        self,
        trainer: Any,  # noqa: ANN401
        pl_module: Any,  # noqa: ANN401
        outputs: Any,  # noqa: ANN401
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Collect a post-processed test batch."""
        del pl_module, outputs, batch_idx, dataloader_idx
        self.update(batch, _categories(batch, trainer))

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
        """Compute, write and say where."""
        del pl_module
        self.compute()
        if not getattr(trainer, "is_global_zero", True):
            return
        if getattr(trainer, "world_size", 1) > 1:
            logger.warning(
                "MetricsReport: %d processes; the per-category report covers rank 0's samples only "
                "(the logged test metrics cover all). Test on one device for the full report.",
                trainer.world_size,
            )
        output_dir = self.output_dir or Path(trainer.default_root_dir)
        written = self.write(output_dir)
        if written:
            # Lightning's logger is the one shown on the console during `anomalib test`.
            names = ", ".join(p.name for p in written.values())
            rank_zero_info(f"MetricsReport: per-category metrics written to {output_dir} ({names})")
            rank_zero_info("\n" + self.markdown(self.results))


def _thin(x: np.ndarray, y: np.ndarray, count: int = _CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``count`` vertices of a curve for plotting (keeps both ends)."""
    if x.shape[0] <= count:
        return x, y
    keep = np.unique(np.linspace(0, x.shape[0] - 1, count).round().astype(np.int64))
    return x[keep], y[keep]


__all__ = ["COLUMNS", "BatchView", "MetricsReport", "select_samples"]
