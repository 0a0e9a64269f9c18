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


PAGE_SHARED_NAMES = "analytics.names"  # the one engine module a page may import whole


def refused_engine_imports(source: str) -> list[str]:
    """What ``source`` (a page) imports from the engine besides :mod:`analytics.names` and the
    engine's exception types, as dotted names."""
    refused = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            refused += [a.name for a in node.names
                        if a.name.split(".")[0] == "analytics" and a.name != PAGE_SHARED_NAMES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "analytics":
            if node.module == PAGE_SHARED_NAMES:
                continue
            if node.module == "analytics":
                refused += [f"analytics.{a.name}" for a in node.names if f"analytics.{a.name}" != PAGE_SHARED_NAMES]
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if not (isinstance(value, type) and issubclass(value, Exception)):
                    refused.append(f"{node.module}.{alias.name}")
    return refused


@pytest.mark.parametrize("path", sorted((ROOT / "views").glob("*.py")), ids=lambda p: p.name)
def test_pages_reach_the_engine_only_through_ui(path):
    """Pages import from the engine only its shared names and its exception types; everything
    else goes through ui/."""
    refused = refused_engine_imports(path.read_text())
    assert not refused, f"{path.name} imports {', '.join(refused)}; go through ui/ instead"


MAX_PAGE_LINES = 150


@pytest.mark.parametrize("path", sorted((ROOT / "views").glob("*.py")), ids=lambda p: p.name)
def test_pages_are_thin(path):
    """A page reads widgets, calls ui/ and renders; its panels live in ui/ modules with explicit
    parameters (STYLE.md convention 7)."""
    lines = len(path.read_text().splitlines())
    assert lines < MAX_PAGE_LINES, f"{path.name} has {lines} lines; move its panels into ui/"


@pytest.mark.parametrize("source, refused", [
    ("from analytics.names import MAP_COLUMNS, REGIONS", []),
    ("from analytics import names", []),
    ("import analytics.names as names", []),
    ("from analytics.impact import ImpactError", []),
    ("from analytics.store import ReviewError, ReviewStore", ["analytics.store.ReviewStore"]),
    ("from analytics.impact import run_experiment", ["analytics.impact.run_experiment"]),
    ("from analytics.scores.regions import REGIONS", ["analytics.scores.regions.REGIONS"]),
    ("from analytics import names, pipeline", ["analytics.pipeline"]),
    ("import analytics.pipeline", ["analytics.pipeline"]),
    ("def draw():\n    from analytics.export import export_subset\n", ["analytics.export.export_subset"]),
])
def test_the_page_rule_refuses_every_other_engine_import(source, refused):
    assert refused_engine_imports(source) == refused


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


def cache_module_strays(source: str) -> list[str]:
    """Top-level functions of a cache module that neither carry an ``st.cache_*`` decorator nor
    use the module's own cached functions or caches (plain pass-throughs to the engine)."""
    tree = ast.parse(source)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    own = {node.name for node in functions}
    own |= {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}
    strays = []
    for node in functions:
        decorators = [ast.unparse(d) for d in node.decorator_list]
        if any(d.startswith(("st.cache_data", "st.cache_resource")) for d in decorators):
            continue
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - {node.name}
        caches = {ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        if not (used & own) and not any(c.startswith(("st.cache_data", "st.cache_resource")) for c in caches):
            strays.append(node.name)
    return strays


def test_the_cache_module_holds_only_caches():
    """ui/cached.py keeps the st.cache_* functions and the readers built on them; a plain call
    into the engine belongs in ui/actions.py (issue 16)."""
    # run_stamp is the caches' key for a run folder (its manifest's mtime and size)
    assert cache_module_strays((ROOT / "ui" / "cached.py").read_text()) == ["run_stamp"]
    plain = "from analytics.x import f\n\ndef g(a):\n    return f(a)\n"
    cached = "import streamlit as st\n\n@st.cache_data\ndef _g(a):\n    return a\n\ndef g(a):\n    return _g(a)\n"
    assert cache_module_strays(plain) == ["g"] and cache_module_strays(cached) == []


MAX_BODY_LINES = 60     # issue 16: "no function in analytics/ or ui/ longer than about 60 lines"
MAX_FUNCTION_LINES = 100  # with its docstring


def long_functions(source: str) -> list[str]:
    """Functions (nested ones too) longer than MAX_BODY_LINES lines without the docstring (the
    ``def`` line included), or than MAX_FUNCTION_LINES with it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        total = node.end_lineno - node.lineno + 1
        first = node.body[0]
        docstring = (first.end_lineno - first.lineno + 1 if isinstance(first, ast.Expr)
                     and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str) else 0)
        if total - docstring > MAX_BODY_LINES or total > MAX_FUNCTION_LINES:
            found.append(f"{node.name} ({total} lines, {total - docstring} without its docstring)")
    return found


@pytest.mark.parametrize("path", ANALYTICS + sorted((ROOT / "ui").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_short(path):
    """Split a long function along its seams into named helpers (STYLE.md; issue 16)."""
    assert long_functions(path.read_text()) == []


def test_the_length_rule_counts_the_body_without_the_docstring():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY_LINES - 1))  # and the def line
    doc = '    """' + "\n".join(["a"] * 30) + '"""\n'
    assert long_functions(f"def f():\n{doc}{body}\n") == []
    assert long_functions(f"def f():\n{doc}{body}\n    x = 1\n") == ["f (91 lines, 61 without its docstring)"]
