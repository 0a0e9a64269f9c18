"""The Issues page in a real browser: a table with copied rows, click the duplicates, see them
selected on the Map."""

from __future__ import annotations

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from analytics.datasets import load_dataset
from analytics.pipeline import AnalysisConfig, run_analysis
from analytics.workspace import Workspace
from tests.browser.conftest import pick, wait_idle


def planted_run(folder):
    """A run folder of a 100-row table where rows 0-5 are copied twice each (18 duplicates)."""
    rng = np.random.default_rng(3)
    labels = rng.choice(["a", "b"], 100)
    table = pd.DataFrame({"id": [f"r{i}" for i in range(100)], "label": labels,
                          "f0": rng.normal(size=100) + (labels == "b") * 3, "f1": rng.normal(size=100),
                          "f2": rng.normal(size=100)})
    copies = pd.concat([table.iloc[:6]] * 2, ignore_index=True)
    copies["id"] = [f"copy{i}" for i in range(12)]
    pd.concat([table, copies], ignore_index=True).to_csv(folder / "copies.csv", index=False)
    run = run_analysis(load_dataset(folder / "copies.csv"),
                       AnalysisConfig(projection="pca", k=8, scores=False, clusters=None),
                       out_dir=folder / "run", workspace=Workspace(folder / "ws"))
    return run.path, int(run.examples["near_duplicate"].sum())


def test_click_the_duplicates_and_see_them_on_the_map(page, tmp_path):
    run, duplicates = planted_run(tmp_path)
    assert duplicates == 18  # the planted copies, no more
    pick(page, "Dataset", "Open a file or folder…")
    box = page.get_by_label("Path to a file or image folder", exact=True)
    box.fill(str(run))
    box.press("Enter")
    wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_text("Issues", exact=True).click()
    expect(page.get_by_role("heading", name="Issues", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Leaks between splits")).to_be_visible(timeout=30_000)
    wait_idle(page)
    page.get_by_role("button", name=f"Select {duplicates} examples").first.click()
    expect(page.get_by_text(f"Selection · {duplicates} examples")).to_be_visible(timeout=30_000)
    # the Map page sees the same selection
    page.get_by_test_id("stSidebarNav").get_by_text("Map", exact=True).click()
    expect(page.get_by_role("heading", name="Map", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"Selection · {duplicates} examples")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Last change: issues: near_duplicate")).to_be_visible()
