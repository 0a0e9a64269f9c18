"""Driving the browser scatter (ui/scatter) from Playwright: open the Map, pick a tool, drag a
box or a lasso, and the geometric truth of what the drag should select, from the run's file."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from analytics.datasets import load_dataset
from analytics.pipeline import AnalysisConfig, run_dir_for
from analytics.samples import sample_by_key
from analytics.workspace import Workspace
from ui.figures import points_in_polygon

SCATTER = "iframe[title='ui.scatter.scatter']"


def console_errors(page) -> list[str]:
    """Errors the page and its frames write to the console from now on (with their source).

    Streamlit's own frontend, opened at a page's address (``/map``), first asks for
    ``/map/_stcore/health`` and ``/map/_stcore/host-config`` and gets 404s before it finds the
    server's root: those failed loads are left out, nothing else.
    """
    errors: list[str] = []

    def record(message) -> None:
        url = message.location.get("url", "")
        if message.type == "error" and not ("/_stcore/" in url and message.text.startswith("Failed to load resource")):
            errors.append(f"{message.text} ({url})")

    page.on("console", record)
    return errors


def scatter(page):
    """The scatter's iframe."""
    return page.frame_locator(SCATTER).first


def root(page):
    return scatter(page).locator("#root")


def wait_drawn(page, n: int, *, timeout: float = 60_000) -> None:
    """Until the scatter has drawn all ``n`` points."""
    expect(root(page)).to_have_attribute("data-drawn", str(n), timeout=timeout)


def open_map(page, app_url: str, n: int = 1549) -> None:
    """The Map of the session's current dataset (the bundled Debian packages by default)."""
    page.goto(f"{app_url}/map")
    expect(page.get_by_role("heading", name="Map", exact=True)).to_be_visible(timeout=60_000)
    wait_drawn(page, n)


def open_run_folder(page, run, *, timeout: float = 120_000) -> None:
    """Sidebar → Dataset → "Open a file or folder…" → the run folder ``run``, until the page says
    which run is open."""
    page.locator("[data-testid=stSelectbox]").filter(has_text="Dataset").first.click()
    page.get_by_role("option", name="Open a file or folder…", exact=True).click()
    box = page.get_by_role("textbox", name="Path to a file or image folder")
    box.fill(str(run))
    box.press("Enter")
    page.get_by_text(re.compile(r"Run of .* examples")).first.wait_for(timeout=timeout)


def x_domain(page) -> list[float]:
    """The data range the plot shows horizontally."""
    return view(page, "v => v.plot.get('xScale').domain()")


def wait_x_span(page, smaller_than: float | None = None, larger_than: float | None = None,
                timeout: float = 30_000) -> None:
    """Until the width of the plot's horizontal range is below ``smaller_than`` or above ``larger_than``."""
    page.wait_for_function(
        "([frame, low, high]) => { const d = document.querySelector(frame).contentWindow.scatterView.plot"
        ".get('xScale').domain(); const span = Math.abs(d[1] - d[0]);"
        " return (high === null || span < high) && (low === null || span > low); }",
        arg=[SCATTER, larger_than, smaller_than], timeout=timeout)


def zoom_in(page, wheel: float = 500, timeout: float = 30_000) -> list[float]:
    """Scroll up over the middle of the plot until it shows under 4/5 of its horizontal range;
    returns the range before."""
    box = canvas_box(page)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    before = x_domain(page)
    page.mouse.wheel(0, -wheel)
    wait_x_span(page, smaller_than=0.8 * abs(before[1] - before[0]), timeout=timeout)
    return before


def selected_rows(page) -> np.ndarray:
    """The rows the scatter draws as selected (the selection the server sent back)."""
    return np.asarray(view(page, "v => { const out = []; for (let r = 0; r < v.w.length; r++) "
                                 "if (v.w[r] === 3) out.push(r); return out; }"), dtype=np.int64)


def view(page, expression: str, arg=None):
    """Evaluate ``expression`` (a function of the ScatterView and ``arg``) in the scatter's iframe."""
    return root(page).evaluate(f"(element, arg) => ({expression})(window.scatterView, arg)", arg)


def canvas_box(page) -> dict:
    """The plot canvas in page coordinates."""
    return scatter(page).locator("canvas").bounding_box()


def use_tool(page, tool: str) -> None:
    scatter(page).locator(f"button[data-tool={tool}]").click()
    expect(scatter(page).locator(f"button[data-tool={tool}]")).to_have_class(re.compile("active"))


def drag(page, path: list[tuple[float, float]], *, steps: int = 3) -> None:
    """Press at the first point of ``path`` (page coordinates), move along it, release."""
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def drag_box(page, left: float, top: float, right: float, bottom: float) -> None:
    """A box drag between fractions of the canvas (0..1, may lie outside it)."""
    box = canvas_box(page)
    drag(page, [(box["x"] + box["width"] * left, box["y"] + box["height"] * top),
                (box["x"] + box["width"] * right, box["y"] + box["height"] * bottom)], steps=12)


def drag_circle(page, cx: float, cy: float, radius: float, vertices: int = 24) -> None:
    """A lasso around a circle (centre and radius as fractions of the canvas height)."""
    box = canvas_box(page)
    angles = np.linspace(0, 2 * np.pi, vertices)
    path = [(box["x"] + box["width"] * cx + box["height"] * radius * np.cos(a),
             box["y"] + box["height"] * (cy + radius * np.sin(a))) for a in angles]
    drag(page, path)


def last_shape(page) -> dict:
    """The box or lasso of the last selection, in data coordinates, as the browser used it."""
    return view(page, "v => v.lastShape")


def selection_heading(page):
    return page.get_by_text(re.compile(r"Selection · [\d,]+ examples"))


def wait_selection(page, count: int) -> None:
    """Until the selection panel and the scatter both show ``count`` selected examples."""
    expect(page.get_by_text(f"Selection · {count:,} examples", exact=True)).to_be_visible(timeout=30_000)
    expect(root(page)).to_have_attribute("data-selected", str(count), timeout=30_000)


def run_points(analysed_workspace, sample: str = "debian-packages") -> pd.DataFrame:
    """The run's examples (ids and coordinates) as the app reads them."""
    dataset = load_dataset(sample_by_key(sample).path, roles=sample_by_key(sample).roles)
    folder = run_dir_for(dataset, AnalysisConfig(), Workspace(analysed_workspace))
    return pd.read_parquet(folder / "examples.parquet")


def inside(points: pd.DataFrame, shape: dict, columns: tuple[str, str] = ("x", "y")) -> np.ndarray:
    """(n,) bool: the points inside a shape in data coordinates, by geometry (float32 coordinates
    compared in float64, as the browser does)."""
    x = points[columns[0]].to_numpy(np.float32).astype(np.float64)
    y = points[columns[1]].to_numpy(np.float32).astype(np.float64)
    xs, ys = np.asarray(shape["x"], float), np.asarray(shape["y"], float)
    if shape["kind"] == "box":
        return (x >= xs.min()) & (x <= xs.max()) & (y >= ys.min()) & (y <= ys.max())
    return points_in_polygon(x, y, xs, ys)


def table_ids(page) -> list[str]:
    """The ids in the selection panel's table (its first rows)."""
    grid = page.locator("[data-testid=stDataFrame]").last
    expect(grid.locator("td").first).to_be_attached()
    rows = grid.locator("[role=row]").all()[1:]  # skip the header row
    return [row.locator("td").first.inner_text() for row in rows if row.locator("td").count()]


def expect_table_within(page, allowed, timeout: float = 30.0) -> list[str]:
    """Until the selection panel's table lists only ``allowed`` ids (it redraws after the heading)."""
    allowed = set(allowed)
    deadline = time.monotonic() + timeout
    while True:
        shown = table_ids(page)
        if shown and set(shown) <= allowed:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"the selection table lists ids outside the selection: {sorted(set(shown) - allowed)[:10]}")
        time.sleep(0.5)
