"""The Map in a real browser: box and lasso selections reach the app; recolouring works."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from analytics.datasets import load_dataset
from analytics.pipeline import AnalysisConfig, run_dir_for
from analytics.samples import sample_by_key
from analytics.workspace import Workspace
from tests.browser.conftest import pick


def open_map(page, app_url):
    page.goto(f"{app_url}/map")
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    page.wait_for_function("() => document.querySelector('.js-plotly-plot')?._fullData?.length > 0")
    expect(page.get_by_text("Selection · 0 examples")).to_be_visible()


def drag_area(page):
    return page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()


def to_data(page, box, pixels: np.ndarray) -> np.ndarray:
    """Screen pixels inside the plot area to data coordinates (from the axes' current ranges)."""
    (x0, x1), (y0, y1) = page.evaluate(
        "() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;"
        " return [l.xaxis.range, l.yaxis.range]; }")
    fx = (pixels[:, 0] - box["x"]) / box["width"]
    fy = (pixels[:, 1] - box["y"]) / box["height"]
    return np.column_stack([x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)])


def selected_count(page) -> int:
    heading = page.get_by_text(re.compile(r"Selection · [\d,]+ examples"))
    expect(heading).not_to_have_text("Selection · 0 examples", timeout=30_000)
    return int(re.search(r"([\d,]+)", heading.inner_text()).group(1).replace(",", ""))


def run_points(analysed_workspace) -> pd.DataFrame:
    sample = sample_by_key("debian-packages")
    dataset = load_dataset(sample.path, roles=sample.roles)
    folder = run_dir_for(dataset, AnalysisConfig(), Workspace(analysed_workspace))
    return pd.read_parquet(folder / "examples.parquet")


def table_ids(page) -> list[str]:
    grid = page.locator("[data-testid=stDataFrame]").last
    expect(grid.locator("td").first).to_be_attached()
    rows = grid.locator("[role=row]").all()[1:]  # skip the header row
    return [row.locator("td").first.inner_text() for row in rows if row.locator("td").count()]


def test_box_select_shows_the_points_inside_the_box(page, app_url, analysed_workspace):
    open_map(page, app_url)
    box = drag_area(page)
    page.locator(".js-plotly-plot").first.hover()
    page.locator('[data-title="Box Select"]').first.click()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    x1, y1 = x0 + box["width"] * 0.3, y0 + box["height"] * 0.3
    corners = to_data(page, box, np.array([[x0, y0], [x1, y1]]))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=15)
    page.mouse.up()
    # the same box shrunk and grown by 2 pixels: points that close to the edge may go either way
    shrunk = to_data(page, box, np.array([[x0 + 2, y0 + 2], [x1 - 2, y1 - 2]]))
    grown = to_data(page, box, np.array([[x0 - 2, y0 - 2], [x1 + 2, y1 + 2]]))
    count = selected_count(page)
    expect(page.get_by_text("Last change: map: box")).to_be_visible()
    # The app selected the points inside the dragged box (in data coordinates), up to points
    # within two pixels of its edge.
    points = run_points(analysed_workspace)

    def within(area):
        (left, top), (right, bottom) = area
        return points["x"].between(left, right) & points["y"].between(bottom, top)

    inside = within(corners)
    assert count > 0 and int(within(shrunk).sum()) <= count <= int(within(grown).sum())
    shown = table_ids(page)
    assert shown and len(set(shown) & set(points.loc[inside, "id"])) >= len(shown) - 1


def test_lasso_select_shows_the_points_inside_the_lasso(page, app_url, analysed_workspace):
    open_map(page, app_url)
    box = drag_area(page)
    page.locator(".js-plotly-plot").first.hover()
    page.locator('[data-title="Lasso Select"]').first.click()
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    radius = min(box["width"], box["height"]) * 0.3
    angles = np.linspace(0, 2 * np.pi, 24)
    path = np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
    vertices = to_data(page, box, path)
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()
    count = selected_count(page)
    expect(page.get_by_text("Last change: map: lasso")).to_be_visible()
    points = run_points(analysed_workspace)
    inside = _in_polygon(points[["x", "y"]].to_numpy(), vertices)
    # Plotly tests points against the lasso it drew from the mouse events; allow a few points
    # on its edge.
    assert count > 0 and abs(count - int(inside.sum())) <= max(3, 0.02 * count)
    shown = table_ids(page)
    assert shown and len(set(shown) & set(points.loc[inside, "id"])) >= len(shown) - 1


def test_recolour_by_a_metadata_column(page, app_url):
    open_map(page, app_url)
    expect(page.locator(".legendtext").filter(has_text="games")).to_have_count(1)
    pick(page, "Colour by", "split")
    expect(page.locator(".legendtext").filter(has_text="train")).to_have_count(1, timeout=30_000)
    expect(page.locator(".legendtext").filter(has_text="test")).to_have_count(1)
    expect(page.locator(".legendtext").filter(has_text="games")).to_have_count(0)


def _in_polygon(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        inside ^= ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1 + 1e-12) + x1)
    return inside
