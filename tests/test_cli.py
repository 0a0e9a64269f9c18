"""The cartographer command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

from analytics.cli import main
from analytics.samples import sample_by_key


def test_validate_a_sample(capsys):
    assert main(["validate", str(sample_by_key("digits").path)]) == 0
    out = capsys.readouterr().out
    assert "image dataset, 1797 examples, 10 classes" in out


def test_validate_with_an_explicit_label(capsys):
    assert main(["validate", str(sample_by_key("breast-cancer").path), "--label", "diagnosis"]) == 0
    assert "malignant" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_message(tmp_path, capsys):
    path = tmp_path / "m.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f"], "label": ["x", None, "y"]}).to_csv(path, index=False)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "m.csv: column 'label' has 1 rows with no label (rows 2)" in err
    assert "--drop-missing-labels" in err
    assert main(["validate", str(path), "--drop-missing-labels"]) == 0


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "analytics.cli", "samples"], capture_output=True, text=True)
    assert result.returncode == 0 and "debian-packages" in result.stdout
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    assert (bin_dir / "cartographer").exists()


def test_analyze_writes_the_artefacts_the_app_reads(tmp_path, capsys):
    from analytics.pipeline import load_run

    out = tmp_path / "run"
    code = main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--out", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    run = load_run(out)
    assert len(run.examples) == 569 and {"x", "y"} <= set(run.examples.columns)
    assert run.manifest["dataset"]["roles"]["label"] == "diagnosis"


def test_analyze_with_an_embeddings_file(tmp_path):
    import numpy as np

    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(569, 8)).astype("float32"))
    code = main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--embeddings", str(tmp_path / "e.npy"), "--projection", "pca", "--out", str(tmp_path / "run")])
    assert code == 0


def test_analyze_refuses_a_hostile_checkpoint(tmp_path, capsys):
    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(Payload(), tmp_path / "evil.pt")
    code = main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--checkpoint", str(tmp_path / "evil.pt"), "--architecture", "torch.nn:Linear",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "evil.pt" in err and "arbitrary code" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_export_dynamics_in_the_reference_format(tmp_path):
    from analytics.dynamics import read_reference_dynamics
    from analytics.pipeline import load_run

    out = tmp_path / "run"
    assert main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--probe-epochs", "4", "--probe-seeds", "2", "--out", str(out)]) == 0
    assert main(["export-dynamics", str(out), "--out", str(tmp_path / "td"), "--seed", "1"]) == 0
    run = load_run(out)
    dynamics, notes = read_reference_dynamics(tmp_path / "td", run.examples["id"].tolist())
    assert dynamics.logits.shape == (1, 4, 569, 2) and notes == []
    assert main(["export-dynamics", str(out), "--out", str(tmp_path / "x"), "--seed", "5"]) == 2


def test_analyze_with_imported_dynamics(tmp_path):
    from analytics.pipeline import load_run

    first = tmp_path / "first"
    assert main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--probe-epochs", "5", "--probe-seeds", "1", "--out", str(first)]) == 0
    assert main(["export-dynamics", str(first), "--out", str(tmp_path / "td")]) == 0
    second = tmp_path / "second"
    assert main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--dynamics", str(tmp_path / "td"), "--out", str(second)]) == 0
    a, b = load_run(first), load_run(second)
    assert b.manifest["dynamics"]["source"] == "reference"
    import numpy as np

    # the same logits (stored as float16 in the run) give the same data map
    np.testing.assert_allclose(a.examples["confidence"], b.examples["confidence"], atol=2e-3)


def test_analyze_with_one_checkpoint_per_epoch(tmp_path):
    """Dynamics from checkpoints: each epoch's TorchScript model gives that epoch's logits."""
    import numpy as np
    import torch

    from analytics.datasets import ColumnRoles, load_dataset
    from analytics.embeddings import tabular_features
    from analytics.pipeline import load_run
    from tests.conftest import epoch_checkpoints

    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=ColumnRoles(label="diagnosis"))
    features = torch.from_numpy(tabular_features(dataset))
    checkpoints, model = epoch_checkpoints(dataset, tmp_path, epochs=3, learning_rate=0.05)
    paths = [argument for path in checkpoints for argument in ("--checkpoint", str(path))]
    out = tmp_path / "run"
    assert main(["analyze", str(sample.path), "--label", "diagnosis", "--projection", "pca",
                 *paths, "--out", str(out)]) == 0
    run = load_run(out)
    assert run.manifest["dynamics"]["source"] == "checkpoints"
    assert run.manifest["dynamics"]["epochs"] == 3 and run.manifest["embedding"]["source"] == "checkpoint"
    logits = np.load(out / "dynamics.npy").astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(logits[0, 2], model(features).numpy(), atol=2e-2)
    # errors (clusters, slices) are the model's own: its last checkpoint's predictions
    with torch.no_grad():
        predicted = model(features).numpy().argmax(axis=1)
    assert run.manifest["clusters"]["errors"] == "model (last checkpoint)"
    assert (run.examples["correct"].to_numpy() == (predicted == dataset.label_codes)).mean() > 0.99


def test_analyze_with_hdbscan_clusters_and_a_set_k(tmp_path, capsys):
    import pandas as pd

    from analytics.pipeline import load_run

    path = str(sample_by_key("breast-cancer").path)
    assert main(["analyze", path, "--label", "diagnosis", "--projection", "pca", "--clusters", "hdbscan",
                 "--min-slice-support", "15", "--out", str(tmp_path / "h")]) == 0
    run = load_run(tmp_path / "h")
    assert run.manifest["clusters"]["method"] == "hdbscan"
    slices = pd.read_parquet(tmp_path / "h" / "slices.parquet")
    assert (slices["support"] >= 15).all()
    assert main(["analyze", path, "--label", "diagnosis", "--projection", "pca", "--n-clusters", "4",
                 "--no-scores", "--out", str(tmp_path / "k")]) == 0
    run = load_run(tmp_path / "k")
    assert run.examples["cluster"].nunique() == 4
    assert not (tmp_path / "k" / "slices.parquet").exists()  # no predictions, nothing to judge
    assert main(["analyze", path, "--label", "diagnosis", "--n-clusters", "0", "--out", str(tmp_path / "z")]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_the_large_data_methods_can_be_chosen_from_the_command_line(tmp_path, monkeypatch):
    """--probe-scheme and --umap-init reach the analysis and its manifest."""
    import json

    from analytics import cli

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    frame = pd.DataFrame(rng.normal(size=(120, 4)) + labels[:, None] * 3, columns=list("abcd"))
    frame["label"] = np.array(["x", "y"])[labels]
    frame.to_csv(tmp_path / "t.csv", index=False)
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(tmp_path / "ws"))
    code = cli.main(["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), "--probe-epochs", "3",
                     "--probe-scheme", "cross-fit", "--umap-init", "pca", "--clusters", "none"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert code == 0 and manifest["dynamics"]["scheme"] == "cross-fit" and manifest["dynamics"]["folds"] == 4
    assert manifest["projection"]["init"] == "pca"
