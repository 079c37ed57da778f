"""The README's flag tables match the commands' settings tables: every flag of a command is
documented with its default in that command's README sections, and every documented flag
exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from control.settings import SETTINGS as CONTROL
from proxy.config import SETTINGS as PROXY
from ringleader.settings import Setting, Table

README = Path(__file__).resolve().parent.parent / "README.md"
# Command -> its settings table and the README sections ("## ...") whose flag tables document it.
COMMANDS: dict[str, tuple[Table, tuple[str, ...]]] = {
    "proxy": (PROXY, ("`ringleader proxy` settings", "HTTP cache")),
    "control": (CONTROL, ("Control plane",)),
}
FLAG = re.compile(r"`(--[a-z0-9-]+)[^`]*`")


def documented(sections: tuple[str, ...]) -> dict[str, str]:
    """Flag -> default cell, from the tables headed `| flag | default | ... |` in `sections`."""
    found: dict[str, str] = {}
    for section in README.read_text().split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        if title.strip() not in sections:
            continue
        in_table = False
        for line in body.splitlines():
            if line.startswith("| flag | default |"):
                in_table = True
            elif not line.startswith("|"):
                in_table = False
            elif in_table and not line.startswith("|---"):
                flags_cell, default_cell = line.split("|")[1:3]
                flags = FLAG.findall(flags_cell)
                # "`--a S`, `--b S` | 0.5, 0.25": one default each; a single cell covers all.
                defaults = [d.strip() for d in default_cell.split(",")]
                if len(defaults) != len(flags):
                    defaults = [default_cell.strip()] * len(flags)
                found.update(zip(flags, defaults, strict=True))
    return found


def same_default(readme: str, setting: Setting) -> bool:
    # The README may explain a default in parentheses: "1048576 (also the maximum: ...)".
    text = readme.split(" (")[0].strip("`")
    shown = setting.shown_default or ""
    try:
        return float(text) == float(shown)
    except ValueError:
        return text == shown


CODE_FLAGS = [
    pytest.param(command, setting, id=f"{command} {setting.flag}")
    for command, (table, _) in COMMANDS.items()
    for setting in table.settings
]


@pytest.mark.parametrize(("command", "setting"), CODE_FLAGS)
def test_every_flag_is_documented_with_its_default(command: str, setting: Setting) -> None:
    readme = documented(COMMANDS[command][1])
    assert setting.flag in readme, f"README does not document `ringleader {command}` {setting.flag}"
    assert same_default(readme[setting.flag], setting), (
        f"README gives {setting.flag} the default {readme[setting.flag]!r}, "
        f"the code {setting.shown_default!r}"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_flag_exists(command: str) -> None:
    table, sections = COMMANDS[command]
    flags = {setting.flag for setting in table.settings}
    readme = documented(sections)
    assert readme, f"no flag table found in README sections {sections}"
    assert sorted(set(readme) - flags) == []
