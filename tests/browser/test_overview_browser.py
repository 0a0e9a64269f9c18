"""The first user journey in a real browser: open the app, pick each sample, see its overview."""

from __future__ import annotations

import pandas as pd
import pytest
from playwright.sync_api import expect

from analytics.samples import SAMPLES
from tests.browser.conftest import pick, wait_idle
from ui.navigation import PAGES

ROWS = {"debian-packages": "1,549", "digits": "1,797", "breast-cancer": "569"}


def test_app_opens_on_a_sample_overview(page):
    expect(page.get_by_role("heading", name="debian_packages.csv")).to_be_visible()
    expect(page.get_by_text("Class balance")).to_be_visible()
    # the balance, the splits, the columns and the sample: tables, shown without the Plotly bundle
    expect(page.get_by_test_id("stDataFrame")).to_have_count(4, timeout=30_000)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.key)
def test_pick_each_sample_and_see_its_overview(page, sample):
    pick(page, "Dataset", sample.title)
    wait_idle(page)
    expect(page.get_by_role("heading", name=sample.path.name)).to_be_visible()
    expect(page.get_by_test_id("stMetricValue").first).to_have_text(ROWS[sample.key])
    expect(page.get_by_text("A sample of examples")).to_be_visible()
    if sample.key == "digits":
        # the per-class thumbnails are real images served by the app
        images = page.locator("[data-testid=stImage] img")
        expect(images.first).to_be_visible()
        assert images.count() >= 10 * 12
        assert images.first.evaluate("img => img.naturalWidth") > 0


@pytest.mark.parametrize("spec", PAGES, ids=lambda p: p.url_path)
def test_each_page_opens_by_its_own_url(browser, app_url, spec):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{app_url}/{spec.url_path}")
    expect(page.locator("h1").first).to_be_visible(timeout=30_000)
    assert page.url.rstrip("/").endswith(spec.url_path) or spec is PAGES[0]
    expect(page.get_by_text("Traceback")).to_have_count(0)
    context.close()


def test_bad_path_shows_an_error_and_the_app_keeps_running(page, tmp_path):
    pick(page, "Dataset", "Open a file or folder…")
    box = page.get_by_label("Path to a file or image folder", exact=True)
    box.fill(str(tmp_path / "missing.csv"))
    box.press("Enter")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("no such file or folder")).to_be_visible()
    # Missing labels: the error counts them and a button drops them.
    path = tmp_path / "gaps.csv"
    pd.DataFrame({"text": [f"words {i} here" for i in range(5)],
                  "label": ["a", None, "b", "a", "b"]}).to_csv(path, index=False)
    box.fill(str(path))
    box.press("Enter")
    expect(sidebar.get_by_text("1 rows with no label (rows 2)")).to_be_visible()
    page.get_by_role("button", name="Drop the 1 rows without a label").click()
    expect(page.get_by_role("heading", name="gaps.csv")).to_be_visible()
    expect(page.get_by_test_id("stMetricValue").first).to_have_text("4")
    # and a bundled sample still opens afterwards
    pick(page, "Dataset", SAMPLES[1].title)
    expect(page.get_by_role("heading", name="digits")).to_be_visible()


@pytest.mark.parametrize("path", ["", "/overview"])
def test_the_overview_opens_at_the_root_and_by_its_own_path(browser, app_url, path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{app_url}{path}")
    expect(page.get_by_role("heading", name="debian_packages.csv")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Class balance")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert page.url.rstrip("/") == f"{app_url}{path}".rstrip("/")
    menu = page.get_by_test_id("stSidebarNav")
    expect(menu.get_by_text("Overview", exact=True)).to_have_count(1)  # listed once, not twice
    context.close()


def test_the_toolbar_shows_no_deploy_button_or_developer_menu(page):
    expect(page.get_by_role("heading", name="debian_packages.csv")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    main_menu = page.get_by_test_id("stMainMenu")
    if main_menu.count():
        main_menu.click()
        expect(page.get_by_test_id("stMainMenuList")).to_be_visible()
        for developer_item in ("Rerun", "Clear cache", "Deploy this app"):
            expect(page.get_by_test_id("stMainMenuList").get_by_text(developer_item)).to_have_count(0)


def test_a_url_in_a_dataset_name_is_plain_text(page, tmp_path):
    path = tmp_path / "www.evil.example.csv"
    pd.DataFrame({"text": [f"see https://evil.example/{i} or bob@evil.example" for i in range(6)],
                  "label": ["a", "b"] * 3}).to_csv(path, index=False)
    pick(page, "Dataset", "Open a file or folder…")
    box = page.get_by_label("Path to a file or image folder", exact=True)
    box.fill(str(path))
    box.press("Enter")
    wait_idle(page)
    expect(page.get_by_role("heading", name="evil.example.csv")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text("6 examples, 2 classes")).to_be_visible()
    # no link to the address (a heading's own "#www-evil-example-csv" anchor is not one)
    expect(page.locator("a[href*='evil.example']:not([href^='#'])")).to_have_count(0)
    expect(page.locator("a[href^='mailto:']")).to_have_count(0)


def test_the_chart_code_is_loaded_once_the_first_page_is_idle(page):
    """The Overview has no Plotly chart; the browser loads Streamlit's Plotly chunk once it is
    idle (ui/preload.py), so the first page with charts does not wait for it."""
    from ui.preload import plotly_chunk

    chunk = plotly_chunk()
    assert chunk is not None and chunk.startswith("PlotlyChart.")
    expect(page.get_by_role("heading", name="debian_packages.csv")).to_be_visible()
    page.wait_for_function(
        "(chunk) => performance.getEntriesByType('resource').some((r) => r.name.endsWith('/' + chunk))",
        arg=chunk, timeout=30_000)
    assert page.evaluate("() => window.cartographerPreloaded") is True
