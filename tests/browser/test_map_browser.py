"""The Map in a real browser: box and lasso selections reach the app and pick exactly the points
inside them; recolouring by a metadata column works."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import pick
from tests.browser.map_scatter import (SCATTER, console_errors, drag_box, drag_circle, expect_table_within, inside,
                                       last_shape, open_map, root, run_points, scatter, use_tool, wait_selection)


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
    expect(legend.locator(".colour-menu")).to_have_value("split")
    expect(legend.locator(".legend-text").filter(has_text=re.compile("^train$"))).to_have_count(1)
    expect(legend.locator(".legend-text").filter(has_text=re.compile("^test$"))).to_have_count(1)
    expect(legend.locator(".legend-text").filter(has_text="games")).to_have_count(0)


def test_recolour_in_the_map_menu_draws_without_the_server_then_sets_the_page_menu(page, app_url):
    errors = console_errors(page)
    open_map(page, app_url)
    menu = scatter(page).locator(".legend .colour-menu")
    expect(menu).to_have_value("label")
    renders = int(root(page).get_attribute("data-renders"))
    menu.select_option("n_words")
    expect(root(page)).to_have_attribute("data-colour", "n_words", timeout=30_000)
    draws = page.frame_locator(SCATTER).first.locator("body").evaluate("() => window.scatterView.stats.draws")
    local = [d for d in draws if d.get("local")]
    assert local and local[-1]["colour"]  # drawn in the browser, from the column it fetched
    # then the server hears of it: the page's own menu follows, and the map is not drawn again
    expect(page.get_by_role("combobox", name="Colour by")).to_have_value("n_words", timeout=30_000)
    expect(root(page)).not_to_have_attribute("data-renders", str(renders), timeout=30_000)
    expect(scatter(page).locator(".legend .colour-scale")).to_have_count(1)
    after = page.frame_locator(SCATTER).first.locator("body").evaluate("() => window.scatterView.stats")
    assert [d for d in after["draws"][len(draws):] if d["colour"]] == []  # nothing drawn twice
    # back through the page's own menu: the map's menu follows
    pick(page, "Colour by", "split")
    expect(root(page)).to_have_attribute("data-colour", "split", timeout=30_000)
    expect(menu).to_have_value("split")
    assert errors == []
