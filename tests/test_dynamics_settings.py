"""Analysis settings → Training dynamics (AppTest): every source offered, a wrong source refused
at Compute with the file and line named, and the Data map's notice for a one-dimensional map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamlit.testing.v1 import AppTest

from analytics.datasets import load_dataset
from analytics.dynamics import TrainingDynamics, write_reference_dynamics
from analytics.pipeline import AnalysisConfig, run_analysis
from analytics.samples import sample_by_key
from analytics.workspace import Workspace
from tests.conftest import ROOT
from ui import jobs, state
from ui.analysis import ACTIVE_CONFIG

BASE = AnalysisConfig(projection="pca")  # the run the page opens on (PCA: no UMAP to wait for)


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


@pytest.fixture(scope="module")
def breast_cancer():
    sample = sample_by_key("breast-cancer")
    return load_dataset(sample.path, roles=sample.roles)


@pytest.fixture(scope="module")
def analysed(breast_cancer, tmp_path_factory):
    """A workspace holding the breast-cancer run of BASE."""
    workspace = Workspace(tmp_path_factory.mktemp("dynamics-settings"))
    run_analysis(breast_cancer, BASE, workspace=workspace)
    return workspace.root


@pytest.fixture
def data_map(analysed, breast_cancer, monkeypatch):
    """The Data map page of the breast-cancer sample, on its BASE run."""
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(analysed))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = sample_by_key("breast-cancer").title
    at.session_state[ACTIVE_CONFIG] = {breast_cancer.fingerprint: BASE}
    at.run()
    return at.switch_page("views/data_map.py").run()


def dynamics_folder(dataset, folder, probabilities):
    """A reference dynamics folder whose gold-class probability at epoch e is probabilities[e]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    logits = np.zeros((1, len(p), dataset.n_examples, len(dataset.classes)), dtype=np.float32)
    rows = np.arange(dataset.n_examples)
    logits[0, :, rows, dataset.label_codes] = np.log(p / (1 - p)).T  # two classes: the other logit stays 0
    folder.mkdir(parents=True)
    write_reference_dynamics(TrainingDynamics(logits=logits, gold=dataset.label_codes, source="probe"),
                             dataset.table["id"].tolist(), folder)
    return folder


def compute(at, source: str, **widgets):
    at.radio(key="analysis_projection").set_value("pca")
    at.selectbox(key="analysis_dynamics_from").select(source).run()
    for key, value in widgets.items():
        widget = next(w for kind in ("text_input", "text_area", "number_input")
                      for w in getattr(at, kind) if w.key == key)
        widget.set_value(value)
    return at.button(key="analysis_apply").click().run()


def test_every_source_is_offered_with_its_settings(data_map):
    at = data_map
    assert at.title[0].value == "Data map" and not at.exception
    choice = at.selectbox(key="analysis_dynamics_from")
    assert choice.options == ["Probe on the embeddings (fast)", "Fine-tune the model (slower; the paper's map)",
                              "Per-epoch checkpoints", "A dynamics folder (dynamics_epoch_*.jsonl)"]
    assert choice.value == "probe"
    choice.select("finetune").run()
    keys = {w.key: w for kind in ("number_input", "text_input") for w in getattr(at, kind)}
    assert keys["analysis_ft_epochs"].value == 5 and keys["analysis_ft_batch_size"].value == 32
    assert keys["analysis_ft_seed"].value == 0 and keys["analysis_ft_lr"].value == ""
    assert keys["analysis_ft_max_tokens"].disabled and keys["analysis_ft_model"].disabled  # a table
    assert any("resumes from its last finished epoch" in c.value for c in at.caption)
    at.selectbox(key="analysis_dynamics_from").select("checkpoints").run()
    assert at.text_area(key="analysis_dyn_checkpoints") and at.text_input(key="analysis_dyn_architecture")
    at.selectbox(key="analysis_dynamics_from").select("folder").run()
    assert "training_dynamics/" in at.text_input(key="analysis_dyn_folder").help
    assert not at.exception


CASES = {
    "a gap in the epochs": ("folder", "epochs [1] are missing"),
    "a class beyond the labels": ("folder", "line 4 has gold 5, beyond the 2 classes"),
    "guids of another dataset": ("folder", "none of its guids match the dataset's ids"),
    "a missing checkpoint": ("checkpoints", "epoch1.pt: no such file or folder"),
    "a learning rate that is not a number": ("finetune", "Learning rate 'fast' is not a number"),
    "a learning rate of 2": ("finetune", "learning_rate=2.0: must be a number between 0 and 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_source_is_refused_when_computing(case, breast_cancer, data_map, tmp_path):
    source, message = CASES[case]
    folder = dynamics_folder(breast_cancer, tmp_path / "model" / "training_dynamics", [[0.5] * 569] * 3)
    widgets = {"analysis_dyn_folder": str(tmp_path / "model")}
    if case == "a gap in the epochs":
        (folder / "dynamics_epoch_1.jsonl").unlink()
    elif case == "a class beyond the labels":
        lines = (folder / "dynamics_epoch_2.jsonl").read_text().splitlines()
        lines[3] = json.dumps({**json.loads(lines[3]), "gold": 5})
        (folder / "dynamics_epoch_2.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "guids of another dataset":
        widgets["analysis_dyn_folder"] = str(dynamics_folder(_renamed(breast_cancer), tmp_path / "other",
                                                             [[0.5] * 569] * 2))
    elif source == "checkpoints":
        (tmp_path / "epoch0.pt").write_bytes(b"x")
        widgets = {"analysis_dyn_checkpoints": f"{tmp_path / 'epoch0.pt'}\n{tmp_path / 'epoch1.pt'}"}
    elif case == "a learning rate that is not a number":
        widgets = {"analysis_ft_lr": "fast"}
    else:
        widgets = {"analysis_ft_lr": "2"}
    at = data_map
    before = set(jobs.keys())
    compute(at, source, **widgets)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert message in errors, errors
    assert at.session_state[ACTIVE_CONFIG][breast_cancer.fingerprint] is BASE  # the page keeps its run
    assert set(jobs.keys()) == before  # nothing was started


@pytest.mark.parametrize("source, widgets, fields", [
    ("checkpoints", {"analysis_dyn_checkpoints": "/models/run/epoch0.pt"},
     {"dynamics_from": "checkpoints", "checkpoints": ("/models/run/epoch0.pt",)}),
    ("folder", {"analysis_dyn_folder": ""}, {"dynamics_from": "folder"}),
])
def test_settings_that_do_not_go_together_show_the_configs_message(breast_cancer, data_map, source, widgets, fields):
    """The app runs analytics.analysis_config.check_config on what was typed, before any path is
    read, and shows its ConfigError as the CLI does (in plain words)."""
    from analytics.analysis_config import ConfigError, check_config

    with pytest.raises(ConfigError) as raised:
        check_config(**fields)
    at = data_map
    before = set(jobs.keys())
    compute(at, source, **widgets)
    assert not at.exception
    assert str(raised.value) in [e.value for e in at.error]
    assert at.session_state[ACTIVE_CONFIG][breast_cancer.fingerprint] is BASE and set(jobs.keys()) == before


def test_the_embedding_sources_offered_are_the_registrys(data_map):
    from analytics.embeddings import EMBEDDING_REGISTRY

    choice = data_map.selectbox(key="analysis_source")
    assert choice.options == ["Automatic", *(source.label for source in EMBEDDING_REGISTRY.values())]
    for name, source in EMBEDDING_REGISTRY.items():  # each source shows the inputs its entry declares
        data_map.selectbox(key="analysis_source").select(name).run()
        keys = {w.key for w in data_map.text_input}
        assert ("analysis_path" in keys) == (source.path is not None), name
        assert ("analysis_column" in keys) == source.takes("column"), name
        assert ("analysis_architecture" in keys) == source.takes("architecture"), name
        if source.path is not None:
            assert data_map.text_input(key="analysis_path").placeholder == source.path.example
    assert not data_map.exception


def _renamed(dataset):
    from dataclasses import replace

    return replace(dataset, table=dataset.table.assign(id=["other-" + str(i) for i in dataset.table["id"]]))


def test_a_folder_source_gives_its_map_and_a_one_dimensional_map_says_so(breast_cancer, data_map, tmp_path):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.05, 0.45, 569)
    # epoch 0 at 0.01, epoch 1 at 2c - 0.01: variability = confidence - 0.01, a line
    line = dynamics_folder(breast_cancer, tmp_path / "line" / "training_dynamics", [np.full(569, 0.01),
                                                                                    2 * confidence - 0.01])
    at = data_map
    compute(at, "folder", analysis_dyn_folder=str(line.parent))
    assert not at.error and not at.exception
    assert at.session_state[ACTIVE_CONFIG][breast_cancer.fingerprint].dynamics_source == "folder"
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception and not at.error
    caption = " ".join(c.value for c in at.caption)
    assert "Training dynamics from the **dynamics folder**" in caption
    assert "held-out probabilities: probe out-of-fold (5 folds)" in caption
    warning = " ".join(w.value for w in at.warning)
    assert "nearly one-dimensional: Spearman(confidence, variability) = 1.00" in warning
    assert "Training dynamics → Fine-tune the model" in warning and "Bring your own training" in warning
    # confidence and variability drawn independently: a two-dimensional map, no notice
    centre, spread = rng.uniform(0.3, 0.7, 569), rng.uniform(0.0, 0.25, 569)
    plane = dynamics_folder(breast_cancer, tmp_path / "plane", [centre - spread, centre + spread])
    compute(at, "folder", analysis_dyn_folder=str(plane))
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception and not at.error
    assert not [w for w in at.warning if "one-dimensional" in w.value]
    assert any("dynamics folder" in c.value for c in at.caption)


def test_fine_tuning_steps_reach_the_progress_display(tmp_path):
    """What a worker sends back while fine-tuning (ui.tasks.analysis → the job's message, shown
    next to the progress bar): each step, with the time an epoch is expected to take."""
    import pandas as pd

    from analytics.finetune import FinetuneConfig
    from ui import tasks

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    frame = pd.DataFrame(rng.normal(size=(60, 3)) + labels[:, None], columns=list("abc"))
    frame["label"] = np.array(["p", "q"])[labels]
    frame.to_csv(tmp_path / "t.csv", index=False)
    updates = []
    config = AnalysisConfig(projection="pca", clusters=None, dynamics_from="finetune",
                            finetune=FinetuneConfig(epochs=2, batch_size=20, heldout="probe"))
    tasks.analysis(lambda **update: updates.append(update), dataset=load_dataset(tmp_path / "t.csv"),
                   config=config, workspace=Workspace(tmp_path / "ws"))
    steps = [u["message"] for u in updates if u.get("stage") == "dynamics" and "step" in u.get("message", "")]
    assert steps[0].startswith("Fine-tuning epoch 1/2 · step 1/3 · ~") and steps[0].endswith("s per epoch")
    assert steps[-1].startswith("Fine-tuning epoch 2/2 · step 3/3")
