"""The Map in a real browser: box and lasso selections reach the app and pick exactly the points
inside them; recolouring by a metadata column works."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import pick
from tests.browser.map_scatter import (drag_box, drag_circle, expect_table_within, inside, last_shape, open_map, root,
                                       run_points, scatter, use_tool, wait_selection)


def test_box_select_shows_the_points_inside_the_box(page, app_url, analysed_workspace):
    open_map(page, app_url)
    expect(page.get_by_text("Selection · 0 examples")).to_be_visible()
    use_tool(page, "box")
    drag_box(page, 0.3, 0.3, 0.6, 0.6)
    shape = last_shape(page)
    assert shape["kind"] == "box"
    points = run_points(analysed_workspace)
    truth = inside(points, shape)
    assert truth.sum() > 0
    wait_selection(page, int(truth.sum()))
    expect(page.get_by_text("Last change: map: box")).to_be_visible()
    expect_table_within(page, points.loc[truth, "id"])


def test_lasso_select_shows_the_points_inside_the_lasso(page, app_url, analysed_workspace):
    open_map(page, app_url)
    use_tool(page, "lasso")
    drag_circle(page, 0.5, 0.5, 0.3)
    shape = last_shape(page)
    assert shape["kind"] == "lasso" and len(shape["x"]) >= 20
    points = run_points(analysed_workspace)
    truth = inside(points, shape)
    assert truth.sum() > 0
    wait_selection(page, int(truth.sum()))
    expect(page.get_by_text("Last change: map: lasso")).to_be_visible()
    expect_table_within(page, points.loc[truth, "id"])


def test_recolour_by_a_metadata_column(page, app_url):
    open_map(page, app_url)
    legend = scatter(page).locator(".legend")
    expect(legend.locator(".legend-text").filter(has_text="games")).to_have_count(1)
    pick(page, "Colour by", "split")
    expect(root(page)).to_have_attribute("data-colour", "split", timeout=30_000)
    expect(legend.locator(".legend-title")).to_have_text("split")
    expect(legend.locator(".legend-text").filter(has_text=re.compile("^train$"))).to_have_count(1)
    expect(legend.locator(".legend-text").filter(has_text=re.compile("^test$"))).to_have_count(1)
    expect(legend.locator(".legend-text").filter(has_text="games")).to_have_count(0)
