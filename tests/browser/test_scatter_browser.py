"""The browser scatter (ui/scatter) in a real browser: selections in the Replace, Add and Remove
modes pick exactly the points inside each shape (by the run's coordinates, drawn or hidden, in
view or not), survive a page change, respect the filter; recolouring by a score fetches one
column and never the coordinates again; hovering names the point; no JavaScript errors."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import wait_idle
from tests.browser.map_scatter import (canvas_box, console_errors, drag, drag_box, drag_circle, expect_table_within,
                                       inside, last_shape, open_map, root, run_points, scatter, use_tool, view,
                                       wait_drawn, wait_selection, x_domain, zoom_in)

N = 1549  # the Debian packages sample


def choose_mode(page, mode: str) -> None:
    radio = page.locator("[data-testid=stRadio]").filter(has_text="A new selection")
    radio.get_by_text(mode, exact=True).click()
    wait_idle(page)
    page.wait_for_function(
        "mode => document.querySelector(\"iframe[title='ui.scatter.scatter']\")"
        ".contentWindow.scatterView?.args?.mode === mode", arg=mode, timeout=30_000)


def test_replace_add_remove_and_a_page_change(page, app_url, analysed_workspace):
    errors = console_errors(page)
    points = run_points(analysed_workspace)
    open_map(page, app_url)
    use_tool(page, "box")
    drag_box(page, 0.15, 0.2, 0.5, 0.55)
    first = inside(points, last_shape(page))
    wait_selection(page, int(first.sum()))

    choose_mode(page, "Add")
    use_tool(page, "lasso")
    drag_circle(page, 0.55, 0.6, 0.22)
    second = inside(points, last_shape(page))
    assert (second & ~first).any()  # the lasso adds points the box did not hold
    wait_selection(page, int((first | second).sum()))

    choose_mode(page, "Remove")
    use_tool(page, "box")
    drag_box(page, 0.4, 0.3, 0.7, 0.7)
    third = inside(points, last_shape(page))
    expected = (first | second) & ~third
    assert (third & (first | second)).any() and expected.any()
    wait_selection(page, int(expected.sum()))
    expect(page.get_by_text("Last change: map: box")).to_be_visible()
    expect_table_within(page, points.loc[expected, "id"])

    # another page and back: the selection is the shared one, drawn again on the map
    page.get_by_test_id("stSidebarNav").get_by_text("Overview", exact=True).click()
    expect(page.get_by_role("heading", name="A sample of examples")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stSidebarNav").get_by_text("Map", exact=True).click()
    wait_drawn(page, N)
    wait_selection(page, int(expected.sum()))
    assert not errors, f"console errors: {errors}"


def test_filtered_out_points_are_not_selected(page, app_url, analysed_workspace):
    errors = console_errors(page)
    points = run_points(analysed_workspace)
    open_map(page, app_url)
    page.get_by_text("Filter and search").click()
    page.get_by_role("textbox", name="Search id or text").fill("library")
    page.get_by_role("textbox", name="Search id or text").press("Enter")
    wait_idle(page)
    needle = points["id"].str.contains("library", case=False, regex=False) | \
        points["text"].str.contains("library", case=False, regex=False)
    expect(page.get_by_text(f"{int(needle.sum()):,} of {N:,} points match the filters.")).to_be_visible()
    expect(scatter(page).locator(".legend-text").filter(has_text="filtered out")).to_have_count(1, timeout=30_000)
    use_tool(page, "box")
    drag_box(page, 0.02, 0.02, 0.98, 0.98)
    truth = inside(points, last_shape(page)) & needle.to_numpy()
    assert 0 < truth.sum() <= needle.sum()
    wait_selection(page, int(truth.sum()))
    assert not errors, f"console errors: {errors}"


def test_recolour_by_a_score_zoom_and_hover(page, app_url, analysed_workspace):
    errors = console_errors(page)
    points = run_points(analysed_workspace)
    open_map(page, app_url)
    fetched = view(page, "v => v.stats.fetches.map(f => f.name)")
    assert fetched.count("points") == 1

    # recolour by a score: one column of uint16 codes comes, the coordinates stay
    page.locator("[data-testid=stSelectbox]").filter(has_text="Colour by").first.click()
    page.keyboard.type("confidence")  # the option list is virtualised: filter it
    page.get_by_role("option", name="confidence", exact=True).click()
    expect(root(page)).to_have_attribute("data-colour", "confidence", timeout=30_000)
    expect(scatter(page).locator(".colour-bar")).to_be_visible()
    fetches = view(page, "v => v.stats.fetches")
    assert [f["name"] for f in fetches].count("points") == 1
    colour = [f for f in fetches if f["name"] == "colour"][-1]
    assert colour["bytes"] == 2 * N and "exact" not in [f["name"] for f in fetches]  # exact values: on hover
    ticks = scatter(page).locator(".colour-ticks span").all_inner_texts()
    assert float(ticks[0]) == float(f"{points['confidence'].astype('float32').max():.4g}")  # the top of the scale

    # zoom in around the middle, then a box from the middle to past the plot's right edge:
    # it also holds points outside the view
    box = canvas_box(page)
    zoom_in(page)
    use_tool(page, "box")
    drag(page, [(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3),
                (box["x"] + box["width"] * 1.12, box["y"] + box["height"] * 0.9)], steps=12)
    shape = last_shape(page)
    truth = inside(points, shape)
    x_view = x_domain(page)
    outside = truth & (points["x"].to_numpy() > max(x_view))
    assert outside.any(), "the box should reach past the view"
    wait_selection(page, int(truth.sum()))

    # hovering a point shows its id and label: a selected point inside the view (the box also
    # holds points past its right edge), away from the toolbar in the top right corner
    page.mouse.move(0, 0)
    candidates = [int(r) for r in np.flatnonzero(truth & ~outside)[:400]]
    pixels = view(page, "(v, rows) => rows.map(r => v.pixelOf(v.x[r], v.y[r]))", candidates)
    row, (px, py) = next((r, (x, y)) for r, (x, y) in zip(candidates, pixels)
                         if 10 < x < box["width"] - 10 and 60 < y < box["height"] - 10)
    tooltip = scatter(page).locator(".tooltip")
    for attempt in range(3):  # a redraw that lands just after the move (the selection's rerun) hides it
        page.mouse.move(box["x"] + px, box["y"] + py)
        try:
            expect(tooltip).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
            page.mouse.move(0, 0)
    hovered = view(page, "v => v.hovered")
    lines = tooltip.locator("div").all_inner_texts()
    assert lines[0].startswith(f"{points['id'][hovered]}: ")  # id and the start of its text
    assert lines[1] == f"label: {points['label'][hovered]}"
    # the score's exact value, fetched on this first hover (the colours came quantised)
    expect(tooltip.locator("div").nth(2)).not_to_have_text("confidence: …", timeout=30_000)
    shown = tooltip.locator("div").nth(2).inner_text()
    assert shown.startswith("confidence: ")
    exact = float(np.float32(points["confidence"][hovered]))
    assert float(shown.removeprefix("confidence: ")) == pytest.approx(exact, rel=1e-3, abs=1e-12)
    assert [f["name"] for f in view(page, "v => v.stats.fetches")].count("exact") == 1
    assert not errors, f"console errors: {errors}"
