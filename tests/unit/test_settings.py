"""anomalib_3d.settings: typed coercion of config values, the missing-switch error, validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from anomalib_3d.settings import ModelSettings, check_at_least, check_choice, settings_from


@dataclass(frozen=True)
class Example(ModelSettings):
    radius: float = 0.5
    widths: tuple[int, int] = (8, 16)
    kinds: tuple[str, ...] = ("a", "b")
    projection_dim: int | None = 128
    sigma: float | None = None
    pretrained: bool | str = False
    ranges: tuple[float, float] = (0.1, 0.2)

    def validate(self) -> None:
        if self.radius <= 0:
            msg = f"radius must be > 0, got {self.radius}."
            raise ValueError(msg)


def test_yaml_values_become_the_annotated_types() -> None:
    settings = Example(radius=1, widths=[4, 8], kinds=["x"], sigma=2, ranges=[0, 1])
    assert settings.radius == 1.0 and type(settings.radius) is float
    assert settings.widths == (4, 8) and isinstance(settings.widths, tuple)
    assert settings.kinds == ("x",)
    assert settings.sigma == 2.0 and type(settings.sigma) is float
    assert settings.ranges == (0.0, 1.0) and all(type(v) is float for v in settings.ranges)
    assert settings == Example(radius=1.0, widths=(4, 8), kinds=("x",), sigma=2.0, ranges=(0.0, 1.0))


def test_values_of_the_right_type_are_kept_as_given() -> None:
    settings = Example(projection_dim=None, pretrained="weights.pt")
    assert settings.projection_dim is None and settings.pretrained == "weights.pt"
    assert Example(pretrained=True).pretrained is True  # a bool is not turned into a float or a str
    assert type(Example(projection_dim=64).projection_dim) is int


def test_settings_are_frozen_and_validated_on_construction_and_replace() -> None:
    settings = Example()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.radius = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="radius"):
        Example(radius=0)
    with pytest.raises(ValueError, match="radius"):
        settings.replace(radius=-1.0)
    assert settings.replace(radius=2).radius == 2.0


def test_settings_from_picks_the_fields_and_names_a_missing_one() -> None:
    arguments = {"radius": 2, "widths": [1, 2], "kinds": ["k"], "projection_dim": None, "sigma": None,
                 "pretrained": False, "ranges": (0.0, 0.5), "learning_rate": 1e-3, "self": object()}
    assert settings_from(Example, arguments) == Example(radius=2.0, widths=(1, 2), kinds=("k",), projection_dim=None,
                                                        ranges=(0.0, 0.5))
    del arguments["sigma"]
    with pytest.raises(TypeError, match="sigma"):
        settings_from(Example, arguments)


@dataclasses.dataclass(frozen=True)
class Documented(ModelSettings):
    # -- a section comment documents nothing
    undocumented: int = 0
    #: one line
    first: int = 1
    #: two lines that
    #: continue
    second: int = 2
    third: int = 3
    # -- a new section ends the run above

    fourth: int = 4


def test_switch_docs_reads_the_comment_runs_above_the_fields() -> None:
    from anomalib_3d.settings import switch_docs

    assert switch_docs(Documented) == {"first": "one line", "second": "two lines that continue",
                                       "third": "two lines that continue"}


def test_shared_checks_name_the_switch_and_the_value() -> None:
    """Every plugin words a bad choice / a too-small value through these two, so the messages agree."""
    check_choice("mode", "b", ("a", "b"))
    check_at_least("count", 1, 1)
    with pytest.raises(ValueError, match=r"^mode must be one of \('a', 'b'\), got 'c'\.$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"^count must be >= 1, got 0\.$"):
        check_at_least("count", 0, 1)
    with pytest.raises(ValueError, match=r"^weight must be >= 0, got -0\.5\.$"):
        check_at_least("weight", -0.5, 0)


@pytest.mark.parametrize("plugin", ["threedzal", "pointad"])
def test_every_switch_of_a_plugin_has_help_on_the_command_line(plugin: str) -> None:
    """``anomalib train --model X --model.help X`` reads the ``__init__`` docstring made from the settings."""
    import importlib

    from docstring_parser import parse

    package = importlib.import_module(f"anomalib_3d_plugins.{plugin}")
    module = getattr(package, {"threedzal": "ThreeDzAL", "pointad": "PointAD"}[plugin])
    documented = {param.arg_name: param.description for param in parse(module.__init__.__doc__).params}
    fields = [field.name for field in dataclasses.fields(module.settings_class)]
    assert [name for name in fields if not documented.get(name)] == []
