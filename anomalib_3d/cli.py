"""``anomalib_3d`` command line (stand-alone tools; training goes through ``anomalib train``).

Subcommands:

* ``check-data``: the datamodule pre-flight check without training. Takes the datamodule as
  ``anomalib train`` does::

      anomalib_3d check-data --data Real3DAD --data.root ./datasets/Real3D-AD-PCD --data.category duck
      python -m anomalib_3d check-data --data MVTec3DPointCloud --data.root R --data.category "[bagel, tire]" --validate full

  prints every problem (one line each, naming the file and the fix) and exits with 1 when
  there are any, 0 otherwise (2 for a usage error).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from anomalib_3d.data.errors import PointCloudError
from anomalib_3d.data.validation import VALIDATION_MODES


def resolve_datamodule(name: str) -> type:
    """A datamodule class from its name (``Real3DAD``, an ``anomalib_3d.datamodules`` entry
    point) or its dotted path (``package.module.Class``)."""
    if "." in name:
        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    for entry in entry_points(group="anomalib_3d.datamodules"):
        if entry.name == name:
            return entry.load()
    from anomalib_3d.data import datamodules

    if name in datamodules.__all__:
        return getattr(datamodules, name)
    known = sorted({e.name for e in entry_points(group="anomalib_3d.datamodules")} | set(datamodules.__all__))
    msg = f"unknown datamodule {name!r}; choose from {', '.join(known)} or pass a dotted path."
    raise SystemExit(msg)


def _parse_value(text: str) -> Any:  # noqa: ANN401
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_data_options(extra: Sequence[str]) -> dict[str, Any]:
    """``--data.key value`` / ``--data.key=value`` pairs → keyword arguments (YAML values;
    a repeated key collects a list)."""
    options: dict[str, Any] = {}
    items = list(extra)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--data."):
            msg = f"unexpected argument {item!r} (datamodule options are --data.<name> <value>)."
            raise SystemExit(msg)
        key = item[len("--data."):]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                msg = f"{item} needs a value."
                raise SystemExit(msg)
            value = items[i + 1]
            i += 2
        key = key.replace("init_args.", "")
        parsed = _parse_value(value)
        if key in ("root",):
            parsed = str(value)
        if key in options:
            previous = options[key] if isinstance(options[key], list) else [options[key]]
            parsed = [*previous, *(parsed if isinstance(parsed, list) else [parsed])]
        options[key] = parsed
    return options


def check_data(argv: Sequence[str]) -> int:
    """Run the pre-flight check of one datamodule; print the problems; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="anomalib_3d check-data",
        description="Check a dataset's files before training (all problems at once).",
        epilog="Datamodule options: --data.<name> <value>, e.g. --data.root R --data.category duck.",
    )
    parser.add_argument("--data", required=True, help="datamodule class name (e.g. Real3DAD) or dotted path")
    parser.add_argument("--validate", default="header", choices=VALIDATION_MODES,
                        help="header: every file's header (fast); full: read every sample")
    args, extra = parser.parse_known_args(list(argv))
    datamodule_cls = resolve_datamodule(args.data)
    options = parse_data_options(extra)
    start = time.perf_counter()
    try:
        datamodule = datamodule_cls(**options)
        problems = datamodule.check_data(args.validate)
    except PointCloudError as err:  # the scan itself could not run (root / category missing)
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except TypeError as err:
        print(f"bad datamodule options for {datamodule_cls.__name__}: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    samples = getattr(datamodule, "samples", None)
    count = 0 if samples is None else len(samples)
    if problems:
        print(f"{len(problems)} problem(s) in {count} samples ({args.validate} check, {seconds:.2f} s):")
        for problem in problems:
            print(f"  - {type(problem).__name__}: {problem}")
        return 1
    by_split = {} if samples is None else samples.split.value_counts().to_dict()
    print(f"OK: {count} samples {by_split} pass the {args.validate} check ({seconds:.2f} s).")
    return 0


COMMANDS = {"check-data": check_data}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anomalib_3d`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: anomalib_3d {" + ",".join(COMMANDS) + "} ...\n\n"
              "  check-data   check a dataset's files before training (see check-data --help)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
