"""``python -m anomalib_3d <command>``: see :mod:`anomalib_3d.cli`."""

from anomalib_3d.cli import main

raise SystemExit(main())
