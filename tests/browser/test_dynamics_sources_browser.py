"""Every source of training dynamics in a real browser: the probe, fine-tuning, per-epoch
checkpoints and a dynamics folder (the model output folder that holds training_dynamics/), each
picked in Analysis settings → Training dynamics and seen as its map on the Data map page."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.browser.conftest import pick, serve_app, wait_idle
from tests.browser.map_scatter import wait_drawn

N = 120


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small table (120 rows, three classes), three TorchScript checkpoints of a model trained
    on it, and a model output folder holding its training dynamics."""
    from analytics.datasets import load_dataset
    from analytics.dynamics import TrainingDynamics, write_reference_dynamics
    from tests.conftest import epoch_checkpoints

    root = tmp_path_factory.mktemp("dynamics-sources")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, N)
    frame = pd.DataFrame(rng.normal(size=(N, 4)) + labels[:, None] * 1.5, columns=list("abcd"))
    frame.insert(0, "id", [f"row{i}" for i in range(N)])
    frame["label"] = np.array(["x", "y", "z"])[labels]
    frame.to_csv(root / "table.csv", index=False)
    dataset = load_dataset(root / "table.csv")
    checkpoints, _ = epoch_checkpoints(dataset, root, epochs=3)
    logits = rng.normal(size=(1, 4, N, 3)).astype(np.float32)
    (root / "model" / "training_dynamics").mkdir(parents=True)
    write_reference_dynamics(TrainingDynamics(logits=logits, gold=dataset.label_codes, source="probe"),
                             dataset.table["id"].tolist(), root / "model" / "training_dynamics")
    return {"table": root / "table.csv", "checkpoints": checkpoints, "model": root / "model"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on an empty workspace of its own."""
    workspace = tmp_path_factory.mktemp("dynamics-sources-workspace")
    with serve_app(tmp_path_factory.mktemp("dynamics-sources-server"), {"CARTOGRAPHER_WORKSPACE": str(workspace)}) as url:
        yield url


def see_map(page, source: str) -> None:
    """Wait for the Data map of the run whose dynamics came from ``source``; every example drawn."""
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"Training dynamics from the {source}")
           ).to_be_visible(timeout=180_000)
    wait_idle(page)
    wait_drawn(page, N)  # the points the browser scatter drew
    counts = [int(re.search(r"\(([\d,]+)\)", page.get_by_role("button", name=re.compile(f"^Select {region}"))
                            .inner_text()).group(1)) for region in ("easy-to-learn", "ambiguous", "hard-to-learn")]
    assert sum(counts) == N


def choose(page, label: str) -> None:
    """Open Analysis settings (if closed) and pick the training dynamics ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has_text="Training dynamics")
    if not box.is_visible():
        page.get_by_test_id("stExpander").filter(has_text="Analysis settings").locator("summary").click()
    expect(box).to_be_visible()
    wait_idle(page)
    for attempt in range(3):  # a click while the expander still moves can leave the list closed
        box.click()
        try:
            page.get_by_role("option", name=label, exact=True).click(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        pytest.fail(f"the option {label!r} of Training dynamics could not be picked")
    wait_idle(page)


def type_in(page, role: str, name: str, value: str, submit: str = "Enter") -> None:
    box = page.get_by_role(role, name=name)
    box.fill(value)
    box.press(submit)
    wait_idle(page)


def compute(page) -> None:
    page.get_by_role("button", name="Compute the map with these settings").click()


def test_each_source_of_dynamics_gives_its_map(browser, server, sources):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{server}/data-map")
        pick(page, "Dataset", "Open a file or folder…")
        type_in(page, "textbox", "Path to a file or image folder", str(sources["table"]))
        expect(page.get_by_role("heading", name="Data map")).to_be_visible(timeout=60_000)
        see_map(page, "probe on the embeddings")  # the default

        choose(page, "Fine-tune the model (slower; the paper's map)")
        type_in(page, "spinbutton", "Epochs", "2")
        type_in(page, "spinbutton", "Batch size", "16")
        compute(page)
        see_map(page, "fine-tuned model")
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="held-out probabilities: ")).to_be_visible()

        choose(page, "Per-epoch checkpoints")
        type_in(page, "textbox", "Checkpoints, one per line, in epoch order",
                "\n".join(map(str, sources["checkpoints"])), submit="Control+Enter")
        compute(page)
        see_map(page, "per-epoch checkpoints")

        choose(page, "A dynamics folder (dynamics_epoch_*.jsonl)")
        type_in(page, "textbox", "Dynamics folder", str(sources["model"]))
        compute(page)
        see_map(page, "dynamics folder")
        expect(page.get_by_text("Traceback")).to_have_count(0)
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
