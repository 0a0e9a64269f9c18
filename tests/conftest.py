"""Shared fixtures: an isolated workspace for every test, and clean app caches."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One numba cache for the whole session, this process and the CLI and app processes it starts
# (analytics.numba_cache): each compiles umap-learn and pynndescent once, not once per test.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="cartographer-numba-"))


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path, monkeypatch):
    """Nothing a test computes lands in the developer's ./workspace."""
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


@pytest.fixture(scope="session")
def analysed_workspace(tmp_path_factory):
    """A workspace holding the default analysis run of every bundled sample (computed once per
    test session: MiniLM for the text sample, pixels for the digits, UMAP for all three)."""
    from analytics.datasets import load_dataset
    from analytics.pipeline import AnalysisConfig, run_analysis
    from analytics.samples import SAMPLES
    from analytics.workspace import Workspace

    workspace = Workspace(tmp_path_factory.mktemp("analysed-workspace"))
    for sample in SAMPLES:
        run_analysis(load_dataset(sample.path, roles=sample.roles), AnalysisConfig(), workspace=workspace)
    return workspace.root


@pytest.fixture
def use_analysed_workspace(analysed_workspace, monkeypatch):
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(analysed_workspace))
    return analysed_workspace


@pytest.fixture
def small_csv(tmp_path):
    """A small numeric table (120 rows, columns a and b, labels x and y) that nothing has analysed."""
    import numpy as np
    import pandas as pd

    path = tmp_path / "small.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120),
                  "label": rng.choice(["x", "y"], 120)}).to_csv(path, index=False)
    return path


@pytest.fixture
def clean_app_caches():
    """Empty the app's caches around an app test and wait for its background analysis jobs."""
    from ui import cached, jobs

    cached.clear_all()
    yield
    assert jobs.wait_all(timeout=300), "a background analysis job did not finish"
    cached.clear_all()


def open_page(page: str, sample: str):
    """An AppTest of the app with ``sample`` chosen in the sidebar, switched to ``page``
    (a file under views/)."""
    from streamlit.testing.v1 import AppTest

    from analytics.samples import sample_by_key
    from ui import state

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = sample_by_key(sample).title
    at.run()
    return at.switch_page(page).run()


def epoch_checkpoints(dataset, folder: Path, *, epochs: int = 3, learning_rate: float = 0.1):
    """A real little training run of a linear model on the table's standardised columns, saved as
    one TorchScript file per epoch: ``(paths, model)``, the model as trained to the last epoch."""
    import warnings

    import torch

    from analytics.embeddings import tabular_features

    features = torch.from_numpy(tabular_features(dataset))
    target = torch.from_numpy(dataset.label_codes)
    torch.manual_seed(0)
    model = torch.nn.Linear(features.shape[1], len(dataset.classes))
    optimiser = torch.optim.SGD(model.parameters(), lr=learning_rate)
    paths = []
    for epoch in range(epochs):
        loss = torch.nn.functional.cross_entropy(model(features), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
            torch.jit.save(torch.jit.script(model), str(folder / f"epoch{epoch}.pt"))
        paths.append(folder / f"epoch{epoch}.pt")
    return paths, model
