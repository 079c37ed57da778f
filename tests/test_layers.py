"""The layer rules (README, "Layout"): `proxy` and `control` use the shared `ringleader`
package and never each other; `ringleader` uses neither, except in the `ringleader`
command itself (`cli`, `up`), which starts both. Every import counts, also one inside a
function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ringleader", "proxy", "control")
# Module -> the top-level packages it may import besides its own and `ringleader`.
ENTRY_POINTS = {"ringleader.cli": {"proxy", "control"}, "ringleader.up": {"proxy", "control"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_packages(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    name = module_name(path)
    own = name.split(".")[0]
    allowed = {own, "ringleader"} | ENTRY_POINTS.get(name, set())
    crossing = imported_packages(ast.parse(path.read_text(), str(path))) - allowed
    assert not crossing, f"{name} imports {sorted(crossing)}: see the layer rules in README"


def test_the_walk_sees_every_package() -> None:
    seen = {module_name(path).split(".")[0] for path in modules()}
    assert seen == set(PACKAGES)


def test_the_walk_catches_a_lazy_import() -> None:
    tree = ast.parse("def f():\n    from control.node import RaftNode\n    import proxy.kv\n")
    assert imported_packages(tree) == {"control", "proxy"}
