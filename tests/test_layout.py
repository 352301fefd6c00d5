"""serve/ is layered: each package imports only the layers below it, so the runtime can be read alone."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[1] / "serve"
# Lowest first; a module may import its own layer and those before it.
LAYERS = [("serve.config", "serve.errors", "serve.metrics"), ("serve.runtime",), ("serve.ab",), ("serve.api",),
          ("serve.cluster",)]


def layer_of(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("serve.")}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SERVE.parent).with_suffix("").parts).removesuffix(".__init__")


SOURCES = sorted(p for p in SERVE.rglob("*.py") if p.name != "__main__.py")


def test_every_module_belongs_to_a_layer():
    assert [module_name(p) for p in SOURCES if layer_of(module_name(p)) is None] in ([], ["serve"])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path):
    own = layer_of(module_name(path))
    if own is None:
        return
    upward = sorted(m for m in imported_modules(path) if (layer_of(m) or 0) > own)
    assert not upward, f"{module_name(path)} imports a higher layer: {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path):
    """The rule is not vacuous: a runtime module importing the experiment is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from serve.ab.router import ExperimentRouter\n")
    assert {layer_of(m) for m in imported_modules(bad)} == {LAYERS.index(("serve.ab",))}
    assert layer_of("serve.runtime.client") < layer_of("serve.ab.router")
