"""The layers' imports, read from the source: each layer uses only the ones below it.

app/optim (numerics) ← app/store (rows and bytes) ← app/stepping (working sets, the step log
and its replay) ← app/service (the use-cases) ← app/api (HTTP). The store never runs the
optimizer: replaying the step log is the stepping layer's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

FORBIDDEN = {
    "optim": ("app.store", "app.stepping", "app.service", "app.api", "app.schemas"),
    "store": ("app.optim", "app.stepping", "app.service", "app.api"),
    "stepping": ("app.service", "app.api"),
    "service": ("app.api",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (`from app import x` counts
    as `app.x`)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def offending(layer: str) -> list[str]:
    found = []
    for path in sorted((APP / layer).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if any(module == bad or module.startswith(f"{bad}.") for bad in FORBIDDEN[layer]):
                found.append(f"{path.relative_to(APP.parent)} imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_none_above_it(layer):
    assert offending(layer) == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from app import optim\n    import app.service.auth\n")
    assert {"app.optim", "app.service.auth"} <= imported_modules(source)


SHARED_FACTS = ("EXPORT_FORMAT", "PARAM_SLOT", "STEP_SLOT", "ACCUMULATION_SLOT", "HEADER_FIELDS")


def test_the_storage_keys_and_the_export_format_are_defined_once():
    """`optaas_state` (shipped by the client's distribution, imported by the server) is the one
    module that defines them; the server and the client import them from there."""
    root = APP.parent
    sources = [*APP.rglob("*.py"), *(root / "clients" / "python" / "src").rglob("*.py")]
    defining: dict[str, list[str]] = {name: [] for name in SHARED_FACTS}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in defining:
                    defining[target.id].append(path.name)
    assert defining == {name: ["optaas_state.py"] for name in SHARED_FACTS}
