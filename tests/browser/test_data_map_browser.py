"""Data map in a real browser: selecting a region shows those examples on the Map page."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import pick, wait_idle
from tests.browser.map_scatter import wait_selection


def test_select_a_region_then_see_it_on_the_map(page, app_url):
    page.goto(f"{app_url}/data-map")
    pick(page, "Dataset", "Handwritten digits (images)")
    expect(page.get_by_role("heading", name="Data map")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSidebar").get_by_text("digits: 1,797 examples")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("of all").first).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name=re.compile(r"Select ambiguous"))).to_be_visible(timeout=60_000)
    # the region buttons of the digits run: until the rerun after picking the dataset
    # ends, Streamlit still shows the previous dataset's buttons (marked stale)
    page.wait_for_function(
        """() => {
            const total = [...document.querySelectorAll('button')]
                .map(b => b.innerText.match(/^Select (?:easy-to-learn|ambiguous|hard-to-learn) \\(([\\d,]+)\\)/))
                .filter(m => m).reduce((n, m) => n + Number(m[1].replace(/,/g, '')), 0);
            return total === 1797 && !document.querySelector('[data-stale=true]');
        }""", timeout=60_000)
    wait_idle(page)
    # the smallest region that is not empty
    counts = {}
    for region in ("hard-to-learn", "ambiguous", "easy-to-learn"):
        label = page.get_by_role("button", name=re.compile(f"Select {region}")).inner_text()
        counts[region] = int(re.search(r"\(([\d,]+)\)", label).group(1).replace(",", ""))
    assert sum(counts.values()) == 1797
    region = min((r for r in counts if counts[r] > 0), key=counts.get)
    count = counts[region]
    page.get_by_role("button", name=re.compile(f"Select {region}")).click()
    expect(page.get_by_text(f"Selection · {count:,} examples")).to_be_visible(timeout=30_000)
    # the Map page sees the same selection, highlighted and listed
    page.get_by_test_id("stSidebarNav").get_by_text("Map", exact=True).click()
    expect(page.get_by_role("heading", name="Map", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"Selection · {count:,} examples")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Last change: data map: {region}")).to_be_visible()
    # the Map's scatter draws the same rows highlighted
    wait_selection(page, count)


def test_a_box_on_the_data_map_selects_the_points_inside_it(page, app_url, analysed_workspace):
    from tests.browser.map_scatter import drag_box, inside, last_shape, run_points, use_tool, wait_drawn

    page.goto(f"{app_url}/data-map")
    wait_drawn(page, 1549)
    use_tool(page, "box")
    drag_box(page, 0.45, 0.05, 0.95, 0.7)
    shape = last_shape(page)
    truth = inside(run_points(analysed_workspace), shape, columns=("variability", "confidence"))
    assert truth.sum() > 0
    wait_selection(page, int(truth.sum()))
    expect(page.get_by_text("Last change: data map: box")).to_be_visible()
