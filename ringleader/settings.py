"""What every command's settings share: one table per command, written once.

Each `Setting` gives a name, kind, default, help and section. From a command's `Table` come
its flags, the keys its `--config FILE.toml` accepts, the defaults and the validation.
Precedence: a setting's default < the file < the command line.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["str", "path", "int", "float", "bool"]

_TYPES: dict[Kind, type] = {"int": int, "float": float}


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting. `name` is the flag without its dashes and the TOML key.

    Every value, the default included, is converted by `kind` (numbers then pass `check`),
    then handed to `parse`, which gets the flag (`--name`) to name in its errors. A
    repeatable setting's value is a tuple of strings, empty when unset.
    """

    name: str
    kind: Kind
    default: Any
    help: str
    section: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    required: bool = False
    check: Callable[[str, float], None] | None = None
    parse: Callable[[str, Any], Any] | None = None
    # Shown instead of the default where the default alone would mislead (an environment
    # variable that stands in for an unset file, say).
    default_text: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def shown_default(self) -> str | None:
        """The default as the help and the README show it; None when there is none."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return None if self.default is None else str(self.default)


def above_zero(flag: str, number: float) -> None:
    if number <= 0:
        raise ConfigError(f"{flag}: must be above zero, got {number!r}")


@dataclass(frozen=True, slots=True)
class Table:
    """A command's settings, in the order its `--help` lists them."""

    settings: tuple[Setting, ...]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config", metavar="FILE.toml", help="settings file with the same keys as these flags"
        )
        groups: dict[str, argparse._ActionsContainer] = {"": parser}
        for setting in self.settings:
            if setting.section not in groups:
                groups[setting.section] = parser.add_argument_group(setting.section)
            _add_argument(groups[setting.section], setting)

    def load_file(self, path: str) -> dict[str, Any]:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"--config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
        values = {key.replace("_", "-"): value for key, value in data.items()}
        known = {setting.name for setting in self.settings}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"--config {path}: unknown setting {unknown[0]!r}")
        return values

    def from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        """Setting name -> value: the `--config` file's, overlaid by the flags given."""
        values = self.load_file(args.config) if args.config else {}
        for setting in self.settings:
            value = getattr(args, setting.attr)
            if value is not None:
                values[setting.name] = value
        return values

    def parse(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Attribute name -> validated value for every setting, defaults filled in."""
        return {s.attr: _value(s, values.get(s.name, s.default)) for s in self.settings}


def _add_argument(group: argparse._ActionsContainer, setting: Setting) -> None:
    help_text = setting.help
    if setting.repeatable or setting.required:
        help_text += "; repeatable" if setting.repeatable else "; required"
    shown = setting.shown_default
    if shown is not None:
        help_text = f"{help_text} (default {shown})"
    options: dict[str, Any] = {"help": help_text}
    if setting.kind == "bool":
        # None, not False, when absent: the file's value must survive an absent flag.
        options.update(action="store_true", default=None)
    else:
        options.update(metavar=setting.metavar, type=_TYPES.get(setting.kind))
        if setting.choices:
            options["choices"] = setting.choices
        if setting.repeatable:
            options["action"] = "append"
    group.add_argument(setting.flag, **options)


def _value(setting: Setting, value: Any) -> Any:
    if value is None and setting.required:
        raise ConfigError(f"{setting.flag}: required, as a flag or in --config")
    if setting.repeatable:
        value = _strings(setting, value)
    elif value is not None:
        value = _convert(setting, value)
    if setting.parse is None or value is None:
        return value
    return setting.parse(setting.flag, value)


def _strings(setting: Setting, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{setting.flag}: expected a string or a list of strings")


def _convert(setting: Setting, value: Any) -> Any:
    if setting.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{setting.flag}: expected true or false, got {value!r}")
        return value
    if setting.kind in ("int", "float"):
        number = _number(setting, value)
        if setting.check is not None:
            setting.check(setting.flag, number)
        return number
    if not isinstance(value, str) or (setting.kind == "path" and not value):
        expected = "a path" if setting.kind == "path" else "a string"
        raise ConfigError(f"{setting.flag}: expected {expected}, got {value!r}")
    if setting.choices and value not in setting.choices:
        expected = ", ".join(setting.choices)
        raise ConfigError(f"{setting.flag}: expected one of {expected}, got {value!r}")
    return value


def _number(setting: Setting, value: Any) -> float:
    integer = setting.kind == "int"
    try:
        if isinstance(value, bool) or (integer and not float(value).is_integer()):
            raise ValueError(value)
        return int(value) if integer else float(value)
    except (TypeError, ValueError):
        expected = "a whole number" if integer else "a number"
        raise ConfigError(f"{setting.flag}: expected {expected}, got {value!r}") from None
