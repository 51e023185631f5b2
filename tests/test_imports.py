"""The stairs go one way: no module imports a room above its own (function-level imports too).

Rooms, from the top: entry points and studies; the data producers (synthetic world,
preparation); models, their evaluation and callbacks; the dataset readers and format schemas;
geometry and metrics; utilities. A room may import its own level and any level below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "occaist"

#: Room of each top-level module or package of ``occaist`` (higher number = higher room).
LEVELS = {
    "cli": 5, "tasks": 5, "train": 5, "evaluate": 5, "pipelines": 5, "predict": 5,
    "stylize": 5,
    "synth": 4, "prep": 4,
    "models": 3, "evaluation": 3, "callbacks": 3,
    "data": 2,
    "geometry": 1, "metrics": 1,
    "schemas": 0, "utils": 0, "_lazy": 0, "conf": 0, "__init__": 0,
}  # fmt: skip


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``occaist`` import in a file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("occaist")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "occaist":
                found += [(node.lineno, f"occaist.{a.name}") for a in node.names]
            elif node.module.startswith("occaist."):
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)


def test_every_room_has_a_level() -> None:
    rooms = {_room("occaist." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
             for p in _modules()}  # fmt: skip
    assert rooms <= set(LEVELS), sorted(rooms - set(LEVELS))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_import(path: Path) -> None:
    here = _room("occaist." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    upward = [
        f"line {line}: {module} ({_room(module)} is above {here})"
        for line, module in _imports(path)
        if LEVELS.get(_room(module), 0) > LEVELS[here]
    ]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The oracle itself: a function-level import of a higher room is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from occaist.synth import generate_world\n")
    assert _imports(source) == [(2, "occaist.synth")]
