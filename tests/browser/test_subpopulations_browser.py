"""Subpopulations in a real browser: open a cluster, send it to the selection, see it on the Map."""

from __future__ import annotations

import re

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.browser.conftest import pick, wait_idle
from tests.browser.map_scatter import wait_selection


def test_open_a_cluster_and_send_it_to_the_selection(page, app_url):
    page.goto(f"{app_url}/subpopulations")
    pick(page, "Dataset", "Handwritten digits (images)")
    expect(page.get_by_role("heading", name="Subpopulations")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSidebar").get_by_text("digits: 1,797 examples")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Harmony")).to_be_visible(timeout=60_000)
    wait_idle(page)
    # open the second cluster of the list (a click during a rerun can be lost: try again)
    box = page.locator("[data-testid=stSelectbox]").filter(has_text="Open a cluster").first
    option = page.get_by_role("option").nth(1)
    for attempt in range(4):
        box.click()
        try:
            option.wait_for(state="visible", timeout=10_000)
            break
        except PlaywrightTimeout:
            wait_idle(page)
    chosen = option.inner_text()
    cluster, size = re.match(r"(\d+) · .* \(([\d,]+)\)$", chosen).groups()
    option.click()
    expect(page.get_by_role("heading", name=re.compile(f"^Cluster {cluster}: "))).to_be_visible(timeout=30_000)
    wait_idle(page)
    # its members are listed with image previews, and its own data map is drawn
    expect(page.get_by_text("Its data map")).to_be_visible()
    page.get_by_role("button", name=f"Select this cluster ({size})").click()
    expect(page.get_by_text(f"Selection · {size} examples")).to_be_visible(timeout=30_000)
    # the Map page sees the same selection
    page.get_by_test_id("stSidebarNav").get_by_text("Map", exact=True).click()
    expect(page.get_by_role("heading", name="Map", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"Selection · {size} examples")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(f"Last change: subpopulations: cluster {cluster} "))).to_be_visible()
    # the Map's scatter draws the same rows highlighted
    wait_selection(page, int(size.replace(",", "")))
