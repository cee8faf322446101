"""Command-line options derived from a pydantic config's fields, so that each setting is declared
once (name, type, default and help on the field) and the CLI cannot drift from the config.

Every field becomes an option: ``--field-name`` (or the field's ``json_schema_extra["cli"]``,
e.g. ``--max-examples`` or an on/off pair ``--titles/--no-titles``), of the field's type
(``Literal`` -> a choice, ``bool`` -> an on/off pair, ``X | None`` -> ``X``), with the field's
description as its help and the field's default as its default. A nested config's fields
become ``--prefix-field`` options. :func:`given` keeps only the options actually typed (click
knows each value's source), so a config file's value is overridden by an option typed, never
by an option's default; the config validates the merged values, and :func:`option_of` turns
an error's field back into the option that set it.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

CLI_KEY = "cli"  # json_schema_extra key naming a field's option when it is not --field-name
PLAIN_TYPES = (str, int, float, bool)
DEFAULT_SOURCES = ("DEFAULT", "DEFAULT_MAP")  # click's ParameterSource names of a value not typed


@dataclass(frozen=True)
class FieldOption:
    """One option: the field it sets (a path into nested configs) and its typer parameter."""

    path: tuple[str, ...]
    flag: str  # "--lr", or an on/off pair "--titles/--no-titles"
    parameter: inspect.Parameter

    @property
    def names(self) -> list[str]:
        """The option's spellings, e.g. ``["--titles", "--no-titles"]``."""
        return self.flag.split("/")


def _value_type(annotation: Any) -> Any:
    """``X`` of ``X | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _option(path: tuple[str, ...], field: FieldInfo, panel: str | None) -> FieldOption:
    value_type = _value_type(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    name = "_".join(path)
    flag = str(extra.get(CLI_KEY) or "--" + name.replace("_", "-"))
    if not field.description:
        raise TypeError(f"field {'.'.join(path)} has no description (its option's help)")
    metavar, help_text = None, field.description
    if get_origin(value_type) is Literal:  # typer checks the choice; the help lists them
        metavar, help_text = "<choice>", f"{help_text} (one of: {', '.join(map(str, get_args(value_type)))})"
    elif value_type is bool and "/" not in flag:
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
    elif value_type not in PLAIN_TYPES:
        raise TypeError(f"field {'.'.join(path)}: no command-line option for type {field.annotation}")
    default = None if field.default is PydanticUndefined else field.default
    info = typer.Option(flag, help=help_text, metavar=metavar, rich_help_panel=panel)
    annotation = Annotated[Optional[value_type], info]  # type: ignore[valid-type]  # noqa: UP045 (built at run time)
    parameter = inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )
    return FieldOption(path, flag, parameter)


def field_options(
    config: type[BaseModel],
    *,
    skip: Iterable[str] = (),
    panel: str | None = None,
    prefix: tuple[str, ...] = (),
) -> list[FieldOption]:
    """The options of every field of ``config`` (in declaration order) but those in ``skip``."""
    out: list[FieldOption] = []
    for name, field in config.model_fields.items():
        if name in skip:
            continue
        value_type = _value_type(field.annotation)
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            out.extend(field_options(value_type, panel=panel, prefix=(*prefix, name)))
        else:
            out.append(_option((*prefix, name), field, panel))
    return out


def given(
    options: Iterable[FieldOption], values: dict[str, Any], ctx: typer.Context
) -> dict[tuple[str, ...], Any]:
    """The fields set on the command line (not left at their defaults): path -> value."""
    typed: dict[tuple[str, ...], Any] = {}
    for option in options:
        source = ctx.get_parameter_source(option.parameter.name)
        if source is not None and source.name not in DEFAULT_SOURCES:
            typed[option.path] = values[option.parameter.name]
    return typed


def merged(base: dict[str, Any], overrides: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """``base`` (a config file's fields) with each ``path -> value`` set, nested dicts merged."""
    out = dict(base)
    for path, value in overrides.items():
        node = out
        for key in path[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        node[path[-1]] = value
    return out


def option_of(options: Iterable[FieldOption], loc: tuple[Any, ...]) -> str | None:
    """The option that sets the field at a validation error's ``loc``, if one does."""
    for option in options:
        if option.path == tuple(loc):
            return option.flag
    return None
