"""Model switches held once: a frozen settings dataclass per plugin, and the Lightning signature made from it.

anomalib's CLI and YAML configs read a model's switches from its Lightning module's ``__init__``
signature (``anomalib train --model ThreeDzAL --model.grid_size 128``), and Lightning saves the
values found there as hyper-parameters. Each switch is declared once, as a field of a frozen
dataclass deriving from :class:`ModelSettings` (its default, type and doc). The torch model takes
that dataclass; the Lightning module is decorated with :func:`switches_from`, which writes its
``__init__``: every settings field, then the arguments of the module's own
``init_from_settings(self, settings, ...)`` (optimiser, data, anything that is not a network
switch), then ``**kwargs`` for anomalib's components.

A settings object is plain data, not a module: it adds nothing to a model's state dict.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

SettingsT = TypeVar("SettingsT", bound="ModelSettings")


def _coerce(value: Any, hint: Any) -> Any:  # noqa: ANN401
    """``value`` in the type ``hint`` names where YAML or Python gave a looser one: a list for a
    tuple (recursively), an int for a float. Anything else is returned as given."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None or any(option is type(value) for option in options):
            return value
        for option in options:
            coerced = _coerce(value, option)
            if coerced is not value:
                return coerced
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list | tuple):
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(v, items[0]) for v in value)
        if len(items) == len(value):
            return tuple(_coerce(v, item) for v, item in zip(value, items, strict=True))
        return tuple(value)
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the switch ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}."
        raise ValueError(msg)


def check_at_least(name: str, value: float, minimum: float) -> None:
    """Raise ``ValueError`` naming the switch ``name`` unless ``value >= minimum``."""
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value}."
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Base of the per-plugin settings dataclasses (declare them ``@dataclass(frozen=True)``).

    On construction every field is brought to its annotated type where a config gave a looser one
    (YAML lists become tuples, ``1`` becomes ``1.0`` for a float field), so a model built from a
    YAML file and one built in Python hold equal settings. Subclasses check their values in
    :meth:`validate` (raise ``ValueError`` naming the switch; :func:`check_choice` and
    :func:`check_at_least` word the common checks alike in every plugin).
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            coerced = _coerce(value, hints[field.name])
            if coerced is not value:
                object.__setattr__(self, field.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Refuse inconsistent values (``ValueError``); the base accepts everything."""

    def replace(self: SettingsT, **changes: Any) -> SettingsT:  # noqa: ANN401
        """A copy with ``changes`` applied (checked like a new one)."""
        return dataclasses.replace(self, **changes)


_FIELD_LINE = re.compile(r"([A-Za-z_]\w*)\s*:")


def switch_docs(settings_type: type[ModelSettings]) -> dict[str, str]:
    """The doc of every field of a settings dataclass, by name, in field order.

    A field's doc is the run of ``#:`` comment lines right above it; a run above several consecutive
    fields documents each of them. A blank line or a plain ``#`` comment ends a run. Fields inherited
    from a settings base are included.
    """
    docs: dict[str, str] = {}
    for klass in reversed(settings_type.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is ModelSettings:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (frozen application): no docs, never an error
            continue
        own = {field.name for field in dataclasses.fields(klass)}
        run: list[str] = []
        reading_comment = False
        for line in source.splitlines()[1:]:
            text = line.strip()
            if text.startswith("#:"):
                run = run if reading_comment else []
                run.append(text[2:].strip())
                reading_comment = True
                continue
            reading_comment = False
            match = _FIELD_LINE.match(text)
            if match and match.group(1) in own:
                if run:
                    docs.setdefault(match.group(1), " ".join(run))
            else:
                run = []
    names = [field.name for field in dataclasses.fields(settings_type)]
    return {name: docs[name] for name in names if name in docs}


def _switch_doc(settings_type: type[ModelSettings], cls: type) -> str:
    """The ``__init__`` docstring of a module decorated by :func:`switches_from`: an ``Args:`` entry
    per switch (jsonargparse reads it for ``--model.help``), taken from the settings' field docs."""
    lines = [
        f"Build {cls.__name__}; every switch below is a field of "
        f":class:`~{settings_type.__module__}.{settings_type.__qualname__}` (the other arguments: "
        f":meth:`{cls.__name__}.init_from_settings`).",
        "",
        "Args:",
    ]
    for name, doc in switch_docs(settings_type).items():
        wrapped = textwrap.wrap(doc, width=92) or [""]
        lines.append(f"    {name}: {wrapped[0]}")
        lines.extend(f"        {more}" for more in wrapped[1:])
    return "\n".join(lines) + "\n"


def _type_hints(obj: Any) -> dict[str, Any]:  # noqa: ANN401
    """``obj``'s annotations evaluated where possible (a name only known to type checkers stays a string)."""
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):
        return dict(getattr(obj, "__annotations__", {}))


# The written __init__: its own names carry the _switches_ prefix, which no argument may take.
_INIT_TEMPLATE = """
def make(__class__, _switches_type, _switches_defaults, _switches_prepare):
    def __init__(self, {parameters}**kwargs):
{prepare_lines}        _switches_settings = _switches_type({settings_arguments})
        super(__class__, self).__init__({parent_arguments}**kwargs)
        self.init_from_settings(_switches_settings, {own_arguments})
    return __init__
"""
_RESERVED = ("self", "kwargs", "__class__")


def switches_from(
    settings_type: type[ModelSettings],
    prepare: Mapping[str, Callable[[Any], Any]] | None = None,
    parent_defaults: Mapping[str, Any] | None = None,
) -> Callable[[type], type]:
    """Class decorator: write a Lightning module's ``__init__`` from ``settings_type`` and its own arguments.

    The decorated class defines ``init_from_settings(self, settings, <own arguments with defaults>)``
    instead of ``__init__``. The written ``__init__`` takes every field of ``settings_type`` (same
    name, default and type), then those own arguments, then ``parent_defaults``, then ``**kwargs``.
    It builds the settings (so a bad value fails before anything else), calls the next ``__init__``
    in the MRO with ``parent_defaults`` and ``**kwargs`` (anomalib's components; ``AnomalibModule``
    saves the hyper-parameters from this signature) and then ``init_from_settings``. It is an ordinary function with real parameters,
    so ``inspect.signature``, jsonargparse and Lightning's hyper-parameter collection read it as if
    written by hand.

    Args:
        settings_type: the plugin's :class:`ModelSettings` dataclass.
        prepare: per argument name, a conversion applied before anything else (the converted value
            is the one saved as a hyper-parameter: e.g. configs turned into plain dicts so that a
            checkpoint stays loadable with ``weights_only``).
        parent_defaults: arguments of the parent ``__init__`` (``AnomalibModule``'s components) listed
            with another default than the parent's, e.g. ``{"pre_processor": False}``; passed to it
            by name. Listed, not left to ``**kwargs``: the CLI would otherwise fill in the parent's
            default.

    Raises:
        TypeError: the class has no ``init_from_settings``, defines its own ``__init__``, or one of
            its own arguments has no default or repeats a switch name, or an argument name is
            reserved (``self``, ``kwargs``, ``_switches_*``).
    """
    prepare = dict(prepare or {})
    parent_defaults = dict(parent_defaults or {})

    def decorate(cls: type) -> type:
        if "__init__" in cls.__dict__ or not callable(getattr(cls, "init_from_settings", None)):
            msg = f"{cls.__name__} must define init_from_settings(self, settings, ...) and no __init__ of its own."
            raise TypeError(msg)
        fields = [field for field in dataclasses.fields(settings_type) if field.init]
        switch_names = [field.name for field in fields]
        own = list(inspect.signature(cls.init_from_settings).parameters.values())[2:]
        bad = [p.name for p in own if p.default is inspect.Parameter.empty or p.name in switch_names
               or p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        parent_init = super(cls, cls).__init__  # type: ignore[misc]
        parent_parameters = inspect.signature(parent_init).parameters
        bad += [name for name in parent_defaults if name not in parent_parameters or name in switch_names]
        unknown = sorted(set(prepare) - set(switch_names) - {p.name for p in own} - set(parent_defaults))
        if bad or unknown:
            msg = (f"{cls.__name__}.init_from_settings: arguments {bad} need a default and a name that is not a "
                   f"switch of {settings_type.__name__}; prepare names unknown arguments {unknown}.")
            raise TypeError(msg)
        defaults = {field.name: field.default for field in fields} | {p.name: p.default for p in own} | parent_defaults
        names = [*switch_names, *(p.name for p in own), *parent_defaults]
        reserved = [name for name in names if name in _RESERVED or name.startswith("_switches_")]
        if reserved:
            msg = f"{cls.__name__}: {reserved} cannot be argument names of a written __init__."
            raise TypeError(msg)
        source = _INIT_TEMPLATE.format(
            parameters="".join(f"{name}=_switches_defaults[{name!r}], " for name in names),
            prepare_lines="".join(f"        {name} = _switches_prepare[{name!r}]({name})\n" for name in prepare),
            settings_arguments=", ".join(f"{name}={name}" for name in switch_names),
            own_arguments=", ".join(f"{p.name}={p.name}" for p in own),
            parent_arguments="".join(f"{name}={name}, " for name in parent_defaults),
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<{cls.__module__}.{cls.__qualname__}.__init__>", "exec"), namespace)  # noqa: S102
        init = namespace["make"](cls, settings_type, defaults, prepare)
        init.__module__ = cls.__module__
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        own_hints = _type_hints(cls.init_from_settings)
        parent_hints = _type_hints(parent_init)
        init.__annotations__ = {
            **{name: hint for name, hint in _type_hints(settings_type).items() if name in switch_names},
            **{p.name: own_hints.get(p.name, p.annotation) for p in own},
            **{name: parent_hints.get(name, parent_parameters[name].annotation) for name in parent_defaults},
            "kwargs": Any,
            "return": None,
        }
        init.__doc__ = _switch_doc(settings_type, cls)
        cls.__init__ = init
        cls.settings_class = settings_type
        return cls

    return decorate


__all__ = ["ModelSettings", "check_at_least", "check_choice", "switch_docs", "switches_from"]
