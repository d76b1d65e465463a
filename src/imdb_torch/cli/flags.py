"""Command-line flags made from the settings' dataclasses (``config.py``).

Each field becomes ``--field-name`` with the field's help text and default. The parsed
namespace holds only the flags that were given (``argparse.SUPPRESS``), so "was this flag
given?" needs no second parse, and ``--no-bidirectional`` counts as given.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from ..config import setting_names


def add_setting_flags(group, config_class, skip: tuple[str, ...] = (), only=None) -> None:
    """One flag per field of ``config_class`` (or of its fields in ``only``) in ``group``."""
    hints = typing.get_type_hints(config_class)
    for f in fields(config_class):
        if f.name not in skip and (only is None or f.name in only):
            group.add_argument(f"--{f.name.replace('_', '-')}", **_flag_options(f, hints[f.name]))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, by name (only those: see the module's doc)."""
    names = setting_names()
    return {key: value for key, value in vars(args).items() if key in names}


def _flag_options(f: Field, hint) -> dict[str, Any]:
    meta = dict(f.metadata)
    help_text = meta.pop("help")
    kind = _base_type(hint)
    options: dict[str, Any] = {"default": argparse.SUPPRESS, **meta}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    else:
        options["type"] = _number(kind) if kind in (int, float) else kind
    if "default" in help_text:  # the text says it in its own words
        pass
    elif kind is bool:
        help_text += " (default: on)" if f.default else " (default: off)"
    elif f.default is not MISSING and f.default is not None:
        help_text += f" (default {f.default:g})" if kind is float else f" (default {f.default})"
    options["help"] = help_text
    return options


def _base_type(hint):
    """``float | None`` → ``float``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return kind
    return hint


KIND_NAMES = {int: "a whole number", float: "a number"}


def _number(kind):
    """``int`` or ``float`` with argparse's one-line error for text that is not one."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {KIND_NAMES[kind]}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse
