"""The sources of training dynamics as registry entries (analytics.dynamics_sources): every entry
holds its functions, the cache keys they give are the ones existing workspaces were written with,
the manifest keys are unchanged, and a new source runs through the pipeline as one entry."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import analytics.analysis_config as analysis_config
import analytics.pipeline as pipeline
from analytics.analysis_config import DYNAMICS_REGISTRY, DYNAMICS_SOURCES, AnalysisConfig, DynamicsSource
from analytics.datasets import load_dataset
from analytics.dynamics import ProbeConfig, TrainingDynamics
from analytics.dynamics_sources import CheckedSource, TrainedDynamics
from analytics.finetune_config import FinetuneConfig, FinetuneError, check_finetune
from analytics.workspace import Workspace, params_key

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = {"check": ["dataset", "config", "policy"], "train": ["run", "vectors", "report"],
              "params": ["config"], "manifest": ["run", "scored"], "scheme": ["config", "gold"],
              "heldout": ["run", "report"]}


@pytest.fixture
def dataset(tmp_path):
    """60 rows, 3 separated classes: the same content (and fingerprint) wherever it is written."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    frame = pd.DataFrame((rng.normal(size=(3, 4)) * 5)[labels] + rng.normal(size=(60, 4)),
                         columns=[f"f{i}" for i in range(4)]).round(4)
    frame["label"] = np.array(["a", "b", "c"])[labels]
    frame["id"] = [f"row{i}" for i in range(60)]
    frame.to_csv(tmp_path / "d.csv", index=False)
    return load_dataset(tmp_path / "d.csv")


# --- every entry holds its functions ---------------------------------------------------------------

@pytest.mark.parametrize("name", DYNAMICS_SOURCES)
def test_every_source_holds_its_functions_from_its_module(name):
    source = DYNAMICS_REGISTRY[name]
    for role, parameters in SIGNATURES.items():
        function = getattr(source, role)
        if function is None:
            assert role in ("scheme", "heldout"), f"{name} has no {role}"
            continue
        assert list(inspect.signature(function).parameters) == parameters, (name, role)
        assert function.__module__.startswith("analytics.dynamics_sources."), (name, role)
    assert set(source.options) <= {"architecture", "trust"}
    # whose errors the clusters judge: its last epoch's, or a named model's held-out predictions
    assert bool(source.last_epoch_errors) or source.heldout is None or source.model


def test_the_pipeline_names_no_dynamics_source():
    """No comparison with a source's name is left in the pipeline: it calls the entry's functions."""
    names = set(DYNAMICS_SOURCES) | {"reference"}
    tree = ast.parse((ROOT / "analytics" / "pipeline.py").read_text(encoding="utf-8"))
    compared = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
                for part in [node.left, *node.comparators]
                if isinstance(part, ast.Constant) and part.value in names]
    assert compared == []


# --- the cache keys: exactly the ones existing workspaces hold ---------------------------------------

PROBE_DEFAULT = [("source", "probe"), ("hidden", 256), ("epochs", 10), ("seeds", 3), ("batch_size", None),
                 ("learning_rate", 0.003), ("weight_decay", 0.0001), ("folds", 5), ("device", None),
                 ("scheme", "auto"), ("vog", True)]
FINETUNE_DEFAULT = [("source", "finetune"), ("epochs", 5), ("learning_rate", None), ("batch_size", 32),
                    ("max_tokens", 96), ("seed", 0), ("model", None), ("version", 1), ("heldout", "auto"),
                    ("heldout_budget_s", 900.0)]


def _pinned(params: dict) -> str:
    """The bytes a key is made of, key order included."""
    return json.dumps(params, default=str)


def test_the_probe_and_fine_tuning_keep_their_cache_keys(dataset):
    config = AnalysisConfig(probe=ProbeConfig(device="cpu")).resolved(dataset)  # the device is not in the key
    assert _pinned(pipeline._dynamics_params(config)) == _pinned(dict(PROBE_DEFAULT))
    crossed = AnalysisConfig(probe=ProbeConfig(hidden=8, scheme="cross-fit"))
    assert _pinned(pipeline._dynamics_params(crossed)) == _pinned(
        {**dict(PROBE_DEFAULT), "hidden": 8, "scheme": "cross-fit"})
    assert _pinned(pipeline._dynamics_params(AnalysisConfig(dynamics_from="finetune"))) == _pinned(
        dict(FINETUNE_DEFAULT))
    tuned = AnalysisConfig(dynamics_from="finetune", finetune=FinetuneConfig(epochs=3, heldout="probe",
                                                                            learning_rate=1e-4))
    assert _pinned(pipeline._dynamics_params(tuned)) == _pinned(
        {**dict(FINETUNE_DEFAULT), "epochs": 3, "learning_rate": 0.0001, "heldout": "probe"})
    # the hashes the workspace files are named by, as written before the sources were entries
    assert params_key(pipeline._dynamics_params(config)) == "bcbeef42f29deb2f"
    assert params_key(pipeline._dynamics_params(crossed)) == "14a4e02b621ab635"
    assert params_key(pipeline._dynamics_params(tuned)) == "43f911534feec178"


def test_checkpoints_and_a_folder_keep_their_cache_keys(tmp_path):
    paths = []
    for epoch in range(2):
        paths.append(tmp_path / f"epoch{epoch}.pt")
        paths[-1].write_bytes(bytes([epoch]) * 10)
    config = AnalysisConfig(checkpoints=tuple(map(str, paths)), architecture="m:C")
    assert _pinned(pipeline._dynamics_params(config)) == _pinned(
        {"source": "checkpoints", "checkpoints": ["055525c5e86337b7c4cf", "c30196a841666df19f91"],
         "architecture": "m:C", "v": 2})
    folder = tmp_path / "model" / "training_dynamics"
    folder.mkdir(parents=True)
    for epoch in range(2):
        (folder / f"dynamics_epoch_{epoch}.jsonl").write_text("x" * (epoch + 3))
        os.utime(folder / f"dynamics_epoch_{epoch}.jsonl", ns=(10**18, 10**18 + epoch))
    expected = {"source": "reference", "dir": str(folder.resolve()),
                "stamp": [["dynamics_epoch_0.jsonl", 3, 10**18], ["dynamics_epoch_1.jsonl", 4, 10**18 + 1]]}
    for typed in (folder, tmp_path / "model"):  # either layout: the folder of the epoch files
        params = pipeline._dynamics_params(AnalysisConfig(dynamics_dir=str(typed)))
        assert json.loads(_pinned(params)) == expected and list(params) == ["source", "dir", "stamp"]
    missing = pipeline._dynamics_params(AnalysisConfig(dynamics_dir=str(tmp_path / "nothing")))
    assert missing == {"source": "reference", "dir": str((tmp_path / "nothing").resolve()), "stamp": []}


@pytest.mark.parametrize("name", ["probe", "probe-cross-fit", "finetune", "checkpoints", "folder"])
def test_the_stage_keys_are_built_from_the_params_as_before(dataset, tmp_path, name):
    checkpoints = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path in checkpoints:
        path.write_bytes(path.name.encode())
    (tmp_path / "td").mkdir()
    (tmp_path / "td" / "dynamics_epoch_0.jsonl").write_text("{}")
    config = {"probe": AnalysisConfig(), "probe-cross-fit": AnalysisConfig(probe=ProbeConfig(scheme="cross-fit")),
              "finetune": AnalysisConfig(dynamics_from="finetune"),
              "checkpoints": AnalysisConfig(checkpoints=tuple(map(str, checkpoints))),
              "folder": AnalysisConfig(dynamics_dir=str(tmp_path / "td"))}[name].resolved(dataset)
    keys = pipeline._stage_keys(dataset, config)
    params = pipeline._dynamics_params(config)
    scheme = {"probe": "independent", "probe-cross-fit": "cross-fit"}.get(name)
    assert keys.dynamics_source == params and keys.scheme == scheme
    # fine-tuning never sees the embeddings; every other source's entry is keyed on them
    embedding = {} if name == "finetune" else {"embedding": keys.embedding}
    assert _pinned(keys.dynamics) == _pinned({**embedding, **params, **({"scheme": scheme} if scheme else {})})
    assert _pinned(keys.source_heldout) == _pinned({**params, "v": 1})
    assert keys.heldout == {"embedding": keys.embedding, "probe": asdict(config.probe), "v": 1,
                            **({"scheme": "cross-fit"} if scheme == "cross-fit" else {})}
    assert pipeline._config_params(config)["scores"] == params
    if name == "finetune":  # no embedding in it: the key the fine-tuning entries were written under
        assert params_key(keys.dynamics) == "48e798a481b0a465" and params_key(keys.source_heldout) == "b901718047b694c1"


# --- the manifest keys -------------------------------------------------------------------------------

def _scored(gold: np.ndarray, source: str = "probe") -> SimpleNamespace:
    logits = np.zeros((1, 3, len(gold), 3), dtype=np.float32)
    return SimpleNamespace(trained=TrainedDynamics(TrainingDynamics(logits=logits, gold=gold, source=source)))


def test_each_source_writes_its_manifest_keys_as_before(tmp_path):
    gold = np.repeat([0, 1, 2], 4)
    probe = ProbeConfig(hidden=8, folds=5)
    run = SimpleNamespace(config=AnalysisConfig(probe=probe), scheme="independent", checked=CheckedSource("probe"))
    assert DYNAMICS_REGISTRY["probe"].manifest(run, _scored(gold)) == {
        "probe": asdict(probe), "scheme": "independent", "folds": 4,  # the smallest class has 4
        "scheme_note": "probe seeds each trained on every example; out-of-fold probabilities from separate "
                       "stratified K-fold probes"}
    two_seeds = ProbeConfig(hidden=8, seeds=2)
    crossed = SimpleNamespace(config=AnalysisConfig(probe=two_seeds), scheme="cross-fit", checked=None)
    entry = DYNAMICS_REGISTRY["probe"].manifest(crossed, _scored(gold))
    assert list(entry) == ["probe", "scheme", "folds", "scheme_note"]
    assert entry["folds"] == 3 and entry["scheme_note"].startswith("seeds + 1 probes")  # one fold per probe

    tuned = FinetuneConfig(epochs=2, batch_size=16, device="cpu")
    run = SimpleNamespace(config=AnalysisConfig(dynamics_from="finetune", finetune=tuned), scheme=None, checked=None)
    assert DYNAMICS_REGISTRY["finetune"].manifest(run, _scored(gold, "finetune")) == {"finetune": {
        "epochs": 2, "learning_rate": None, "batch_size": 16, "max_tokens": 96, "seed": 0, "model": None,
        "heldout": "auto", "heldout_budget_s": 900.0}}

    config = AnalysisConfig(checkpoints=(str(tmp_path / "run" / "epoch0.pt"), str(tmp_path / "epoch1.pt")),
                            architecture="m:C")
    run = SimpleNamespace(config=config, scheme=None, checked=CheckedSource("checkpoints"))
    assert DYNAMICS_REGISTRY["checkpoints"].manifest(run, _scored(gold, "checkpoints")) == {
        "checkpoints": ["epoch0.pt", "epoch1.pt"], "architecture": "m:C"}  # file names, never a server path

    config = AnalysisConfig(dynamics_dir=str(tmp_path / "model"))
    checked = CheckedSource("folder", folder=tmp_path / "model" / "training_dynamics")
    run = SimpleNamespace(config=config, scheme=None, checked=checked)
    assert DYNAMICS_REGISTRY["folder"].manifest(run, _scored(gold, "reference")) == {
        "folder": str(tmp_path / "model" / "training_dynamics")}
    unchecked = SimpleNamespace(config=config, scheme=None, checked=None)
    assert DYNAMICS_REGISTRY["folder"].manifest(unchecked, _scored(gold, "reference")) == {
        "folder": str(tmp_path / "model")}


def test_a_folder_keeps_reference_as_the_source_of_its_dynamics(dataset, tmp_path):
    from analytics.dynamics import write_reference_dynamics

    logits = np.random.default_rng(1).normal(size=(1, 5, dataset.n_examples, 3)).astype(np.float32)
    write_reference_dynamics(TrainingDynamics(logits=logits, gold=dataset.label_codes, source="probe"),
                             dataset.table["id"].tolist(), tmp_path / "td")
    config = AnalysisConfig(dynamics_dir=str(tmp_path / "td")).resolved(dataset)
    run = pipeline._RunInputs(dataset=dataset, config=config, workspace=Workspace(tmp_path / "ws"),
                              executor=pipeline.LOCAL, keys=pipeline._stage_keys(dataset, config), checked=None)
    trained = pipeline._train_dynamics(run, np.zeros((dataset.n_examples, 2)), lambda fraction, message: None)
    assert trained.dynamics.source == "reference" and trained.dynamics.early_epoch == 1  # 5 epochs // 5
    np.testing.assert_allclose(trained.dynamics.logits, logits, atol=1e-6)


# --- checks: the same refusals, as SourceError ------------------------------------------------------

def test_a_fine_tuning_refusal_is_a_source_error_in_the_same_words(dataset):
    config = AnalysisConfig(dynamics_from="finetune", finetune=FinetuneConfig(model="/somewhere/model"))
    with pytest.raises(FinetuneError) as direct:
        check_finetune(dataset, config.finetune)
    with pytest.raises(pipeline.SourceError) as checked:
        pipeline.check_sources(dataset, config)
    assert str(checked.value) == str(direct.value) and "tables train an MLP from scratch" in str(direct.value)
    assert pipeline.check_sources(dataset, AnalysisConfig(dynamics_from="finetune")).source == "finetune"
    assert pipeline.check_sources(dataset, AnalysisConfig()).source == "probe"


def test_torch_is_imported_only_when_a_model_trains_or_loads(tmp_path):
    """The registry, the probe's, fine-tuning's and a folder's checks and keys need no torch."""
    (tmp_path / "td").mkdir()
    script = f"""
import sys
from analytics.analysis_config import AnalysisConfig, DYNAMICS_REGISTRY
from analytics.finetune_config import FinetuneConfig
for name, config in [("probe", AnalysisConfig()), ("finetune", AnalysisConfig(dynamics_from="finetune")),
                     ("folder", AnalysisConfig(dynamics_dir={str(tmp_path / "td")!r}))]:
    DYNAMICS_REGISTRY[name].params(config)
assert "torch" not in sys.modules, "torch was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- a new source is one entry --------------------------------------------------------------------

def _oracle_check(dataset, config, policy):
    return CheckedSource("oracle", notes=("the labels, as logits",))


def _oracle_train(run, vectors, report):
    """Logits that grow towards the gold label over 4 epochs, as a model learning every example."""
    gold = run.dataset.label_codes
    logits = np.zeros((1, 4, len(gold), len(run.dataset.classes)), dtype=np.float32)
    logits[0, :, np.arange(len(gold)), gold] = np.arange(4, dtype=np.float32)[None, :]
    report(1.0, "oracle ready")
    return TrainedDynamics(TrainingDynamics(logits=logits, gold=gold, source="oracle"), run.checked.notes)


def _oracle_params(config):
    return {"source": "oracle", "v": 1}


def _oracle_manifest(run, scored):
    return {"oracle_epochs": scored.trained.dynamics.n_epochs}


def test_a_new_source_is_one_registry_entry(dataset, tmp_path, monkeypatch):
    oracle = DynamicsSource(name="oracle", label="The gold labels", noun="oracle", check=_oracle_check,
                            train=_oracle_train, params=_oracle_params, manifest=_oracle_manifest,
                            last_epoch_errors="oracle (last epoch)")
    registry = MappingProxyType({**DYNAMICS_REGISTRY, "oracle": oracle})
    monkeypatch.setattr(analysis_config, "DYNAMICS_REGISTRY", registry)
    monkeypatch.setattr(pipeline, "DYNAMICS_REGISTRY", registry)
    config = AnalysisConfig(projection="pca", k=8, dynamics_from="oracle", issues=None)
    run = pipeline.run_analysis(dataset, config, workspace=Workspace(tmp_path / "ws"))
    dynamics = run.manifest["dynamics"]
    assert dynamics["source"] == "oracle" and dynamics["oracle_epochs"] == 4 and dynamics["seeds"] == 1
    assert dynamics["notes"] == ["the labels, as logits"] and dynamics["heldout_from"] == "probe"
    assert run.manifest["config"]["scores"] == {"source": "oracle", "v": 1}
    assert run.manifest["clusters"]["errors"] == "oracle (last epoch)" and run.examples["correct"].all()
    # epoch 0's logits are all 0 (argmax: class a), the later ones favour the gold label
    expected = np.where(dataset.label_codes == 0, 1.0, 0.75)
    np.testing.assert_allclose(run.examples["correctness"], expected)
    assert run.path == pipeline.run_dir_for(dataset, config, Workspace(tmp_path / "ws"))
