"""Model switches held once: a frozen settings dataclass per plugin, built from its Lightning module.

A plugin's Lightning module must list every switch in its ``__init__`` signature (anomalib's CLI
and YAML configs read it: ``anomalib train --model ThreeDzAL --model.grid_size 128``). Its torch
model does not list them again: it takes one frozen dataclass deriving from :class:`ModelSettings`,
one field per switch with its default and its doc, and the Lightning module builds it with
:func:`settings_from`. A test compares the two lists (names and defaults), so they cannot drift.

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


def settings_from(settings_type: type[SettingsT], arguments: Mapping[str, Any]) -> SettingsT:
    """The ``settings_type`` whose fields are read from a Lightning module's constructor arguments.

    Args:
        settings_type: a :class:`ModelSettings` dataclass.
        arguments: the module's arguments by name (its ``locals()`` in ``__init__``); names that
            are not fields (data, optimiser, anomalib components) are ignored.

    Raises:
        TypeError: a field is missing from ``arguments``: the Lightning signature lacks a switch of
            its settings (it would otherwise fall back to its default unseen).
    """
    names = [field.name for field in dataclasses.fields(settings_type) if field.init]
    missing = [name for name in names if name not in arguments]
    if missing:
        msg = f"{settings_type.__name__} needs {missing}, which the constructor arguments do not provide."
        raise TypeError(msg)
    return settings_type(**{name: arguments[name] for name in names})


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


def document_switches(settings_type: type[ModelSettings]) -> Callable[[type], type]:
    """Class decorator for a Lightning module whose switches are ``settings_type``'s fields.

    The module's ``__init__`` docstring gains an ``Args:`` entry per switch, taken from the settings
    (:func:`switch_docs`), so that ``anomalib train --model X --model.help X`` (jsonargparse reads the
    class and ``__init__`` docstrings) describes every flag while the docs are written once.
    """

    def decorate(cls: type) -> type:
        if "__init__" not in cls.__dict__:
            msg = f"{cls.__name__} must define its own __init__ listing the switches of {settings_type.__name__}."
            raise TypeError(msg)
        lines = [
            f"Build {cls.__name__}; every switch below is a field of "
            f":class:`~{settings_type.__module__}.{settings_type.__qualname__}`.",
            "",
            "Args:",
        ]
        for name, doc in switch_docs(settings_type).items():
            wrapped = textwrap.wrap(doc, width=92) or [""]
            lines.append(f"    {name}: {wrapped[0]}")
            lines.extend(f"        {more}" for more in wrapped[1:])
        cls.__init__.__doc__ = "\n".join(lines) + "\n"
        return cls

    return decorate


__all__ = ["ModelSettings", "check_at_least", "check_choice", "document_switches", "settings_from", "switch_docs"]
