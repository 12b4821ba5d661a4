"""anomalib_3d.settings: typed coercion of config values, validation, and the Lightning signature written from a settings class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from lightning.pytorch import LightningModule

from anomalib_3d.settings import ModelSettings, check_at_least, check_choice, switches_from


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


# -- switches_from: the Lightning __init__ written from a settings class --------------------------------

class _Parent(LightningModule):
    """Stands for AnomalibModule: takes the components and saves the hyper-parameters of the whole chain."""

    def __init__(self, component: str = "parent default", other: int = 1) -> None:
        super().__init__()
        self.component = component
        self.other = other
        self.save_hyperparameters()


def _as_names(sources: list | None) -> list[str] | None:
    return None if sources is None else [str(source) for source in sources]


@switches_from(Documented, prepare={"sources": _as_names}, parent_defaults={"component": "ours"})
class _Toy(_Parent):
    """A toy module.

    Args:
        learning_rate: the step size.
    """

    def init_from_settings(self, settings: Documented, learning_rate: float = 1e-3, sources: list | None = None) -> None:
        self.settings = settings
        self.learning_rate = learning_rate
        self.sources = sources


def test_written_signature_lists_switches_then_own_arguments_then_parent_defaults() -> None:
    import inspect

    parameters = inspect.signature(_Toy).parameters
    assert list(parameters) == ["undocumented", "first", "second", "third", "fourth", "learning_rate", "sources",
                                "component", "kwargs"]
    assert [parameters[name].default for name in ("first", "fourth", "learning_rate", "sources", "component")] == [
        1, 4, 1e-3, None, "ours"]
    assert parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    hints = _Toy.__init__.__annotations__
    assert hints["first"] is int and hints["learning_rate"] is float and hints["component"] is str
    assert _Toy.settings_class is Documented
    assert "first: one line" in _Toy.__init__.__doc__ and "third: two lines that continue" in _Toy.__init__.__doc__


def test_written_init_builds_settings_saves_every_argument_and_applies_prepare() -> None:
    model = _Toy(first=10, learning_rate=0.5, sources=[1, 2], other=7)
    assert model.settings == Documented(first=10)
    assert model.learning_rate == 0.5 and model.component == "ours" and model.other == 7
    assert model.sources == ["1", "2"]
    assert dict(model.hparams) == {"undocumented": 0, "first": 10, "second": 2, "third": 3, "fourth": 4,
                                   "learning_rate": 0.5, "sources": ["1", "2"], "component": "ours", "other": 7}
    rebuilt = _Toy(**model.hparams)  # what loading a checkpoint does
    assert rebuilt.settings == model.settings and dict(rebuilt.hparams) == dict(model.hparams)


def test_a_bad_switch_fails_before_the_parent_is_built() -> None:
    built: list[bool] = []

    class Watched(_Parent):
        def __init__(self, **kwargs: object) -> None:
            built.append(True)
            super().__init__(**kwargs)

    @switches_from(Example)
    class Strict(Watched):
        def init_from_settings(self, settings: Example) -> None:
            self.settings = settings

    with pytest.raises(ValueError, match="radius"):
        Strict(radius=0)
    assert not built
    assert Strict(radius=2).settings.radius == 2.0 and built


def test_jsonargparse_reads_the_written_signature() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(_Toy, "model")
    assert "one line" in parser.format_help()
    config = parser.parse_args(["--model.first", "5", "--model.learning_rate", "0.1", "--model.component", "x"])
    model = _Toy(**vars(config.model))
    assert model.settings.first == 5 and model.learning_rate == 0.1 and model.component == "x"


def test_switches_from_refuses_a_class_it_cannot_write_for() -> None:
    with pytest.raises(TypeError, match="init_from_settings"):

        @switches_from(Example)
        class OwnInit(_Parent):
            def __init__(self) -> None:
                super().__init__()

            def init_from_settings(self, settings: Example) -> None: ...

    with pytest.raises(TypeError, match="radius"):

        @switches_from(Example)
        class Clash(_Parent):
            def init_from_settings(self, settings: Example, radius: float = 1.0) -> None: ...

    with pytest.raises(TypeError, match="rate"):

        @switches_from(Example)
        class NoDefault(_Parent):
            def init_from_settings(self, settings: Example, rate: float) -> None: ...

    with pytest.raises(TypeError, match="visualiser"):
        switches_from(Example, parent_defaults={"visualiser": None})(type("Typo", (_Parent,), {
            "init_from_settings": lambda self, settings: None}))

    @dataclass(frozen=True)
    class Clashing(ModelSettings):
        kwargs: int = 0

    with pytest.raises(TypeError, match="kwargs"):
        switches_from(Clashing)(type("Reserved", (_Parent,), {"init_from_settings": lambda self, settings: None}))
