"""``anomalib train --seed_everything N`` seeds the run, as its help text says.

anomalib 2.7's CLI declares ``--seed_everything`` ("run seed_everything with this value before
classes instantiation") and writes it into the run's ``config.yaml``, but never calls
``seed_everything``: two runs with the same seed start from different random weights (and, under
DDP, the single-process and the two-process run of one command compare different networks).
:func:`honour_cli_seed` wraps ``AnomalibCLI.before_instantiate_classes`` (no file of anomalib
changes) so that, when the configured model is one of ours, the seed is applied before the model
and the datamodule are built, with Lightning's :func:`~lightning.pytorch.seed_everything` (also
seeding dataloader workers) the way ``LightningCLI`` applies its own ``--seed_everything``:

* an integer: that seed;
* ``True`` (anomalib's default, "use a random seed"): a seed drawn at random — or the one a parent
  process chose (``PL_GLOBAL_SEED``, so the ranks of a DDP run agree) — written back into the
  configuration, so the saved ``config.yaml`` reruns the same run;
* ``False``: nothing is seeded.

Other models keep anomalib's behaviour. Installed when ``anomalib.cli.cli`` is imported
(``anomalib_3d._hook``); ``ANOMALIB3D_CLI_SEED=0`` leaves anomalib's CLI as it is.
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any

__all__ = ["apply_cli_seed", "honour_cli_seed"]

_SWITCH_ENVIRONMENT = "ANOMALIB3D_CLI_SEED"
_SEED_ENVIRONMENT = "PL_GLOBAL_SEED"  # Lightning's: set by seed_everything, inherited by child ranks
_MAX_SEED = 2**32 - 1


def _is_our_model(class_path: object) -> bool:
    from anomalib_3d._lazy import entry_point_names

    if not isinstance(class_path, str):
        return False
    if class_path.split(".", 1)[0] in ("anomalib_3d", "anomalib_3d_plugins"):
        return True
    return class_path.rpartition(".")[2] in entry_point_names("anomalib_3d.models")


def apply_cli_seed(config: Any, subcommand: str | None) -> int | None:  # noqa: ANN401 - jsonargparse Namespace
    """Seed the run described by ``config`` (anomalib's parsed CLI configuration) if its model is
    one of ours; return the seed applied (``None``: nothing was seeded).

    Args:
        config: the parsed configuration; ``config[subcommand]`` holds ``seed_everything`` and
            ``model`` (a ``class_path`` / ``init_args`` namespace).
        subcommand: ``"train"``, ``"fit"``, ``"predict"``, ...
    """
    from lightning.pytorch import seed_everything

    section = config.get(subcommand) if subcommand else config
    if section is None or "seed_everything" not in section:
        return None
    model = section.get("model")
    class_path = model.get("class_path") if hasattr(model, "get") else None
    if not _is_our_model(class_path):
        return None
    value = section["seed_everything"]
    if value is False or value is None:
        return None
    if value is True:
        inherited = os.environ.get(_SEED_ENVIRONMENT)
        value = int(inherited) if inherited is not None else random.SystemRandom().randint(0, _MAX_SEED)
    seed = seed_everything(int(value), workers=True)
    section["seed_everything"] = seed
    return seed


def honour_cli_seed() -> bool:
    """Wrap ``anomalib.cli.cli.AnomalibCLI.before_instantiate_classes`` (idempotent).

    Returns:
        Whether the wrapper is in place (``False`` when switched off by ``ANOMALIB3D_CLI_SEED=0`` or
        when anomalib's CLI no longer has that method).
    """
    if os.environ.get(_SWITCH_ENVIRONMENT, "1").strip() == "0":
        return False
    import anomalib.cli.cli as cli_module

    cli_class = getattr(cli_module, "AnomalibCLI", None)
    original = getattr(cli_class, "before_instantiate_classes", None)
    if original is None or getattr(original, "__anomalib3d_seed__", False):
        return original is not None

    @functools.wraps(original)
    def before_instantiate_classes(self: Any) -> None:  # noqa: ANN401
        original(self)
        apply_cli_seed(self.config, self.config.get("subcommand"))

    before_instantiate_classes.__anomalib3d_seed__ = True  # type: ignore[attr-defined]
    cli_class.before_instantiate_classes = before_instantiate_classes
    return True
