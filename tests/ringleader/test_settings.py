"""One settings table gives a command its flags, its `--config` keys, defaults and checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from ringleader.settings import ConfigError, Setting, Table, above_zero


def _upper(flag: str, text: str) -> str:
    return text.upper()


TABLE = Table((
    Setting("name", "str", "n", "a name", parse=_upper),
    Setting("count", "int", 2, "how many", metavar="N", check=above_zero),
    Setting("ratio", "float", 0.5, "a share", "numbers"),
    Setting("mode", "str", "a", "a mode", choices=("a", "b")),
    Setting("item", "str", None, "an item", repeatable=True),
    Setting("on", "bool", False, "a switch"),
    Setting("dir", "path", None, "a directory", required=True),
))  # fmt: skip


def parsed(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    TABLE.add_arguments(parser)
    return TABLE.parse(TABLE.from_args(parser.parse_args(argv)))


def test_defaults_fill_what_is_not_given() -> None:
    assert parsed(["--dir", "d"]) == {
        "name": "N", "count": 2, "ratio": 0.5, "mode": "a", "item": (), "on": False, "dir": "d",
    }  # fmt: skip


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('dir = "d"\ncount = 3\nitem = ["x", "y"]\non = true\nmode = "b"\n')
    values = parsed(["--config", str(path), "--count", "4", "--item", "z"])
    assert (values["count"], values["item"], values["on"], values["mode"]) == (4, ("z",), True, "b")


def test_help_shows_each_default_once() -> None:
    parser = argparse.ArgumentParser()
    TABLE.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "how many (default 2)" in text
    assert "a switch (default off)" in text
    assert "an item; repeatable" in text
    assert "numbers:" in text  # the section is an argument group


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({}, "--dir: required"),
        ({"dir": ""}, "--dir: expected a path"),
        ({"dir": "d", "count": 0}, "--count: must be above zero"),
        ({"dir": "d", "count": 1.5}, "--count: expected a whole number"),
        ({"dir": "d", "ratio": "x"}, "--ratio: expected a number"),
        ({"dir": "d", "mode": "c"}, "--mode: expected one of a, b, got 'c'"),
        ({"dir": "d", "item": 5}, "--item: expected a string or a list of strings"),
        ({"dir": "d", "on": "yes"}, "--on: expected true or false"),
        ({"dir": "d", "name": 5}, "--name: expected a string"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=f"^{says}"):
        TABLE.parse(values)


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('dir = "d"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        TABLE.load_file(str(path))
