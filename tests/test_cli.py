"""The cartographer command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
import sys

import numpy as np
import pandas as pd
import pytest

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


def test_the_command_exits_quickly_with_its_output_flushed_and_its_exit_code(tmp_path):
    """`cartographer` leaves without tearing the interpreter down (analytics.cli.command): the
    run is written, the last line is printed even into a pipe, and the exit codes stay."""
    from analytics.pipeline import load_run

    cartographer = Path(sys.executable).with_name("cartographer")
    out = tmp_path / "run"
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as in a pipe
    done = subprocess.run([str(cartographer), "analyze", str(sample_by_key("breast-cancer").path), "--label",
                           "diagnosis", "--projection", "pca", "--no-scores", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=buffered)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"wrote {out}/examples.parquet")
    assert len(load_run(out).examples) == 569
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\na,x\nb,\n")
    failed = subprocess.run([str(cartographer), "validate", str(bad)], capture_output=True, text=True, timeout=120,
                            env=buffered)
    assert failed.returncode == 2 and "no label" in failed.stderr
    helped = subprocess.run([str(cartographer), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "analyze" in helped.stdout


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


# --- the operator's rules on the command line ----------------------------------------------------

def small_csv(path):
    pd.DataFrame({"id": [str(i) for i in range(8)], "label": ["a", "b"] * 4,
                  "x": np.arange(8.0), "y": np.arange(8.0) % 3}).to_csv(path, index=False)
    return path


def safetensors_file(path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    return path


def test_analyze_refuses_an_architecture_that_runs_a_command(tmp_path, capsys):
    """The exploit of issue 12: a function named as the architecture ran before any check."""
    marker = tmp_path / "MARKER"
    code = main(["analyze", str(small_csv(tmp_path / "d.csv")), "--projection", "pca", "--no-scores",
                 "--checkpoint", str(safetensors_file(tmp_path / "x.safetensors")),
                 "--architecture", f'subprocess:run{{"args": ["touch", "{marker}"]}}', "--out", str(tmp_path / "run")])
    assert code == 2
    assert "not a subclass of torch.nn.Module" in capsys.readouterr().err
    assert not marker.exists()


def test_analyze_imports_an_architecture_module_only_with_trust(tmp_path, monkeypatch, capsys):
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "cli_side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport torch\n\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.w = torch.nn.Parameter(torch.zeros(2))\n\n"
        "    def forward(self, x):\n        return x[:, :2] * self.w\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_side_effect", None)
    args = ["analyze", str(small_csv(tmp_path / "d.csv")), "--projection", "pca", "--no-scores", "--clusters", "none",
            "--checkpoint", str(safetensors_file(tmp_path / "x.safetensors")), "--architecture", "cli_side_effect:Net"]
    assert main(args + ["--out", str(tmp_path / "run")]) == 2
    assert "not loaded, and importing it would run its code" in capsys.readouterr().err
    assert not marker.exists()
    try:
        assert main(args + ["--trust-checkpoint", "--out", str(tmp_path / "run2")]) == 0
        assert marker.exists()
    finally:
        sys.modules.pop("cli_side_effect", None)


def test_the_data_roots_apply_to_every_path_on_the_command_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    root.mkdir()
    inside = small_csv(root / "d.csv")
    outside = small_csv(tmp_path / "secrets.csv")
    np.save(tmp_path / "vectors.npy", np.zeros((8, 2), dtype=np.float32))
    (tmp_path / "dynamics").mkdir()
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(root))
    out = ["--out", str(root / "run")]
    for argv in (["validate", str(outside)], ["validate", "/etc"],
                 ["analyze", str(outside), *out],
                 ["analyze", str(inside), "--embeddings", str(tmp_path / "vectors.npy"), *out],
                 ["analyze", str(inside), "--checkpoint", str(tmp_path / "vectors.npy"), *out],
                 ["analyze", str(inside), "--dynamics", str(tmp_path / "dynamics"), *out]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "outside the data folders" in err and "Traceback" not in err, argv
        assert "passwd" not in err


def test_validate_refuses_a_device_and_a_folder_over_the_image_cap(tmp_path, capsys):
    assert main(["validate", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    digits = str(sample_by_key("digits").path)
    assert main(["validate", digits, "--max-images", "10"]) == 2
    assert "holds more than 10 images" in capsys.readouterr().err


# --- sources of training dynamics ---------------------------------------------------------------

def dynamics_csv(tmp_path):
    """A small table (90 rows, three classes) and its dataset."""
    from analytics.datasets import load_dataset

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    frame = pd.DataFrame(rng.normal(size=(90, 4)) + labels[:, None] * 2.0, columns=list("abcd"))
    frame["label"] = np.array(["x", "y", "z"])[labels]
    frame["id"] = [f"r{i}" for i in range(90)]
    frame.to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv", load_dataset(tmp_path / "t.csv")


def test_analyze_accepts_both_dynamics_folder_layouts(tmp_path):
    from analytics.pipeline import load_run
    from tests.test_pipeline import reference_folder

    path, dataset = dynamics_csv(tmp_path)
    reference_folder(dataset, tmp_path / "model" / "training_dynamics")
    runs = {}
    for layout, folder in (("model output folder", tmp_path / "model"),
                           ("epoch files", tmp_path / "model" / "training_dynamics")):
        out = tmp_path / layout.replace(" ", "-")
        assert main(["analyze", str(path), "--projection", "pca", "--clusters", "none", "--probe-epochs", "2",
                     "--dynamics", str(folder), "--out", str(out)]) == 0, layout
        runs[layout] = load_run(out)
        assert runs[layout].manifest["dynamics"]["source"] == "reference"
    np.testing.assert_array_equal(runs["epoch files"].examples["confidence"],
                                  runs["model output folder"].examples["confidence"])


@pytest.mark.parametrize("how", ["missing", "gap", "unknown guids", "class beyond the labels"])
def test_analyze_with_a_wrong_dynamics_folder_fails_before_any_stage(tmp_path, capsys, monkeypatch, how):
    import time

    from tests.test_pipeline import BROKEN, break_folder, reference_folder

    path, dataset = dynamics_csv(tmp_path)
    folder = break_folder(reference_folder(dataset, tmp_path / "model" / "training_dynamics"), how)
    typed = folder if how == "missing" else tmp_path / "model"
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(tmp_path / "ws"))
    started = time.perf_counter()
    code = main(["analyze", str(path), "--projection", "pca", "--dynamics", str(typed), "--out", str(tmp_path / "run")])
    elapsed = time.perf_counter() - started
    captured = capsys.readouterr()
    assert code == 2 and elapsed < 5, (code, elapsed)
    assert BROKEN[how] in captured.err and "Traceback" not in captured.err
    assert "[embeddings]" not in captured.err  # no stage started
    assert not (tmp_path / "ws" / dataset.fingerprint).exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--dynamics-from", "probe", "--dynamics", "{td}"], "--dynamics-from probe conflicts with --dynamics"),
    (["--dynamics-from", "finetune", "--checkpoint", "{a}", "--checkpoint", "{b}"],
     "--dynamics-from finetune conflicts with several --checkpoint files"),
    (["--dynamics-from", "folder"], "--dynamics-from folder needs --dynamics DIR"),
    (["--dynamics-from", "checkpoints", "--checkpoint", "{a}"], "needs --checkpoint once per epoch"),
    (["--dynamics", "{td}", "--checkpoint", "{a}", "--checkpoint", "{b}"], "either --dynamics or several"),
    (["--finetune-epochs", "3"], "--finetune-epochs apply only to --dynamics-from finetune"),
    (["--dynamics-from", "finetune", "--no-scores"], "--no-scores computes no training dynamics"),
])
def test_conflicting_dynamics_flags_are_refused(tmp_path, capsys, flags, message):
    path, _ = dynamics_csv(tmp_path)
    names = {"td": str(tmp_path), "a": str(tmp_path / "a.pt"), "b": str(tmp_path / "b.pt")}
    code = main(["analyze", str(path), "--out", str(tmp_path / "run"), *[f.format(**names) for f in flags]])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_analyze_with_fine_tuning_shows_its_steps(tmp_path, capsys):
    from analytics.pipeline import load_run

    path, _ = dynamics_csv(tmp_path)
    assert main(["analyze", str(path), "--projection", "pca", "--clusters", "none", "--dynamics-from", "finetune",
                 "--finetune-epochs", "3", "--finetune-batch-size", "16", "--finetune-lr", "0.003",
                 "--finetune-seed", "2", "--finetune-heldout", "probe", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "Fine-tuning epoch 1/3 · step" in err and "s per epoch" in err
    dynamics = load_run(tmp_path / "run").manifest["dynamics"]
    assert dynamics["source"] == "finetune" and dynamics["epochs"] == 3
    assert dynamics["finetune"] == {"epochs": 3, "learning_rate": 0.003, "batch_size": 16, "max_tokens": 96,
                                    "seed": 2, "model": None, "heldout": "probe", "heldout_budget_s": 900.0}
    assert dynamics["heldout"].startswith("probe out-of-fold")


def test_a_wrong_fine_tuning_model_fails_before_any_stage(tmp_path, capsys):
    path, _ = dynamics_csv(tmp_path)
    text = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["a b c", "d e f", "g h i", "j k l"] * 5, "label": ["p", "q"] * 10}).to_csv(text, index=False)
    (tmp_path / "not-a-model").mkdir()
    code = main(["analyze", str(text), "--dynamics-from", "finetune", "--finetune-model", str(tmp_path / "not-a-model"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "not-a-model: not a Hugging Face model folder" in err and "[embeddings]" not in err


# --- data issues -----------------------------------------------------------------------------------

def leaky_csv(path):
    """60 rows in two clusters, train and test; rows 0-2 copied into test under other ids."""
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b"], 30)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "label": labels,
                          "f0": rng.normal(size=60) + (labels == "b") * 4, "f1": rng.normal(size=60),
                          "split": ["train"] * 45 + ["test"] * 15})
    copies = frame.iloc[[0, 1, 2]].assign(id=["c0", "c1", "c2"], split="test")
    pd.concat([frame, copies], ignore_index=True).to_csv(path, index=False)
    return path


FAST = ["--projection", "pca", "--no-scores", "--clusters", "none", "--k", "5"]


def test_issues_prints_the_table_and_exports_the_leak_free_split(tmp_path, capsys):
    import json

    data = leaky_csv(tmp_path / "leaky.csv")
    assert main(["analyze", str(data), *FAST, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["issues", str(tmp_path / "run"), "--leak-free-split", str(tmp_path / "clean.csv")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["issue", "type", "affected"] and "meaning" in lines[0]
    duplicates = next(line for line in lines if line.startswith("near_duplicate "))
    leaks = next(line for line in lines if line.startswith("split_leak "))
    assert "6 examples" in duplicates and "6 examples" in leaks and " high " in leaks
    assert "leaks test ↔ train: 6 examples in 3 duplicate sets" in out
    assert "leak-free split: 3 examples moved" in out
    exported = pd.read_csv(tmp_path / "clean.csv")
    manifest = json.loads((tmp_path / "clean.csv.manifest.json").read_text())
    assert manifest["leak_free_split"] == {"moved": 3, "moved_in_dataset": 3}
    assert manifest["issue_counts"]["split_leak"] == 6 and manifest["issue_counts"]["near_duplicate"] == 6
    assert (exported["split"] != exported["original_split"]).sum() == 3
    assert exported.loc[exported["id"].isin(["c0", "c1", "c2"]), "split"].eq("train").all()


def test_the_checks_can_be_skipped(tmp_path, capsys):
    import json

    data = leaky_csv(tmp_path / "leaky.csv")
    assert main(["analyze", str(data), *FAST, "--no-issues", "--out", str(tmp_path / "none")]) == 0
    assert not (tmp_path / "none" / "issues.json").exists()
    capsys.readouterr()
    assert main(["issues", str(tmp_path / "none")]) == 2
    assert "no issues.json" in capsys.readouterr().err
    assert main(["analyze", str(data), *FAST, "--skip-check", "non_iid", "--skip-check", "images",
                 "--out", str(tmp_path / "some")]) == 0
    summary = json.loads((tmp_path / "some" / "issues.json").read_text())
    assert summary["options"]["non_iid"] is False and summary["options"]["duplicates"] is True
    assert "non_iid" not in summary["issues"] and summary["issues"]["split_leak"]["count"] == 6
    with pytest.raises(SystemExit):
        main(["analyze", str(data), *FAST, "--skip-check", "bogus", "--out", str(tmp_path / "x")])
