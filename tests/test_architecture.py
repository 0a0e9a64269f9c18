"""House rules that keep the engine usable without the UI (see shared STYLE.md)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANALYTICS = sorted((ROOT / "analytics").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", ANALYTICS, ids=lambda p: p.name)
def test_analytics_never_imports_the_ui(path):
    assert not imported_modules(path) & {"streamlit", "ui", "pages", "plotly"}


@pytest.mark.parametrize("path", sorted((ROOT / "views").glob("*.py")), ids=lambda p: p.name)
def test_pages_reach_the_engine_only_through_ui(path):
    """Pages may import analytics only for types and constants, never compute directly."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analytics"):
            pytest.fail(f"{path.name} imports {node.module}; go through ui.cached instead")


@pytest.mark.parametrize("path", [p for p in ANALYTICS if p.name != "__init__.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_public_api_is_declared(path):
    dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    module = importlib.import_module(dotted)
    exported = getattr(module, "__all__", None)
    assert exported, f"{path.name} declares no __all__"
    for name in exported:
        assert hasattr(module, name), f"{path.name} exports {name} but does not define it"


def test_no_module_shadows_the_standard_library():
    """A file named like a stdlib module (select.py broke Playwright once) is refused."""
    import sys

    ours = {p.stem for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    assert not ours & set(sys.stdlib_module_names) - {"__init__"}


def test_no_pages_folder_next_to_the_entry_script():
    """A folder named pages/ beside app.py switches Streamlit to its legacy multipage mode until
    st.navigation runs, so a deep link on a fresh server skipped app.py (no sidebar, no data)."""
    assert not (ROOT / "pages").exists()
