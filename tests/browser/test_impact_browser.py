"""Impact in a real browser: run a small experiment on a sample and see its plot."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import pick, wait_idle


def test_run_an_easy_to_hard_experiment_and_see_the_plot(page, app_url):
    page.goto(f"{app_url}/impact")
    pick(page, "Dataset", "Breast cancer diagnosis (tabular)")
    expect(page.get_by_role("heading", name="Impact")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Evaluation: held-out 'test' split (114 rows)")).to_be_visible(timeout=60_000)
    wait_idle(page)
    page.get_by_test_id("stRadio").filter(has_text="Experiment").get_by_text("Easy to hard", exact=True).click()
    wait_idle(page)
    page.get_by_role("button", name="Run the experiment").click()
    # progress while it runs in the background, then the figure and the numbers
    plot = page.locator(".js-plotly-plot")
    expect(plot).to_have_count(1, timeout=120_000)
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
    assert names == ["trained on easy", "trained on medium", "trained on hard", "trained on all"]
    expect(page.get_by_test_id("stDownloadButton").filter(has_text="Figure (HTML)")).to_be_visible()
    expect(page.get_by_text("Bucket sizes:")).to_be_visible()
