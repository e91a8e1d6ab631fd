"""The layering contract: s2s's rooms (top-level modules and packages) from the bottom up; a
room imports only rooms below it, and no module imports one that imports it back.

Arrows point down, so each room can be read and tested with only what is under it. A change
that needs an upward import moves the shared piece into a lower room instead (the training
loss lives in s2s.model so that validation and training both stand on it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "s2s"

# bottom first; rooms on one line may not import each other
LAYERS = [
    {"s2s.errors", "s2s.tokens", "s2s.files"},
    {"s2s.config"},
    {"s2s.device", "s2s.report", "s2s.allocator", "s2s.rundir"},
    {"s2s.data"},
    {"s2s.model"},
    {"s2s.search", "s2s.run"},
    {"s2s.translation"},
    {"s2s.evaluation", "s2s.plots"},
    {"s2s.training"},
    {"s2s.serve", "s2s.export"},
    {"s2s.cli"},
    {"s2s.__main__"},
]


def _module_imports() -> dict[str, set[str]]:
    """Each s2s module's imports of other s2s modules (anywhere in it, functions included)."""
    modules = {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
               .removesuffix(".__init__"): path for path in PACKAGE.rglob("*.py")}
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        imports[name] = {module for module in found if module in modules and module != name}
    return imports


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_room_is_in_the_contract() -> None:
    rooms = {_room(module) for module in _module_imports()} - {"s2s"}
    assert rooms == set().union(*LAYERS), "add the new room to LAYERS, at its level"


def test_rooms_import_only_rooms_below_them() -> None:
    level = {room: index for index, rooms in enumerate(LAYERS) for room in rooms}
    upward = sorted(f"{module} imports {target}"
                    for module, targets in _module_imports().items() if _room(module) != "s2s"
                    for target in targets
                    if _room(target) != _room(module) and _room(target) != "s2s"
                    and level[_room(target)] >= level[_room(module)])
    assert not upward, "\n".join(upward)


def test_no_module_imports_one_that_imports_it_back() -> None:
    imports = _module_imports()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(imports[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(imports):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)
