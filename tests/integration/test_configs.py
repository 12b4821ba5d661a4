"""Every shipped config parses with anomalib's own CLI (short names resolve, arguments exist)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("config", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_configs_parse(config: Path, print_config) -> None:  # noqa: ANN001
    out = print_config(["train", "--config", str(config)])
    assert "model:" in out and "data:" in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_data_configs_parse(config: Path, print_config) -> None:  # noqa: ANN001
    out = print_config(["train", "--model", "IMRNet", "--config", str(config)])
    assert "class_path: anomalib_3d.data." in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_configs_parse(config: Path, print_config, tmp_path: Path) -> None:  # noqa: ANN001
    out = print_config(["train", "--config", str(config), "--data", "Real3DAD", "--data.root", str(tmp_path)])
    assert "anomalib_3d_plugins" in out


def _model_class(class_path: str) -> type:
    """The class a config's ``class_path`` names: ``package.module.Class`` or a plugin's short name."""
    import importlib
    from importlib.metadata import entry_points

    if "." in class_path:
        module, name = class_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    (entry_point,) = [ep for ep in entry_points(group="anomalib_3d.models") if ep.name == class_path]
    return entry_point.load()


def _plain(value: object) -> object:
    """Tuples as lists (YAML has only lists), recursively, so equal settings compare equal."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _constructor_arguments(cls: type, given: dict) -> dict:
    """Every ``__init__`` argument of ``cls``: the given values over the signature's defaults."""
    import inspect

    bound = inspect.signature(cls).bind(**given)
    bound.apply_defaults()
    return _plain(dict(bound.arguments))


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*_small.yaml")), ids=lambda p: p.stem)
def test_small_config_matches_small_preset(config: Path) -> None:
    """``configs/models/<name>_small.yaml`` and ``<Model>.small()`` build the same model: the two
    are separate sources of truth for the CPU preset and must not drift apart."""
    from unittest import mock

    import yaml

    model = yaml.safe_load(config.read_text())["model"]
    cls = _model_class(model["class_path"])
    assert hasattr(cls, "small"), f"{cls.__name__} has a *_small.yaml but no small() preset"
    from_yaml = _constructor_arguments(cls, model.get("init_args", {}))
    with mock.patch.object(cls, "__init__", autospec=True, return_value=None) as init:
        cls.small()
    _, *positional = init.call_args.args
    assert not positional, "small() should pass its preset by keyword"
    from_preset = _constructor_arguments(cls, init.call_args.kwargs)
    differing = {k: (from_yaml[k], from_preset[k]) for k in from_yaml if from_yaml[k] != from_preset[k]}
    assert not differing, f"{config.name} (yaml, small()) differ: {differing}"


def test_small_preset_check_catches_a_drift() -> None:
    """The comparison above fails on a one-value difference (it is not vacuous)."""
    import yaml

    from anomalib_3d_plugins.imrnet import IMRNet

    model = yaml.safe_load((CONFIGS / "models" / "imrnet_small.yaml").read_text())["model"]
    drifted = {**model["init_args"], "num_groups": model["init_args"]["num_groups"] + 1}
    assert _constructor_arguments(IMRNet, drifted) != _constructor_arguments(IMRNet, model["init_args"])
    assert _constructor_arguments(IMRNet, {"feature_layers": (1, 2)})["feature_layers"] == [1, 2]


def _model_plugin_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="anomalib_3d.models"))


def _settings_class(model_class: type) -> type:
    settings_class = getattr(model_class, "settings_class", None)
    if settings_class is None:
        pytest.skip(f"{model_class.__name__} declares no settings_class")
    return settings_class


@pytest.mark.parametrize("name", _model_plugin_names())
def test_lightning_signature_lists_every_setting_with_its_default(name: str) -> None:
    """The CLI reads a plugin's switches from its Lightning signature (written from its settings
    dataclass by ``switches_from``): every field is there, with the field's default."""
    import dataclasses
    import inspect

    cls = _model_class(name)
    settings_class = _settings_class(cls)
    parameters = inspect.signature(cls.__init__).parameters
    fields = [field.name for field in dataclasses.fields(settings_class)]
    assert list(parameters)[1 : len(fields) + 1] == fields, f"{name}'s signature does not start with its switches"
    signature_defaults = {n: parameters[n].default for n in fields}
    assert settings_class(**signature_defaults) == settings_class(), (
        f"{name}'s signature defaults differ from {settings_class.__name__}'s"
    )


#: What a config needs to be built here (no pretrained weights on the test machines).
OFFLINE = {
    "BTF": {"pretrained_backbone": False},
    "ThreeDzAL": {"rgb_backbone": None},
    "PointAD": {"backbone": "pointad-tiny-vit", "pretrained": None, "feature_layers": None, "vv_start_layer": None,
                "deep_prompt_depth": None},
}


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_from_yaml_equals_model_from_python(config: Path, tmp_path: Path) -> None:
    """A model built by anomalib's CLI from a config holds the same settings, state-dict entries and
    hyper-parameters as the one built in Python from the same values."""
    import yaml
    from anomalib.cli.cli import AnomalibCLI

    model_config = yaml.safe_load(config.read_text())["model"]
    cls = _model_class(model_config["class_path"])
    settings_class = _settings_class(cls)
    offline = OFFLINE.get(cls.__name__, {})
    flags = [item for name, value in offline.items() for item in (f"--model.{name}", yaml.safe_dump(value).split("\n")[0])]
    cli = AnomalibCLI(
        args=["fit", "--config", str(config), *flags, "--model.visualizer", "false", "--data", "Real3DAD",
              "--data.root", str(tmp_path), "--trainer.logger", "false", "--default_root_dir", str(tmp_path)],
        run=False,
    )
    from_yaml = cli.model
    from_python = cls(**{**model_config.get("init_args", {}), **offline}, visualizer=False)
    assert isinstance(from_yaml.model.settings, settings_class)
    assert from_yaml.model.settings == from_python.model.settings
    yaml_state, python_state = from_yaml.state_dict(), from_python.state_dict()
    assert {k: v.shape for k, v in yaml_state.items()} == {k: v.shape for k, v in python_state.items()}
    assert _plain(dict(from_yaml.hparams)) == _plain(dict(from_python.hparams))
