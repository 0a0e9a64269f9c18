"""The browser scatter at a million points (issue 14): a box and a lasso select exactly the points
inside them by geometry, among all 1M, including points outside the zoomed-in view; the selection
the server sends back is drawn row for row; no JavaScript errors.

The run folder is the Debian sample's analysed run grown to 1M examples (its rows repeated under
new ids, each copy's map moved by a seeded jitter), its manifest updated so that the app opens it
like any run folder. The Map reads only the examples and the manifest.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect

from analytics.pipeline import file_sha256
from tests.browser.conftest import wait_idle
from tests.browser.map_scatter import (canvas_box, console_errors, drag, drag_circle, inside, last_shape,
                                       open_run_folder, run_points, scatter, selected_rows, use_tool, wait_drawn,
                                       wait_selection, wait_x_span, x_domain, zoom_in)

N = 1_000_000
TIMEOUT = 180_000  # ms: software WebGL on two shared cores


@pytest.fixture(scope="module")
def million_run(analysed_workspace, tmp_path_factory):
    """(run folder, its examples' ids and coordinates as the browser gets them)."""
    from analytics.datasets import load_dataset
    from analytics.pipeline import AnalysisConfig, run_dir_for
    from analytics.samples import sample_by_key
    from analytics.workspace import Workspace

    sample = sample_by_key("debian-packages")
    source = run_dir_for(load_dataset(sample.path, roles=sample.roles), AnalysisConfig(), Workspace(analysed_workspace))
    folder = tmp_path_factory.mktemp("million") / "run"
    shutil.copytree(source, folder)
    small = pd.read_parquet(source / "examples.parquet")
    copy = np.arange(N) // len(small)
    examples = small.iloc[np.arange(N) % len(small)].reset_index(drop=True)
    examples["id"] = examples["id"].astype(str) + "#" + pd.Series(copy).astype(str)
    rng = np.random.default_rng(14)
    for column in ("x", "y", "pca_x", "pca_y"):
        spread = float(small[column].std()) * 0.05
        examples[column] = (examples[column] + rng.normal(0.0, spread, N)).astype(small[column].dtype)
    examples.to_parquet(folder / "examples.parquet", index=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artefacts"]["examples.parquet"] = {"bytes": (folder / "examples.parquet").stat().st_size,
                                                 "sha256": file_sha256(folder / "examples.parquet")}
    manifest["dataset"]["n_examples"] = N
    manifest["dataset"]["fingerprint"] = "million-" + manifest["dataset"]["fingerprint"][:12]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder, examples[["id", "x", "y"]]


def test_box_and_lasso_at_a_million_points_select_by_geometry(page, app_url, million_run):
    folder, points = million_run
    errors = console_errors(page)
    open_run_folder(page, folder, timeout=TIMEOUT)
    page.get_by_test_id("stSidebarNav").get_by_text("Map", exact=True).click()
    wait_drawn(page, N, timeout=TIMEOUT)
    wait_idle(page)

    # zoom in around the middle, then a box from the middle to past the plot's right edge:
    # it holds points outside the view too
    box = canvas_box(page)
    before = zoom_in(page, 400, timeout=TIMEOUT)
    use_tool(page, "box")
    drag(page, [(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.35),
                (box["x"] + box["width"] * 1.1, box["y"] + box["height"] * 0.65)], steps=8)
    truth = inside(points, last_shape(page))
    in_view = x_domain(page)
    assert (truth & (points["x"].to_numpy() > max(in_view))).any(), "the box should reach past the view"
    wait_selection(page, int(truth.sum()))
    np.testing.assert_array_equal(selected_rows(page), np.flatnonzero(truth))

    # a lasso, zoomed out again: every point inside it by the even-odd rule, the box's replaced
    scatter(page).get_by_role("button", name="Reset the view").click()
    wait_x_span(page, larger_than=0.99 * abs(before[1] - before[0]), timeout=TIMEOUT)
    use_tool(page, "lasso")
    drag_circle(page, 0.45, 0.5, 0.25)
    lasso = inside(points, last_shape(page))
    assert lasso.sum() > 10_000 and (lasso & ~truth).any()
    wait_selection(page, int(lasso.sum()))
    np.testing.assert_array_equal(selected_rows(page), np.flatnonzero(lasso))
    expect(page.get_by_text("Last change: map: lasso")).to_be_visible()
    assert not errors, f"console errors: {errors}"


def test_the_grown_run_keeps_the_sample_s_points(analysed_workspace, million_run):
    """(the fixture itself) every copy of an example lies near it, ids are distinct."""
    _, points = million_run
    small = run_points(analysed_workspace)
    assert len(points) == N and points["id"].is_unique
    gap = np.abs(points["x"].to_numpy()[: len(small)] - small["x"].to_numpy())
    assert gap.max() < small["x"].std()
